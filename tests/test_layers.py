"""The package's floors: every import points down (DESIGN.md, "every arrow points down").

Every ``import`` / ``from … import`` in ``src/paramscope`` is read with :mod:`ast` — at module
level, inside functions and under ``TYPE_CHECKING`` alike, relative ones resolved — and each
module is put on a floor by its path. An import may go to its own floor or to a floor its
row of :data:`ALLOWED` lists; anything else fails, naming the file, the line and the import.

The floors, bottom up::

    core        top-level _*.py helpers (names, dtypes, errors, manifest, paramdict, the
                module tree, TARGET classification, progress …)
    io          formats, the byte interface, the streaming reader and writer, codecs registry
    lifecycle   init, ties, freeze, load_into, bind
    compress    prune, quantise, their streaming file versions
    building    build(spec), infer_model, the zoo — builds run init / freeze / load_into
    targets     _targets.py: a TARGET built into a model or a manifest (zoo:, callable,
                config.json), and the public read_manifest that takes any TARGET
    counting    count / inspect / summary / memory of any TARGET
    operations  _convert, _diff, _verify, _example, _loading (the public load)
    merging     merge, LoRA merge / extract, factorize, students: new parameters from others
    reporting   HTML report, diagrams
    cli         the typer app
    facade      paramscope/__init__.py (the export list) and __main__.py

Rooms of one floor band stay apart: counting and lifecycle never import each other (what
both need, a module's owners and ties by identity, is core's ``_modtree``), io knows no
compression (``dequantize`` goes through the codec registry ``io/_codecs.py``).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import paramscope

SRC = Path(paramscope.__file__).parent
PKG = "paramscope"

#: Top-level ``_*.py`` modules that are not core, and their floor.
UPPER: dict[str, str] = {
    "_targets": "targets",
    "_convert": "operations",
    "_diff": "operations",
    "_verify": "operations",
    "_example": "operations",
    "_loading": "operations",
}

#: Subpackages, each its own floor.
ROOMS = (
    "io",
    "lifecycle",
    "compress",
    "building",
    "counting",
    "merging",
    "reporting",
    "cli",
)

#: floor → the other floors it may import (its own is always allowed).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "io": frozenset({"core"}),
    "lifecycle": frozenset({"core", "io"}),
    "compress": frozenset({"core", "io"}),
    "building": frozenset({"core", "io", "lifecycle"}),
    "targets": frozenset({"core", "io", "building"}),
    "counting": frozenset({"core", "io", "targets"}),
    "operations": frozenset({"core", "io", "targets", "compress"}),
    "merging": frozenset({"core", "io", "lifecycle", "building", "targets", "compress"}),
    "reporting": frozenset(
        {
            "core",
            "io",
            "lifecycle",
            "compress",
            "building",
            "targets",
            "counting",
            "operations",
            "merging",
        }
    ),
    "cli": frozenset(
        {
            "core",
            "io",
            "lifecycle",
            "compress",
            "building",
            "targets",
            "counting",
            "operations",
            "merging",
            "reporting",
        }
    ),
    "facade": frozenset(
        {
            "core",
            "io",
            "lifecycle",
            "compress",
            "building",
            "targets",
            "counting",
            "operations",
            "merging",
            "reporting",
            "cli",
        }
    ),
}


def module_name(path: Path) -> str:
    """``paramscope.io._safetensors`` for ``src/paramscope/io/_safetensors.py``."""
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def floor_of(module: str) -> str:
    """The floor of a ``paramscope`` module (KeyError for one no row covers)."""
    parts = module.split(".")
    if parts[0] != PKG:
        raise KeyError(module)
    if len(parts) == 1 or parts[1] == "__main__":
        return "facade"
    if parts[1] in ROOMS:
        return parts[1]
    if parts[1] in UPPER:
        return UPPER[parts[1]]
    if parts[1].startswith("_") and f"{PKG}.{parts[1]}" in MODULES:
        return "core"
    raise KeyError(module)


def imports(path: Path, text: str | None = None) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every paramscope module ``path`` imports, anywhere in the file
    (``text`` stands in for the file's contents when given)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    source = path.read_text(encoding="utf-8") if text is None else text
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PKG:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PKG:
                continue
            for alias in node.names:  # `from . import _sharded` imports the submodule
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else target


def edges() -> Iterator[tuple[str, int, str, str, str]]:
    """``(file, line, imported module, from floor, to floor)`` of every import."""
    for module, path in MODULES.items():
        here = floor_of(module)
        for line, target in imports(path):
            yield str(path.relative_to(SRC.parent)), line, target, here, floor_of(target)


def test_every_module_has_a_floor() -> None:
    unplaced = []
    for module in MODULES:
        try:
            floor_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, (
        f"modules on no floor: {unplaced}; put a new room in ROOMS (with its row in ALLOWED) "
        "or a new upper top-level module in UPPER"
    )
    missing = [m for m in UPPER if f"{PKG}.{m}" not in MODULES]
    assert not missing, f"UPPER names modules that do not exist: {missing}"


def test_the_table_is_a_stack() -> None:
    """No floor may import a floor that may import it back (so no cycle can be allowed)."""
    order = list(ALLOWED)
    for i, floor in enumerate(order):
        above = set(order[i:])
        assert not (ALLOWED[floor] & above), f"{floor} may import {ALLOWED[floor] & above}"


def test_every_import_points_down() -> None:
    bad = [
        f"{file}:{line}: imports {target} ({to}); {here} may import only "
        f"{', '.join(sorted(ALLOWED[here])) or 'core modules'}"
        for file, line, target, here, to in edges()
        if to != here and to not in ALLOWED[here]
    ]
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_core_imports_only_core() -> None:
    core = sorted(m for m in MODULES if floor_of(m) == "core")
    assert {"paramscope._modtree", "paramscope._target_kind", "paramscope._files"} <= set(core)
    bad = [
        f"{file}:{line}: core imports {target} ({to})"
        for file, line, target, here, to in edges()
        if here == "core" and to != "core"
    ]
    assert not bad, "\n".join(bad)


def test_no_cycles_between_floors() -> None:
    graph: dict[str, dict[str, str]] = {}
    for file, line, target, here, to in edges():
        if to != here:
            graph.setdefault(here, {}).setdefault(to, f"{file}:{line} imports {target}")

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, {}):
                if nxt == start:
                    return [*path, start]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    for floor in graph:
        cycle = cycle_from(floor)
        if cycle is not None:
            why = [graph[a][b] for a, b in itertools.pairwise(cycle)]
            raise AssertionError(f"import cycle {' → '.join(cycle)}:\n" + "\n".join(why))


def test_counting_and_lifecycle_stay_apart() -> None:
    bad = [
        f"{file}:{line}: {here} imports {target}"
        for file, line, target, here, to in edges()
        if {here, to} == {"counting", "lifecycle"}
    ]
    assert not bad, "\n".join(bad)


def test_io_knows_no_compression_and_no_models() -> None:
    bad = [
        f"{file}:{line}: io imports {target}"
        for file, line, target, here, _ in edges()
        if here == "io" and (target.startswith(f"{PKG}.compress") or target == f"{PKG}._targets")
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_function_level_and_relative_imports() -> None:
    """The parser itself: lazy, relative and ``from . import`` imports are found, resolved."""
    text = (
        "import json\n"
        "from .._files import open_regular\n"
        "def f():\n"
        "    from ..compress import _quantize\n"
        "    from . import _reader\n"
        "    import paramscope.counting\n"
    )
    got = [t for _, t in imports(SRC / "io" / "_source.py", text)]
    assert got == [
        "paramscope._files",
        "paramscope.compress._quantize",
        "paramscope.io._reader",
        "paramscope.counting",
    ]
    assert floor_of("paramscope.compress._quantize") == "compress"
    assert floor_of("paramscope._targets") == "targets"
    assert floor_of("paramscope._files") == "core"
