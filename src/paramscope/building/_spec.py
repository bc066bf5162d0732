"""Build a torch model from a declarative spec: a dict, a JSON or YAML file, or a JSON string.

A spec describes one root layer, plus optional top-level keys that tie, initialise, load and
freeze its parameters. Building runs, in this order: construct the layers, apply ``tie``,
apply ``init`` (with ``seed``), ``load`` a parameter file, apply ``freeze``.

This module runs the steps (:func:`build_with_report`); the spec is read by
:mod:`._spec_read`, its layers built by :mod:`._spec_builder` (arguments checked by
:mod:`._spec_types`, classes looked up by :mod:`._spec_module`), and every error is a
:class:`SpecError` (:mod:`._spec_errors`).

**Layers.** A layer is an object with a ``"type"``: the name of a class in ``torch.nn``
(``"Linear"``, ``"Conv2d"``, ``"ReLU"``; ``"nn.Linear"`` and ``"torch.nn.Linear"`` are accepted
too). Constructor arguments go in ``"args"`` (a list), ``"kwargs"`` (an object), or inline as
extra keys (``{"type": "Linear", "in_features": 784, "out_features": 256}``). JSON arrays
become tuples (``"kernel_size": [3, 3]``), ``"dtype": "float16"`` becomes ``torch.float16``,
and an argument that is itself a layer object is built first
(``{"type": "TransformerEncoder", "encoder_layer": {"type": "TransformerEncoderLayer", ...}}``).
Arguments are checked against the constructor's signature and annotations before it runs.

Only classes defined in ``torch.nn.modules`` can be named, never an import path: a spec is
data, so reading one must never import or run code the spec's author chose (a YAML file is
read with ``yaml.safe_load`` for the same reason).

**Containers.**

- ``{"type": "Sequential", "layers": [...]}``: an ``nn.Sequential``; ``"layers"`` may also be
  an object ``{"fc1": {...}, "act": {...}}`` for named children.
- ``{"type": "ModuleList", "layers": [...]}`` and ``{"type": "ModuleDict", "children": {...}}``.
- ``{"type": "Module", "children": {"encoder": {...}, "head": {...}}, "forward": ["encoder",
  "head"]}``: a plain container (:class:`SpecModule`) with those attributes; its ``forward``
  runs the listed children in order, and without ``"forward"`` calling it raises
  :class:`SpecError`.

**Repeat.** Inside a ``"layers"`` list, ``{"repeat": 3, "layer": {...}}`` expands into 3 fresh
copies (distinct parameters), and ``{"repeat": 2, "layers": [a, b]}`` into ``a, b, a, b``.

**Reuse.** A layer may carry ``"name": "shared"``; a later ``{"ref": "shared"}`` anywhere a
layer may stand is the *same* instance (shared parameters, counted once). Names are global to
the spec and defined in reading order; a layer inside a repeat cannot carry a name.

**Top-level keys.**

- ``"tie": [["head.weight", "embed.weight"], ...]``: the first parameter becomes the same
  ``nn.Parameter`` object as the second (shapes and dtypes must match).
- ``"init": [rules]`` and ``"seed": 0``: rules ``{"select": "*.weight", "init":
  "normal(std=0.02)"}`` or ``["*.bias", "zeros"]``, passed to
  :func:`paramscope.lifecycle._init.init`. ``seed`` also makes the layers' own default
  initialisation deterministic (the global RNG is left as it was).
- ``"load": "params.safetensors"`` or ``{"path": ..., "strict": false}``: a parameter file,
  relative to the spec file's folder (or ``base_dir``), loaded with
  :func:`paramscope.lifecycle._load.load_into`; strict by default.
- ``"freeze": ["embed.*"]`` or ``{"patterns": [...], "bn_eval": true}``: passed to
  :func:`paramscope.lifecycle._freeze.freeze` (``"*"`` freezes all; ``[]`` nothing).
- ``"description"``: free text, ignored.

**Errors.** Every problem raises :class:`SpecError` naming the place in the spec, what was
expected and what was found: ``layers[3].kwargs.out_features: expected int, got "ten"``.

Example (the D2L shared-layer network, written as YAML)::

    type: Sequential
    layers:
      - {type: Linear, args: [4, 8]}
      - {type: ReLU}
      - {type: Linear, args: [8, 8], name: shared}
      - {type: ReLU}
      - {ref: shared}
      - {type: ReLU}
      - {repeat: 2, layer: {type: Linear, in_features: 8, out_features: 8}}
      - {type: Linear, args: [8, 1]}
    seed: 0
    init:
      - {select: "*.weight", init: "normal(std=0.02)"}
      - ["*.bias", zeros]
    freeze: ["0.*"]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ParamscopeError, StrictLoadError
from ._spec_builder import _Builder
from ._spec_errors import SpecError, _hint, _join, _show
from ._spec_module import nn_class
from ._spec_read import SpecSource, _read

if TYPE_CHECKING:
    import torch

    from ..lifecycle._freeze import FreezeCounts
    from ..lifecycle._init import InitReport
    from ..lifecycle._load import LoadReport

__all__ = [
    "BuildResult",
    "SpecError",  # re-exported: building/_infer.py imports it from here
    "build",
    "build_with_report",
    "nn_class",  # re-exported: building/_infer.py imports it from here
]


_TOP_KEYS = ("tie", "init", "seed", "load", "freeze", "description")

#: A spec of another kind: its one top-level key → its reader, registered by the floor that
#: builds such models (every arrow points down: ``paramscope.merging`` registers
#: ``"student"`` here when it is imported, and ``paramscope.build`` imports it). A reader takes
#: the read spec, the folder its relative paths resolve against and ``device``, and returns
#: the model and the report of loading its weights (or ``None``).
SpecReader = Callable[[dict[str, Any], "Path | None", Any], tuple[Any, Any]]
_KINDS: dict[str, SpecReader] = {}
#: the kinds paramscope defines, and the package whose import registers each
_KIND_HOMES = {"student": "paramscope.merging"}


def register_spec_kind(key: str, reader: SpecReader) -> None:
    """Let :func:`build` read specs whose top level has ``key`` with ``reader``.

    Args:
        key: the top-level key that marks the kind (``"student"``).
        reader: ``reader(spec, folder, device) -> (model, load report or None)``.

    Example:
        >>> import paramscope.merging  # registers "student"
        >>> "student" in _KINDS
        True
    """
    _KINDS[key] = reader


def _other_kind(raw: dict[str, Any], folder: Path | None, device: Any) -> BuildResult | None:
    """The model of a spec of a registered kind, or ``None`` for a layer spec."""
    kind = next((k for k in raw if k in _KINDS or k in _KIND_HOMES), None)
    if kind is None:
        return None
    reader = _KINDS.get(kind)
    if reader is None:
        raise SpecError(
            kind,
            f'a "{kind}" spec is read by {_KIND_HOMES[kind]}; build it with paramscope.build, '
            f"which imports it (or import {_KIND_HOMES[kind]} first)",
        )
    model, report = reader(raw, folder, device)
    return BuildResult(model, load_report=report)


# --------------------------------------------------------------------------- top level


@dataclass
class BuildResult:
    """A built model and the reports of the steps the spec asked for.

    Attributes:
        model: the built module.
        init_report: the report of ``init`` rules, or ``None`` without ``"init"``.
        freeze_counts: counts after ``freeze``, or ``None`` without ``"freeze"``.
        load_report: the report of ``load``, or ``None`` without ``"load"``.
        named: the layers that carry a ``"name"``, by name.
    """

    model: torch.nn.Module
    init_report: InitReport | None = None
    freeze_counts: FreezeCounts | None = None
    load_report: LoadReport | None = None
    named: dict[str, torch.nn.Module] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary.

        Returns:
            ``{"model": type name, "params": unique parameter elements, "named": {name: type},
            "init", "freeze", "load": the reports' ``to_dict()`` or ``None``}``.
        """
        unique = {id(p): p.numel() for p in self.model.parameters()}
        return {
            "model": type(self.model).__name__,
            "params": sum(unique.values()),
            "named": {n: type(m).__name__ for n, m in self.named.items()},
            "init": None if self.init_report is None else self.init_report.to_dict(),
            "freeze": None if self.freeze_counts is None else self.freeze_counts.to_dict(),
            "load": None if self.load_report is None else self.load_report.to_dict(),
        }


