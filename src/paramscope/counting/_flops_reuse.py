"""Reuse the measured FLOPs of a repeated block instead of running it again.

A transformer's forward on the meta device spends almost all its time in the Python of its
blocks, and block ``k`` of a stack costs what block ``0`` costs when the two are the same:
same class, the same parameter and buffer shapes and dtypes, the same plain attributes (head
counts, epsilons, flags: an index attribute such as ``layer_idx`` is *part* of the key, so
blocks that carry their index are never taken for one another, except in transformers' own
classes, which keep it only to address the KV cache and make every per-layer choice from the
config in ``__init__``), no hooks of their own, and inputs of the same shapes and dtypes (a
transformers KV cache passed in counts as a cache of its class). :class:`Reuser` wraps the
forward of each block of a repeated stack (an ``nn.ModuleList`` / ``nn.Sequential`` with two
or more composite children of one class) while :func:`paramscope.flops` runs:

* the first call with a key is *measured*: the block runs under torch's flop counter as
  always, and what it added (FLOPs per op under the block and each of its submodules, the aten
  calls the recorder saw, the shapes of its output) is kept;
* a later call with the same key at the *same* path (the same block of another grid point in
  a sweep) reuses that measurement;
* a call at another path is measured too, and compared with the first: equal, and the key is
  *verified*, so that every later block with the key reuses it; different (a block whose
  forward depends on something the key does not hold), and blocks with that key are always
  measured, never reused across positions.

A reused block adds the kept counts to the counter (to the block, its submodules and every
module running around it, as the counter itself would) and returns fresh meta tensors of the
kept output shapes. The report's totals, per-module tree and op tables equal a full run's
(tests/test_flops_reuse.py checks this for the zoo's models and transformers' encoders,
decoders and MoE models); its notes say how many blocks were reused.
``paramscope.flops(reuse=False)`` runs every block.

Only a forward without values reuses: on the meta device, or under fake tensors for a model
with real weights (no backward, no LoRA adapters): a block's output there has only shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BlockCache", "Reuser"]


class _NotReusable(Exception):
    """A value that the key or the kept output cannot hold."""


@dataclass
class _Measured:
    """What one call of a block added: FLOPs per relative module path and op, aten calls
    (with the recorder's view flags), and the output's structure with tensor shapes."""

    counts: dict[str, dict[Any, int]]
    calls: dict[Any, Any]
    out: Any


@dataclass
class _Entry:
    """The measurements of one key, by the block path they were taken at."""

    by_path: dict[str, _Measured] = field(default_factory=dict)
    verified: bool | None = None  # True: equal at two paths; False: they differed


class BlockCache:
    """Measured blocks by key, shared by the :func:`paramscope.flops` calls given it (a sweep
    passes one cache to all its points, so a block measured at one grid point is reused at
    the others).

    Example:
        >>> cache = BlockCache()
        >>> len(cache)
        0
    """

    def __init__(self) -> None:
        self.entries: dict[Any, _Entry] = {}

    def __len__(self) -> int:
        return len(self.entries)


_SCALARS = (bool, int, float, str, type(None))


def _plain(value: Any, depth: int = 0) -> Any:
    """A hashable form of a plain attribute value, or raise :class:`_NotReusable`."""
    import torch

    if isinstance(value, _SCALARS):
        return (type(value).__name__, value)
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if depth < 3 and isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_plain(v, depth + 1) for v in value))
    if depth < 3 and isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _plain(v, depth + 1)) for k, v in value.items())))
    if callable(value) and hasattr(value, "__qualname__"):  # a function held as an attribute
        return ("fn", getattr(value, "__module__", ""), value.__qualname__)
    raise _NotReusable


#: transformers' own model classes. Their blocks keep their position in ``layer_idx`` to
#: index the KV cache, and make every per-layer choice (sliding window, attention type,
#: dense or MoE MLP, RoPE or not) from the config in ``__init__``, as attributes or module
#: types the key holds; so for them the index is left out of the key, and a cache passed in
#: is a cache (its writes are copies, no arithmetic). Any other class keeps its index in
#: the key (a block may branch on it in its forward).
_TRANSFORMERS_MODELS = "transformers.models."
_TRANSFORMERS_INDEX = frozenset({"layer_idx"})
_TRANSFORMERS_CACHES = "transformers.cache_utils"


def _signature(block: Any) -> Any:
    """What decides a block's FLOPs besides its inputs, or ``None`` when it has hooks (which
    may do anything) of its own."""
    parts = []
    for path, m in block.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return None
        index_free = type(m).__module__.startswith(_TRANSFORMERS_MODELS)
        attrs = []
        for name, value in vars(m).items():
            if name.startswith("_") or (index_free and name in _TRANSFORMERS_INDEX):
                continue
            try:
                attrs.append((name, _plain(value)))
            except _NotReusable:  # an object (a config): its effect shows in the shapes
                continue
        params = tuple(
            (n, tuple(p.shape), p.dtype, p.requires_grad)
            for n, p in m.named_parameters(recurse=False)
        )
        buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in m.named_buffers(recurse=False))
        parts.append((path, type(m), tuple(sorted(attrs)), params, buffers))
    return tuple(parts)


def _input_key(value: Any, depth: int = 0) -> Any:
    """A hashable form of a block's inputs: tensors by shape, stride, dtype and device type."""
    import torch

    if isinstance(value, torch.Tensor):
        return (
            "T",
            tuple(value.shape),
            tuple(value.stride()),
            value.dtype,
            value.device.type,
            value.requires_grad,
        )
    if depth < 4 and isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_input_key(v, depth + 1) for v in value))
    if depth < 4 and isinstance(value, dict):
        return ("dict", tuple((str(k), _input_key(v, depth + 1)) for k, v in value.items()))
    if type(value).__module__ == _TRANSFORMERS_CACHES:
        return ("cache", type(value).__name__)
    return _plain(value, 3)


