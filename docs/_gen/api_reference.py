"""Generate the API reference at build time: one page per public module, from the docstrings.

The names come from ``paramscope.__all__`` (the one export list), and every directive uses the
public name (``::: paramscope.count``), never a private module path, so the implementation
files can move without touching the docs. Public submodules (``paramscope.formulas``,
``paramscope.zoo``, …) each get their own page.
"""

from __future__ import annotations

import types

import mkdocs_gen_files

import paramscope

# Sections of the `paramscope` page, in the order of the guides. A public name missing here is
# still documented, under "More"; a name listed here that is no longer public is dropped.
SECTIONS: dict[str, list[str]] = {
    "See: counts, trees, formulas, memory": [
        "count",
        "Count",
        "Node",
        "inspect",
        "Inspection",
        "group",
        "Group",
        "summary",
        "Summary",
        "ModuleNode",
        "formula_for",
        "Formula",
        "estimate_memory",
        "MemoryEstimate",
        "register_packed",
        "resolve_target",
    ],
    "Store: ParamDict, formats, manifests": [
        "ParamDict",
        "EntryMeta",
        "save",
        "load",
        "read_manifest",
        "Manifest",
        "Entry",
        "Location",
        "detect_format",
        "Format",
        "DType",
        "Role",
        "RoleSource",
        "infer_role",
        "parse_size",
    ],
    "Names and patterns": ["validate_name", "compile_pattern", "apply_renames", "did_you_mean"],
    "Change: init, ties, freezing, loading, binding, building": [
        "init",
        "InitReport",
        "init_schemes",
        "register_scheme",
        "tie",
        "untie",
        "find_ties",
        "freeze",
        "unfreeze",
        "trainable_only",
        "eval_frozen_bn",
        "FreezeCounts",
        "load_into",
        "match",
        "LoadReport",
        "bind",
        "build",
        "build_with_report",
        "BuildResult",
        "infer_model",
    ],
    "Shrink: pruning and quantisation": [
        "prune",
        "SparsityReport",
        "quantize",
        "QuantReport",
        "dequantize",
    ],
    "Checkpoints: diff, convert, verify": [
        "diff",
        "DiffReport",
        "convert",
        "ConvertReport",
        "verify",
        "VerifyReport",
    ],
    "Show: report and diagrams": ["report", "diagram"],
}


def _public() -> tuple[list[str], list[str]]:
    """Public non-module names and public submodule names, from ``__all__``."""
    names, modules = [], []
    for name in paramscope.__all__:
        if name.startswith("__"):
            continue
        if isinstance(getattr(paramscope, name), types.ModuleType):
            modules.append(name)
        else:
            names.append(name)
    return names, modules


def main() -> None:
    """Write api/paramscope.md and api/NAME.md for each public submodule."""
    names, modules = _public()
    errors = sorted(n for n in names if n.endswith("Error"))
    placed = {n for members in SECTIONS.values() for n in members} | set(errors)
    sections = {title: [n for n in members if n in names] for title, members in SECTIONS.items()}
    sections["Errors"] = errors
    more = [n for n in names if n not in placed]
    if more:
        sections["More"] = more
    with mkdocs_gen_files.open("api/paramscope.md", "w") as out:
        out.write("# `paramscope`\n\n")
        out.write(
            "The package's one public contract: every name in `paramscope.__all__`, generated "
            "from the docstrings at build time. Import what you need from `paramscope` "
            "directly (`from paramscope import ParamDict`); the modules that implement them "
            "are private and may move. Public submodules have their own pages: "
            + ", ".join(f"[`paramscope.{m}`]({m}.md)" for m in modules)
            + ".\n\n"
        )
        out.write(
            "::: paramscope\n    options:\n      members: false\n      show_root_heading: false\n\n"
        )
        for title, members in sections.items():
            if not members:
                continue
            out.write(f"## {title}\n\n")
            for name in members:
                out.write(f"::: paramscope.{name}\n\n")
    for module in modules:
        with mkdocs_gen_files.open(f"api/{module}.md", "w") as out:
            out.write(f"# `paramscope.{module}`\n\n")
            out.write(
                f"::: paramscope.{module}\n    options:\n      show_root_heading: false\n"
                "      heading_level: 2\n      show_submodules: false\n\n"
            )


main()