def _check_top(spec: Mapping[str, Any]) -> None:
    """Validate the shape of the top-level keys before anything is built."""
    seed = spec.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise SpecError("seed", f"expected a non-negative int, got {_show(seed)}")
    ties = spec.get("tie", [])
    if not isinstance(ties, list):
        raise SpecError("tie", f'expected a list of ["name", "target"] pairs, got {_show(ties)}')
    for i, pair in enumerate(ties):
        ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, str) for n in pair)
        if not ok:
            raise SpecError(
                _join("tie", i), f'expected a pair ["name", "target"] of names, got {_show(pair)}'
            )
    rules = spec.get("init", [])
    if not isinstance(rules, list):
        raise SpecError("init", f"expected a list of rules, got {_show(rules)}")
    for i, rule in enumerate(rules):
        pair = isinstance(rule, list) and len(rule) == 2 and all(isinstance(r, str) for r in rule)
        if not (pair or isinstance(rule, Mapping)):
            raise SpecError(
                _join("init", i),
                'expected {"select": ..., "init": ...} or ["selector", "scheme"], '
                f"got {_show(rule)}",
            )
    _freeze_args(spec.get("freeze"))
    _load_args(spec.get("load"))


def _freeze_args(value: Any) -> tuple[list[str], bool] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value], False
    bn_eval = False
    patterns = value
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in ("patterns", "bn_eval")]
        if unknown:
            raise SpecError(
                "freeze", f'unknown key "{unknown[0]}"{_hint(unknown[0], ["patterns", "bn_eval"])}'
            )
        patterns = value.get("patterns", [])
        bn_eval = value.get("bn_eval", False)
        if not isinstance(bn_eval, bool):
            raise SpecError("freeze.bn_eval", f"expected a bool, got {_show(bn_eval)}")
    if not isinstance(patterns, list):
        raise SpecError("freeze", f"expected a list of name patterns, got {_show(patterns)}")
    for i, p in enumerate(patterns):
        if not isinstance(p, str):
            raise SpecError(_join("freeze", i), f"expected a name pattern, got {_show(p)}")
    return list(patterns), bn_eval


