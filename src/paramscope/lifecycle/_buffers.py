"""Recompute the buffers a model makes for itself, so a model built on meta can run.

Non-persistent buffers (rotary ``inv_freq``, BERT's ``position_ids`` / ``token_type_ids``,
causal masks) are in no checkpoint: a model built on the meta device and loaded from a file
keeps them on meta, and its forward pass fails (``Cannot copy out of meta tensor``) or, worse,
returns garbage. :func:`recompute_buffers` computes their values with the model's own code,
never touching its parameters or any other tensor:

1. **the model's own initialisation** — for a Hugging Face model, the ``_init_weights`` of the
   nearest ``PreTrainedModel`` above the buffer's owner (what ``from_pretrained`` runs for
   these buffers), applied to a *shadow* of the owner: the same object's attributes, with its
   parameters and every other tensor replaced by meta tensors, so the initialiser can write
   only the buffers being recomputed;
2. **a real twin** — the owner's class built again on the CPU with the arguments its
   ``__init__`` takes, read back from the attributes of the same names (``config``, ``dim``,
   ...), random initialisation of parameters skipped; the twin's buffers are copied.

Each way is run twice, starting from buffers filled with 0 and then with 1 (twin: built
twice); a value is accepted only when both runs agree and its shape and dtype equal the meta
buffer's. So a buffer the method did not write, wrote only in part, or filled at random is
never accepted: it stays on meta and is reported with its owner and the reason.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._skipinit import skip_init

if TYPE_CHECKING:
    import torch

__all__ = ["Recomputed", "recompute_buffers"]


@dataclass
class Recomputed:
    """What :func:`recompute_buffers` found.

    Attributes:
        values: buffer name → its computed (real) value.
        how: buffer name → the method that computed it, in words.
        failed: buffer name → ``{"owner", "kind", "reason"}`` for buffers it could not compute.
    """

    values: dict[str, torch.Tensor] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)


def _owners(model: Any, names: list[str]) -> dict[int, tuple[Any, str, dict[str, str]]]:
    """Owner module id → (module, its first path, local name → full name)."""
    out: dict[int, tuple[Any, str, dict[str, str]]] = {}
    for name in names:
        path, _, local = name.rpartition(".")
        mod = model.get_submodule(path) if path else model
        entry = out.setdefault(id(mod), (mod, path, {}))
        entry[2].setdefault(local, name)
    return out


def _meta_like(t: Any) -> Any:
    import torch

    if t is None or not isinstance(t, torch.Tensor):
        return t
    if isinstance(t, torch.nn.Parameter):
        return torch.nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=t.requires_grad)
    return torch.empty_like(t, device="meta")


def _shadow(mod: Any, real: dict[str, Any], memo: dict[int, Any]) -> Any:
    """A shallow copy of ``mod`` (recursively) whose tensors are meta, but for ``real``."""
    if id(mod) in memo:
        return memo[id(mod)]
    twin = copy.copy(mod)
    memo[id(mod)] = twin
    object.__setattr__(twin, "_parameters", {k: _meta_like(v) for k, v in mod._parameters.items()})
    object.__setattr__(
        twin,
        "_buffers",
        {k: real[k] if k in real else _meta_like(v) for k, v in mod._buffers.items()},
    )
    object.__setattr__(
        twin,
        "_modules",
        {k: None if c is None else _shadow(c, {}, memo) for k, c in mod._modules.items()},
    )
    return twin


def _hf_initialiser(model: Any, path: str) -> tuple[Callable[[Any], None], str] | None:
    """The ``_init_weights`` of the nearest transformers ``PreTrainedModel`` above ``path``."""
    parts = path.split(".") if path else []
    for i in range(len(parts), -1, -1):
        prefix = ".".join(parts[:i])
        anc = model.get_submodule(prefix) if prefix else model
        fn = getattr(anc, "_init_weights", None)
        is_hf = any(c.__module__.startswith("transformers.") for c in type(anc).__mro__)
        if callable(fn) and is_hf and hasattr(anc, "config"):
            return fn, f"{type(anc).__name__}._init_weights (transformers)"
    return None


def _by_initialiser(
    mod: Any, locals_: dict[str, str], init: Callable[[Any], None]
) -> tuple[dict[str, Any], str | None]:
    import torch

    runs: list[dict[str, Any]] = []
    for fill in (0, 1):
        real = {k: torch.empty_like(mod._buffers[k], device="cpu").fill_(fill) for k in locals_}
        try:
            with torch.device("cpu"), torch.no_grad():
                init(_shadow(mod, real, {}))
        except Exception as exc:  # the model's own code: any failure means "not this way"
            return {}, f"its initialiser failed: {type(exc).__name__}: {exc}"
        runs.append(real)
    same = {k: v for k, v in runs[0].items() if torch.equal(v, runs[1][k])}
    return same, None if same else "its initialiser does not compute it"


def _init_arguments(mod: Any) -> tuple[dict[str, Any], str | None]:
    """Keyword arguments to rebuild ``mod`` from its attributes, or why that is impossible."""
    cls = type(mod)
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return {}, f"the signature of {cls.__name__}.__init__ cannot be read"
    kwargs: dict[str, Any] = {}
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name == "device":
            continue  # built on the CPU
        for attr in (p.name, f"_{p.name}"):
            if attr in vars(mod) or attr in mod._modules:
                break
        else:
            if p.default is p.empty:
                return {}, (
                    f"{cls.__name__}.__init__ needs {p.name!r}, which the module does not keep "
                    "as an attribute of that name"
                )
            continue
        value = getattr(mod, attr)
        if hasattr(value, "parameters") and hasattr(value, "_modules"):
            return {}, f"{cls.__name__}.__init__ takes the module {p.name!r}"
        if p.kind is p.POSITIONAL_ONLY:
            return {}, f"{cls.__name__}.__init__ takes {p.name!r} positionally only"
        kwargs[p.name] = value
    return kwargs, None


def _by_twin(mod: Any, locals_: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    import torch

    kwargs, why = _init_arguments(mod)
    if why is not None:
        return {}, why
    runs = []
    for _ in range(2):
        try:
            skip = skip_init(lambda t: isinstance(t, torch.nn.Parameter))  # values unused
            with torch.device("cpu"), skip, torch.no_grad():
                twin = type(mod)(**kwargs)
        except Exception as exc:  # the model's own code: any failure means "not this way"
            return {}, f"rebuilding {type(mod).__name__} failed: {type(exc).__name__}: {exc}"
        runs.append({k: twin._buffers.get(k) for k in locals_})
    same = {
        k: v
        for k, v in runs[0].items()
        if isinstance(v, torch.Tensor)
        and not v.is_meta
        and isinstance(runs[1][k], torch.Tensor)
        and torch.equal(v, runs[1][k])
    }
    if same:
        return same, None
    return same, f"a rebuilt {type(mod).__name__} does not compute it the same way twice"


def recompute_buffers(model: torch.nn.Module, names: list[str]) -> Recomputed:
    """Compute the values of meta buffers with the model's own code (see the module doc).

    Nothing in ``model`` is changed: the caller assigns the values.

    Args:
        model: the model.
        names: dotted names of buffers that are on the meta device.

    Returns:
        A :class:`Recomputed` with a value (and how) for every buffer that could be computed,
        and the owner and reason for every one that could not.

    Example:
        >>> import torch
        >>> class Pos(torch.nn.Module):
        ...     def __init__(self, n: int) -> None:
        ...         super().__init__()
        ...         self.n = n
        ...         self.register_buffer("ids", torch.arange(n), persistent=False)
        >>> with torch.device("meta"):
        ...     m = torch.nn.Sequential(Pos(4))
        >>> recompute_buffers(m, ["0.ids"]).values["0.ids"]
        tensor([0, 1, 2, 3])
    """
    out = Recomputed()
    for mod, path, locals_ in _owners(model, names).values():
        _recompute_owner(model, mod, path, locals_, out)
    return out


def _recompute_owner(
    model: Any, mod: Any, path: str, locals_: dict[str, str], out: Recomputed
) -> None:
    """Try each way on the buffers ``locals_`` (local → full name) of one owner module."""
    todo = dict(locals_)
    reasons: list[str] = []
    ways: list[tuple[str, Callable[[], tuple[dict[str, Any], str | None]]]] = []
    hf = _hf_initialiser(model, path)
    if hf is not None:
        fn, label = hf
        ways.append((label, lambda: _by_initialiser(mod, todo, fn)))
    ways.append((f"rebuilt {type(mod).__name__} on the CPU", lambda: _by_twin(mod, todo)))
    for label, way in ways:
        if not todo:
            break
        got, why = way()
        for local, value in got.items():
            meta = mod._buffers[local]
            note = ""
            if tuple(value.shape) != tuple(meta.shape):
                continue
            if value.dtype != meta.dtype:
                if not (value.is_floating_point() and meta.is_floating_point()):
                    continue
                note = f" (computed in {value.dtype}, cast to {meta.dtype})"
                value = value.to(meta.dtype)
            out.values[todo[local]] = value
            out.how[todo[local]] = label + note
            del todo[local]
        if why is not None:
            reasons.append(why)
    for name in todo.values():
        out.failed[name] = {
            "owner": path or "(root)",
            "kind": type(mod).__name__,
            "reason": "; ".join(reasons) or "no way to compute it was found",
        }