def _out_spec(value: Any, depth: int = 0) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise _NotReusable
        return ("T", tuple(value.shape), tuple(value.stride()), value.dtype, str(value.device))
    if value is None or isinstance(value, _SCALARS):
        return ("V", value)
    if depth < 4 and type(value) in (tuple, list):
        return (type(value), tuple(_out_spec(v, depth + 1) for v in value))
    raise _NotReusable


def _rebuild(spec: Any) -> Any:
    """Fresh tensors in the kept structure, without values: on the meta device, or fake
    tensors when a fake-tensor mode is running (the caller keeps the recorder from counting
    these allocations, which the block did not make)."""
    import torch

    kind, body = spec[0], spec[1]
    if kind == "T":
        return torch.empty_strided(spec[1], spec[2], dtype=spec[3], device=spec[4])
    if kind == "V":
        return body
    return kind(_rebuild(s) for s in body)


def _stacks(model: Any) -> list[tuple[str, Any]]:
    """``(path, block)`` of every outermost repeated composite block. Broader than
    :func:`paramscope.compress._stacks.find_stacks`, which wants a whole stack of identical
    blocks to remove some: here a ResNet stage whose first block differs still offers its
    repeated ones, and the key (checked at run time) decides which blocks are alike."""
    import torch

    out: list[tuple[str, Any]] = []

    def walk(prefix: str, mod: Any) -> None:
        kids = list(mod.named_children())
        if isinstance(mod, (torch.nn.ModuleList, torch.nn.Sequential)):
            kinds: dict[type, int] = {}
            for _, c in kids:
                if len(c._modules):
                    kinds[type(c)] = kinds.get(type(c), 0) + 1
            repeated = {k for k, n in kinds.items() if n >= 2}
            if repeated:
                for name, c in kids:
                    path = f"{prefix}.{name}" if prefix else name
                    if type(c) in repeated:
                        out.append((path, c))
                    else:
                        walk(path, c)
                return
        for name, c in kids:
            walk(f"{prefix}.{name}" if prefix else name, c)

    walk("", model)
    return out