def _load_args(value: Any) -> tuple[str, bool] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value, True
    if not isinstance(value, Mapping):
        raise SpecError(
            "load", f'expected a path or {{"path": ..., "strict": ...}}, got {_show(value)}'
        )
    unknown = [k for k in value if k not in ("path", "strict")]
    if unknown:
        raise SpecError(
            "load", f'unknown key "{unknown[0]}"{_hint(unknown[0], ["path", "strict"])}'
        )
    path, strict = value.get("path"), value.get("strict", True)
    if not isinstance(path, str) or not path:
        raise SpecError("load.path", f"expected a file path, got {_show(path)}")
    if not isinstance(strict, bool):
        raise SpecError("load.strict", f"expected a bool, got {_show(strict)}")
    return path, strict


def _apply_ties(model: torch.nn.Module, ties: list[list[str]]) -> None:
    for i, (name, target) in enumerate(ties):
        params = dict(model.named_parameters(remove_duplicate=False))
        for j, n in enumerate((name, target)):
            if n not in params:
                raise SpecError(
                    _join(_join("tie", i), j), f'no parameter "{n}"{_hint(n, list(params))}'
                )
        a, b = params[name], params[target]
        if a is b:
            continue
        if a.shape != b.shape or a.dtype != b.dtype:
            raise SpecError(
                _join("tie", i),
                f'"{name}" is {tuple(a.shape)} {a.dtype} but "{target}" is '
                f"{tuple(b.shape)} {b.dtype}; a tie needs equal shapes and dtypes",
            )
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, b)


@contextlib.contextmanager
def _construction(device: str | torch.device | None, seed: int | None) -> Iterator[None]:
    import torch

    with contextlib.ExitStack() as stack:
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=[]))
            torch.manual_seed(seed)
        if device is not None:
            stack.enter_context(torch.device(device))
            if torch.device(device).type == "meta":
                from .zoo._meta import skip_init_on_meta

                stack.enter_context(skip_init_on_meta())
        yield


