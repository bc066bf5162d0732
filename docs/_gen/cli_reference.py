"""Generate cli.md from the typer app at build time: every command, argument and option.

Nothing here is written by hand: the page is the click command tree typer builds from
``paramscope.cli`` (its ``app``), so a new command or option appears on the next build.
"""

from __future__ import annotations

import html

import click
import mkdocs_gen_files
import typer.main
import typer.models
import typer.utils

try:  # the typer app: public if the CLI package ever exports it, else where it lives today
    from paramscope.cli import app  # type: ignore[attr-defined]
except ImportError:
    from paramscope.cli._app import app


def _cell(text: str) -> str:
    """Text for one Markdown table cell: escaped, on one line, pipes kept literal."""
    return html.escape(" ".join(text.split())).replace("|", "&#124;")


def _code(text: str) -> str:
    return f"<code>{html.escape(text)}</code>"


def _default(param: click.Parameter, ctx: click.Context) -> str:
    if getattr(param, "is_flag", False) and not getattr(param, "secondary_opts", None):
        return ""
    default = param.get_default(ctx, call=False)
    if default is None or default == () or default == []:
        return ""
    if callable(default):
        return ""
    return _code(str(default.value if hasattr(default, "value") else default))


def _type(param: click.Parameter, ctx: click.Context) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    text = param.type.name
    if isinstance(param.type, click.Choice):
        text = " | ".join(map(str, param.type.choices))
    elif hasattr(param.type, "min") or hasattr(param.type, "max"):  # IntRange, FloatRange
        lo, hi = getattr(param.type, "min", None), getattr(param.type, "max", None)
        bound = (f"≥ {lo}" if lo is not None else "") + (
            f"{', ' if lo is not None else ''}≤ {hi}" if hi is not None else ""
        )
        text = f"{param.type.name} ({bound})" if bound else param.type.name
    if getattr(param, "multiple", False):
        text += ", repeatable"
    return html.escape(text.lower())


def _declared_help() -> dict[str, dict[str, str]]:
    """Help texts as declared in the typer app, by command and parameter name.

    click 8.5's ``Parameter.__init__`` sets ``help`` itself, after typer's ``TyperArgument``
    has set it, so the click objects typer 0.24 builds lose every argument's help (``--help``
    prints none). The declarations still have it.
    """
    out: dict[str, dict[str, str]] = {}
    infos = [("", info) for info in app.registered_commands]
    for group in app.registered_groups:  # command groups (``lora``): "lora merge" …
        sub = group.typer_instance
        if sub is not None:
            infos += [(f"{group.name} ", info) for info in sub.registered_commands]
    for prefix, info in infos:
        if info.callback is None:
            continue
        name = prefix + (info.name or typer.main.get_command_name(info.callback.__name__))
        params = typer.utils.get_params_from_function(info.callback)
        out[name] = {
            key: meta.default.help
            for key, meta in params.items()
            if isinstance(meta.default, typer.models.ParameterInfo) and meta.default.help
        }
    return out


HELP = _declared_help()


def _help(name: str, param: click.Parameter) -> str:
    return getattr(param, "help", None) or HELP.get(name, {}).get(param.name or "", "")


def _command(out: object, name: str, cmd: click.Command, parent: click.Context) -> None:
    ctx = click.Context(cmd, info_name=name.split()[-1], parent=parent)
    write = out.write  # type: ignore[attr-defined]
    write(f"## `paramscope {name}` {{#{name.replace(' ', '-')}}}\n\n")
    write(f"```text\n{ctx.command_path} {' '.join(cmd.collect_usage_pieces(ctx))}\n```\n\n")
    write(f"{(cmd.help or '').strip()}\n\n")
    args = [p for p in cmd.params if isinstance(p, click.Argument)]
    opts = [p for p in cmd.params if isinstance(p, click.Option)]
    if args:
        write("| Argument | Type | Required | Default | Help |\n| --- | --- | --- | --- | --- |\n")
        for p in args:
            metavar = p.make_metavar(ctx)
            write(
                f"| {_code(metavar)} | {_type(p, ctx)} | {'yes' if p.required else 'no'} "
                f"| {_default(p, ctx)} | {_cell(_help(name, p))} |\n"
            )
        write("\n")
    write("| Option | Type | Default | Help |\n| --- | --- | --- | --- |\n")
    for p in opts:
        flags = ", ".join(_code(o) for o in [*p.opts, *p.secondary_opts])
        write(f"| {flags} | {_type(p, ctx)} | {_default(p, ctx)} | {_cell(_help(name, p))} |\n")
    write("| <code>--help</code> | flag | | Show the help and exit. |\n\n")


def main() -> None:
    """Write cli.md."""
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    root = click.Context(group, info_name="paramscope")
    commands: list[tuple[str, click.Command, click.Context]] = []
    for name in group.list_commands(root):
        cmd = group.get_command(root, name)
        assert cmd is not None
        if isinstance(cmd, click.Group):  # a command group: each of its commands, by full name
            sub = click.Context(cmd, info_name=name, parent=root)
            for s in cmd.list_commands(sub):
                leaf = cmd.get_command(sub, s)
                assert leaf is not None
                commands.append((f"{name} {s}", leaf, sub))
        else:
            commands.append((name, cmd, root))
    with mkdocs_gen_files.open("cli.md", "w") as out:
        out.write("# CLI reference\n\n")
        out.write(
            "Generated at build time from the typer app: every command, argument and option "
            "with its help text, as `paramscope COMMAND --help` prints them.\n\n"
            "Conventions of every command: a TARGET is a checkpoint (file or folder), "
            "`zoo:NAME`, `package.module:callable` (with `--arg key=value`, built on the meta "
            "device) or a Hugging Face `config.json`; data goes to stdout, progress and "
            "warnings to stderr, an error is one line on stderr (`PARAMSCOPE_DEBUG=1` for the "
            "traceback); `--json` prints the same result as JSON; off a terminal, tables have "
            "no width limit. The exit codes are in the help below. `python -m paramscope` is "
            "the same program.\n\n"
        )
        out.write(f"{(group.help or '').strip()}\n\n")
        usage = " ".join(group.collect_usage_pieces(root))
        out.write(f"```text\n{root.command_path} {usage}\n```\n\n")
        out.write("| Command | What it does |\n| --- | --- |\n")
        for name, cmd, _ in commands:
            summary = cmd.get_short_help_str(limit=200)
            out.write(f"| [`{name}`](#{name.replace(' ', '-')}) | {_cell(summary)} |\n")
        out.write("\n")
        for name, cmd, parent in commands:
            _command(out, name, cmd, parent)


main()