class Reuser:
    """Wraps the forward of a model's repeated blocks for one :func:`paramscope.flops` run.

    Args:
        model: the model (on the meta device).
        prefix: the counter's name of the root (its class name).
        counter: the running ``FlopCounterMode``.
        record: the recorder dispatch mode (``calls``: aten op → calls).
        cache: the measurements to use and fill.
        fake: the model has real weights and runs under a fake-tensor mode (the kept outputs
            are made as fake tensors on the model's device).

    Example:
        >>> import torch, paramscope
        >>> from paramscope.building import zoo
        >>> with torch.device("meta"):
        ...     model = zoo.build("gpt2")
        >>> paramscope.flops(model, seq=8).details["reused_blocks"]  # 12 blocks, 2 measured
        10
    """

    def __init__(
        self,
        model: Any,
        prefix: str,
        counter: Any,
        record: Any,
        cache: BlockCache,
        fake: bool = False,
    ) -> None:
        self.fake = fake
        self.prefix = prefix
        self.counter = counter
        self.record = record
        self.cache = cache
        self.blocks = _stacks(model)
        self.reused: dict[str, int] = {}
        self.measured = 0

    @contextmanager
    def installed(self) -> Iterator[Reuser]:
        """The wrappers in place for the ``with`` block, the forwards put back afterwards."""
        saved: list[tuple[Any, bool, Any]] = []
        try:
            for path, block in self.blocks:
                own = "forward" in vars(block)
                saved.append((block, own, vars(block).get("forward")))
                block.forward = self._wrap(path, block, block.forward)
            yield self
        finally:
            for block, own, value in saved:
                if own:
                    block.forward = value
                else:
                    del block.forward

    def _wrap(self, path: str, block: Any, original: Callable[..., Any]) -> Callable[..., Any]:
        state: dict[str, Any] = {}

        def forward(*args: Any, **kwargs: Any) -> Any:
            if "sig" not in state:
                state["sig"] = _signature(block)
            return self._call(path, state["sig"], original, args, kwargs)

        return forward

    def _call(
        self,
        path: str,
        sig: Any,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        import torch

        if sig is None:
            return original(*args, **kwargs)
        try:
            key = (sig, _input_key(args), _input_key(kwargs), torch.is_grad_enabled())
        except _NotReusable:
            return original(*args, **kwargs)
        name = f"{self.prefix}.{path}"
        entry = self.cache.entries.setdefault(key, _Entry())
        kept = entry.by_path.get(path)
        if kept is None and entry.verified:
            kept = next(iter(entry.by_path.values()))
        parents = getattr(getattr(self.counter, "mod_tracker", None), "parents", None)
        if kept is not None and isinstance(parents, set) and name in parents:
            self._add(kept, name, parents)
            self.reused[path] = self.reused.get(path, 0) + 1
            if not self.fake:
                from torch.utils._python_dispatch import _disable_current_modes

                with _disable_current_modes():  # plain meta tensors, seen by no mode
                    return _rebuild(kept.out)
            calls = self.record.calls
            seen = dict(calls)
            out = _rebuild(kept.out)  # fake tensors: made under the fake mode, and so seen
            calls.clear()  # by the recorder, whose count of them is taken back
            calls.update(seen)
            return out
        out, measured = self._measure(name, original, args, kwargs)
        self.measured += 1
        if measured is None:
            entry.verified = False
            return out
        others = [m for p, m in entry.by_path.items() if p != path]
        entry.by_path.setdefault(path, measured)
        if others and entry.verified is None:
            entry.verified = all(m == measured for m in others)
        return out

    def _measure(
        self, name: str, original: Callable[..., Any], args: Any, kwargs: Any
    ) -> tuple[Any, _Measured | None]:
        counts = self.counter.flop_counts
        mine = [n for n in counts if n == name or n.startswith(name + ".")]
        before = {n: dict(counts[n]) for n in mine}
        calls_before = dict(self.record.calls)
        out = original(*args, **kwargs)
        added: dict[str, dict[Any, int]] = {}
        for n in list(counts):
            if n != name and not n.startswith(name + "."):
                continue
            was = before.get(n, {})
            diff = {op: c - was.get(op, 0) for op, c in counts[n].items() if c != was.get(op, 0)}
            if diff:
                added["" if n == name else n[len(name) + 1 :]] = diff
        calls: dict[Any, Any] = {}
        for op, n in self.record.calls.items():
            if isinstance(op, tuple):
                continue
            if n != calls_before.get(op, 0):
                calls[op] = n - calls_before.get(op, 0)
                calls[("view", op)] = self.record.calls.get(("view", op))
        try:
            spec = _out_spec(out)
        except _NotReusable:
            return out, None
        return out, _Measured(added, calls, spec)

    def _add(self, kept: _Measured, name: str, parents: set[str]) -> None:
        """Count a kept measurement as the counter and the recorder would have."""
        counts = self.counter.flop_counts
        total = kept.counts.get("", {})
        for par in set(parents):
            for op, n in total.items():
                counts[par][op] += n
        for rel, ops in kept.counts.items():
            if rel:
                for op, n in ops.items():
                    counts[f"{name}.{rel}"][op] += n
        calls = self.record.calls
        for op, n in kept.calls.items():
            if isinstance(op, tuple):
                calls.setdefault(op, n)
            else:
                calls[op] = calls.get(op, 0) + n

    def note(self) -> str | None:
        """The report's note on what was reused, or ``None`` when nothing was."""
        if not self.reused:
            return None
        stacks: dict[str, int] = {}
        for path, n in self.reused.items():
            stack = path.rsplit(".", 1)[0] if "." in path else "(root)"
            stacks[stack] = stacks.get(stack, 0) + n
        where = ", ".join(f"{n} in {s}" for s, n in stacks.items())
        return (
            f"repeated blocks: {sum(stacks.values())} block call(s) ({where}) counted with the "
            "FLOPs measured for an identical block (same class, parameter shapes, attributes "
            "and input shapes; equal when measured at two positions) instead of running again; "
            "reuse=False (--no-reuse) runs every block"
        )