def build_with_report(
    spec: SpecSource,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> BuildResult:
    """Build the model a spec describes, and return it with the reports of its steps.

    Steps, in order: construct the layers (on ``device``), ``tie``, ``init`` (with ``seed``),
    ``load``, ``freeze``. The module docstring describes the spec language. A spec with a
    ``"student"`` key (what ``paramscope student`` and :func:`paramscope.save_student` write)
    rebuilds that student from its teacher and loads its weights (``paramscope.build``
    imports :mod:`paramscope.merging`, which reads it).

    Args:
        spec: a dict, a JSON / YAML file path, or a JSON string (see :func:`read_spec`).
        base_dir: the folder a relative ``"load"`` path resolves against; by default the spec
            file's folder, or the current folder for a dict or string spec.
        device: build under ``torch.device(device)``; ``"meta"`` allocates nothing and skips
            random initialisation, so it validates a spec of any size cheaply.

    Returns:
        A :class:`BuildResult`.

    Raises:
        SpecError: the spec is invalid; the message names the place (``layers[3].args[1]``).
        SourceNotFoundError: the spec file does not exist.

    Example:
        >>> r = build_with_report({"type": "Sequential", "layers": [
        ...     {"type": "Linear", "args": [4, 8], "name": "fc"}, {"type": "ReLU"}]})
        >>> type(r.named["fc"]).__name__, r.init_report is None
        ('Linear', True)
    """
    raw, folder = _read(spec)
    other = _other_kind(raw, Path(base_dir) if base_dir is not None else folder, device)
    if other is not None:
        return other
    _check_top(raw)
    seed = raw.get("seed")
    root = {k: v for k, v in raw.items() if k not in _TOP_KEYS}
    builder = _Builder()
    with _construction(device, seed):
        model = builder.node(root, "", extra=_TOP_KEYS)
    _apply_ties(model, raw.get("tie", []))
    result = BuildResult(model, named={n: m for n, (m, _) in builder.named.items()})
    rules = raw.get("init")
    if rules:
        from ..lifecycle._init import init

        pairs = [tuple(r) if isinstance(r, list) else dict(r) for r in rules]
        try:
            result.init_report = init(model, pairs, seed=seed)
        except ParamscopeError as exc:
            raise SpecError("init", str(exc).removeprefix("init: ")) from exc
    load = _load_args(raw.get("load"))
    if load is not None:
        result.load_report = _load(model, load, base_dir, folder)
    freeze = _freeze_args(raw.get("freeze"))
    if freeze is not None and freeze[0]:  # no patterns freezes nothing (not everything)
        from ..lifecycle._freeze import freeze as freeze_fn

        try:
            result.freeze_counts = freeze_fn(model, *freeze[0], bn_eval=freeze[1])
        except ParamscopeError as exc:
            raise SpecError("freeze", str(exc).removeprefix("freeze: ")) from exc
    return result


def _load(
    model: torch.nn.Module,
    load: tuple[str, bool],
    base_dir: str | os.PathLike[str] | None,
    folder: Path | None,
) -> LoadReport:
    from ..lifecycle._load import load_into

    rel, strict = load
    root = Path(base_dir) if base_dir is not None else (folder or Path.cwd())
    path = Path(rel) if Path(rel).is_absolute() else root / rel
    if not path.exists():
        raise SpecError("load", f'"{rel}": no such file (looked for {path})')
    try:
        return load_into(model, path, strict=strict)
    except StrictLoadError as exc:
        raise SpecError(
            "load",
            f'{path}: does not load cleanly into the model ("strict": true, the default; '
            '"strict": false loads what fits):\n' + exc.report.format(),
        ) from exc
    except ParamscopeError as exc:
        text = str(exc)  # most name the file first already: never twice
        raise SpecError("load", text if text.startswith(f"{path}") else f"{path}: {text}") from exc


def build(
    spec: SpecSource,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> torch.nn.Module:
    """Build the model a spec describes (see :func:`build_with_report` for the reports).

    Args:
        spec: a dict, a JSON / YAML file path, or a JSON string.
        base_dir: the folder a relative ``"load"`` path resolves against.
        device: build under ``torch.device(device)`` (``"meta"``: no allocation).

    Returns:
        The model.

    Raises:
        SpecError: the spec is invalid; the message names the place in it.
        SourceNotFoundError: the spec file does not exist.

    Example:
        >>> import torch
        >>> model = build({"type": "Sequential", "layers": [
        ...     {"type": "Linear", "in_features": 4, "out_features": 8}, {"type": "ReLU"},
        ...     {"repeat": 2, "layer": {"type": "Linear", "args": [8, 8]}},
        ...     {"type": "Linear", "args": [8, 1]}]})
        >>> model(torch.zeros(2, 4)).shape
        torch.Size([2, 1])
    """
    return build_with_report(spec, base_dir=base_dir, device=device).model
