"""The ``paramscope`` CLI entry point: maps errors to one stderr line and an exit code."""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["BAD_INPUT", "INTERNAL", "OK", "VERDICT", "main"]


#: Exit codes, one meaning each.
OK, VERDICT, BAD_INPUT, INTERNAL = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code.

    Exit codes, one meaning each: ``0`` success; ``1`` a negative verdict (``match``: the
    checkpoint would not load cleanly, ``diff``: the sources differ, ``verify``: the checkpoint
    is not sound); ``2`` bad input (a :class:`ParamscopeError`, a usage error, an unreadable or
    missing file); ``3`` an internal error (a bug: set ``PARAMSCOPE_DEBUG=1`` for the
    traceback). Errors are one line on stderr.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code (the console script and ``python -m paramscope`` exit with it).

    Example:
        >>> main(["count", "no/such/file.safetensors"])  # one line on stderr, then the code
        2
    """
    from .._errors import ParamscopeError

    debug = os.environ.get("PARAMSCOPE_DEBUG") == "1"
    argv = list(sys.argv[1:] if argv is None else argv)
    allow = "--allow-download" in argv or os.environ.get("PARAMSCOPE_ALLOW_DOWNLOAD") == "1"
    if allow:  # any command: a server without range requests may send whole files
        argv = [a for a in argv if a != "--allow-download"]
    remote = sys.modules.get("paramscope.io._remote")
    if allow or remote is not None:  # (per command: a process may run several)
        from ..io._remote import allow_download

        allow_download(allow)
    from . import _output

    _reset_transfers()
    _output.COMMAND[0] = True
    try:
        quick = _plain_count(argv)
        if quick is not None:
            try:
                _count(*quick)
            except EOFError as exc:  # as the typer group says it: a file that ended early
                from .._errors import FormatError

                raise FormatError(
                    quick[0], f"the data ends before the format says it should ({exc or 'EOF'})"
                ) from None
            return OK
        from ._app import app

        app(args=argv, prog_name="paramscope")  # click exits itself; usage errors with 2
    except SystemExit as exc:
        sys.stdout.flush()
        code = exc.code
        return code if isinstance(code, int) else (OK if code is None else BAD_INPUT)
    except ParamscopeError as exc:
        if debug:
            raise
        return _fail(str(exc), BAD_INPUT)
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _fail(f"{where}{exc.strerror or exc}", BAD_INPUT)
    except Exception as exc:
        if debug:
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} (set PARAMSCOPE_DEBUG=1 for a traceback)",
            INTERNAL,
        )
    finally:
        _output.COMMAND[0] = False
    return OK


def _reset_transfers() -> None:
    """Zero the remote transfer counters (a process may run several commands: tests)."""
    remote = sys.modules.get("paramscope.io._remote")
    if remote is not None:
        remote.TRANSFERS.reset()
        remote._USED.clear()
    atomic = sys.modules.get("paramscope._atomic")
    if atomic is not None:
        atomic.UPLOADED[0] = 0


def _plain_count(argv: list[str]) -> tuple[str, bool] | None:
    """``(TARGET, json)`` when ``argv`` is exactly ``count TARGET`` or ``count TARGET --json``
    (either order), else ``None``.

    The most frequent command, run by scripts over many checkpoints, skips building the typer
    app (importing typer and click is a quarter of its start-up) and runs the very code the
    typer ``count`` command runs (:func:`_count`). Anything else (another option, ``--help``,
    a TARGET that starts with ``-``) goes through typer as always.

    Example:
        >>> _plain_count(["count", "m.safetensors", "--json"]), _plain_count(["count", "--help"])
        (('m.safetensors', True), None)
    """
    if len(argv) not in (2, 3) or argv[0] != "count":
        return None
    rest = argv[1:]
    json = "--json" in rest
    if json:
        rest = [a for a in rest if a != "--json"]
    if len(rest) != 1 or rest[0].startswith("-"):
        return None
    return rest[0], json


def _count(target: str, json: bool, args: list[str] | None = None, **options: Any) -> None:
    """``paramscope count``: count TARGET and write the result (the typer command calls this).

    Args:
        target: the TARGET as typed.
        json: write JSON.
        args: ``--arg key=value`` strings for a callable TARGET.
        **options: ``nonzero``, ``values``, ``lora`` for :func:`paramscope.count`.
    """
    from .._targets import parse_args, resolve_source
    from ..counting import count
    from . import _output

    result = count(resolve_source(target, parse_args(args or [])), **options)  # type: ignore[arg-type]
    if result.source is None:  # a model in memory: named by the TARGET as typed
        result.source = target
    _output.emit(result, json=json)


def _fail(message: str, code: int) -> int:
    sys.stdout.flush()
    from .._text import printable

    sys.stderr.write(f"paramscope: error: {printable(message)}\n")  # one line, always
    return code
