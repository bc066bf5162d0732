"""One export table per package, checked: the lazy table, the TYPE_CHECKING block and
``__all__`` name the same things, and every name resolves (as huggingface_hub's
``check_static_imports`` does for its lazy ``__init__``)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "paramscope"


def _lazy_packages() -> list[Path]:
    """Every ``__init__.py`` of the package that uses the lazy-export mechanism."""
    return sorted(p for p in SRC.rglob("__init__.py") if "lazy_getattr" in p.read_text())


def _module_name(init: Path) -> str:
    parts = init.parent.relative_to(SRC.parent).parts
    return ".".join(parts)


def _literal(tree: ast.Module, name: str) -> dict[str, str]:
    for node in tree.body:
        targets = (
            [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)  # type: ignore[arg-type]
    return {}


def _submodules_argument(tree: ast.Module) -> dict[str, str]:
    """The literal submodule table passed to ``lazy_getattr`` (its fourth argument)."""
    for node in ast.walk(tree):
        call = isinstance(node, ast.Call) and ast.unparse(node.func).endswith("lazy_getattr")
        if call and len(node.args) >= 4 and not isinstance(node.args[3], ast.Name):
            return ast.literal_eval(node.args[3])
    return {}


def _type_checking_imports(tree: ast.Module) -> dict[str, str]:
    """``name → module`` of every ``from .mod import name as name`` under TYPE_CHECKING."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom), ast.unparse(imp)
                for alias in imp.names:
                    public = alias.asname or alias.name
                    assert alias.asname in (None, alias.name) or public == alias.asname
                    module = "." * imp.level + (imp.module or "")
                    out[public] = module if alias.name == public else f"{module}:{alias.name}"
    return out


@pytest.mark.parametrize("init", _lazy_packages(), ids=_module_name)
def test_lazy_table_type_checking_block_and_all_agree(init: Path) -> None:
    tree = ast.parse(init.read_text())
    lazy = _literal(tree, "_LAZY")
    checking = _type_checking_imports(tree)
    subs = _literal(tree, "_SUBMODULES") or _submodules_argument(tree)
    # every lazily exported name is imported for type checkers from the same module
    for name, module in lazy.items():
        assert checking.get(name) == module, (
            f"{init}: _LAZY[{name!r}] = {module!r} but TYPE_CHECKING imports "
            f"{checking.get(name)!r}"
        )
    extra = set(checking) - set(lazy) - set(subs)
    assert not extra, f"{init}: TYPE_CHECKING imports names missing from _LAZY: {sorted(extra)}"
    mod = importlib.import_module(_module_name(init))
    public = set(mod.__all__)
    assert set(lazy) | set(subs) <= public, sorted((set(lazy) | set(subs)) - public)
    assert not (public - set(lazy) - set(subs) - {"__version__"}), sorted(
        public - set(lazy) - set(subs) - {"__version__"}
    )
    for name in sorted(public):  # every exported name resolves
        assert getattr(mod, name) is not None, name


def test_top_level_all_is_derived_from_the_tables() -> None:
    import paramscope

    tree = ast.parse((SRC / "__init__.py").read_text())
    lazy, subs = _literal(tree, "_LAZY"), _literal(tree, "_SUBMODULES")
    assert paramscope.__all__ == sorted([*lazy, *subs, "__version__"])
    assert dir(paramscope) == sorted(paramscope.__all__)
