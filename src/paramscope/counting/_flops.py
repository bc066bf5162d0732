"""FLOPs and MACs of a model's forward (and backward), per module and per op, on the meta device.

The model runs under :class:`torch.utils.flop_counter.FlopCounterMode` (torch's own formulas
for matmul, convolution and attention kernels) and, beneath it, a dispatch mode that records
every aten op that ran, so that an op with no formula is listed with its call count instead
of counting silently as zero. Nothing is allocated: a model on the meta device gets meta
inputs; a model with real weights runs under fake tensors.

Convention: FLOPs = 2 × MACs for matmul, convolution and attention (one multiply-add is two
floating-point operations), torch's convention, and fvcore's "flops" are MACs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .._errors import ArgumentError, ArgumentTypeError, ShapeMismatchError, TargetError

__all__ = ["CONVENTION", "FlopsNode", "FlopsReport", "analytic_flops", "flops", "parse_tokens"]

CONVENTION = "FLOPs = 2 × MACs for matmul, convolution and attention (torch's flop_counter)"
"""The convention every FLOPs output states."""

#: aten ops that move or create data but do no arithmetic (views are found by ``is_view``).
_NO_ARITHMETIC = frozenset(
    {
        "_unsafe_view", "clone", "copy_", "_to_copy", "contiguous", "cat", "stack", "empty",
        "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full",
        "full_like", "new_empty", "new_zeros", "new_ones", "new_full", "arange", "scalar_tensor",
        "lift_fresh", "lift_fresh_copy", "detach", "alias", "_reshape_alias", "index_select",
        "embedding", "embedding_dense_backward", "slice_backward", "select_backward",
        "index", "gather", "split_with_sizes_copy", "fill_", "zero_", "tril", "triu",
        "masked_fill", "where", "constant_pad_nd", "repeat", "expand_copy", "_local_scalar_dense",
        "_assert_tensor_metadata", "t", "sym_size", "sym_stride", "sym_numel", "copy",
        "new_empty_strided", "resize_", "set_", "unbind", "split", "chunk",
    }
)  # fmt: skip


@dataclass
class FlopsNode:
    """One module path in the FLOPs tree.

    Attributes:
        path: dotted path (``""`` for the root).
        kind: the module's type name.
        flops: FLOPs of every call of this module (its children included).
        macs: ``flops // 2`` (see :data:`CONVENTION`).
        forward_flops: the forward part of ``flops``.
        shared_with: for a later path to a module seen before, the first path (its calls are
            counted there).
        children: child nodes in registration order.
    """

    path: str
    kind: str
    flops: int = 0
    macs: int = 0
    forward_flops: int = 0
    shared_with: str | None = None
    children: list[FlopsNode] = field(default_factory=list)

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        """JSON form, children to ``depth`` levels.

        Args:
            depth: levels of children to include (``None``: all).

        Returns:
            ``path, kind, flops, macs, forward_flops, shared_with, children``.
        """
        out: dict[str, Any] = {
            "path": self.path,
            "kind": self.kind,
            "flops": self.flops,
            "macs": self.macs,
            "forward_flops": self.forward_flops,
            "shared_with": self.shared_with,
        }
        if depth is None or depth > 0:
            out["children"] = [
                c.to_dict(None if depth is None else depth - 1) for c in self.children
            ]
        return out


@dataclass
class FlopsReport:
    """The result of :func:`flops`.

    Attributes:
        flops: total FLOPs (forward, plus backward when asked).
        macs: total MACs (``flops // 2``).
        forward_flops: FLOPs of the forward.
        backward_flops: FLOPs of the backward (0 without ``backward``).
        method: ``"measured"`` (a forward ran under torch's flop counter) or
            ``"analytic"`` (a formula from the config, nothing ran).
        inputs: the shapes (and dtypes) of the inputs used.
        root: the module tree (``None`` for an analytic report).
        by_op: aten op → ``{"flops", "macs", "calls"}`` for the ops that have a formula.
        uncounted: aten op → calls, for ops with arithmetic but no formula (elementwise,
            normalisation, softmax, reductions …): their cost is **not** in the totals.
        no_arithmetic: aten op → calls, for views, copies and tensor creation.
        depth: the depth of the tree shown by default.
        details: the analytic report's terms (per-token FLOPs, N, layers, width, tokens).
        notes: the convention and what was and was not counted.
        source: the TARGET as given, ``None`` for a module.
    """

    flops: int
    macs: int
    forward_flops: int
    backward_flops: int
    method: str
    inputs: list[str] = field(default_factory=list)
    root: FlopsNode | None = None
    by_op: dict[str, dict[str, int]] = field(default_factory=dict)
    uncounted: dict[str, int] = field(default_factory=dict)
    no_arithmetic: dict[str, int] = field(default_factory=dict)
    depth: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by ``paramscope flops --json``.

        Returns:
            ``flops, macs, forward_flops, backward_flops, convention, method, inputs, tree,
            by_op, uncounted, no_arithmetic, details, notes, source``.
        """
        return {
            "flops": self.flops,
            "macs": self.macs,
            "forward_flops": self.forward_flops,
            "backward_flops": self.backward_flops,
            "convention": CONVENTION,
            "method": self.method,
            "inputs": self.inputs,
            "tree": None if self.root is None else self.root.to_dict(self.depth),
            "by_op": self.by_op,
            "uncounted": self.uncounted,
            "no_arithmetic": self.no_arithmetic,
            "details": self.details,
            "notes": self.notes,
            "source": self.source,
        }

    def to_text(self, width: int | None = None) -> str:
        """The human form ``paramscope flops`` prints: totals, the module tree, the op table,
        the uncounted ops and the notes.

        Args:
            width: unused (lines are as wide as their content).

        Returns:
            The text, without a final newline; strings are escaped for a terminal.

        Example:
            >>> import torch
            >>> r = flops(torch.nn.Linear(4, 3), input_shape=(2, 4))
            >>> print(r.to_text().splitlines()[0])
            FLOPs 48 (MACs 24), forward 48
        """
        from .._text import printable_tree
        from ._flops_render import flops_text

        return flops_text(printable_tree(self.to_dict()))


def _flash_cpu(q: Sequence[int], k: Sequence[int], v: Sequence[int], *a: Any, **kw: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(q, k, v))


def _flash_cpu_backward(
    grad: Sequence[int], q: Sequence[int], k: Sequence[int], v: Sequence[int], *a: Any, **kw: Any
) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return int(sdpa_backward_flop_count(grad, q, k, v))


@contextmanager
def _restored(modes: list[tuple[Any, bool]]) -> Iterator[None]:
    """Put each module's ``training`` flag back as it was, however the run ends."""
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    """Formulas torch's registry lacks: the CPU flash-attention kernel and its backward."""
    import torch

    aten = torch.ops.aten
    out: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        out[aten._scaled_dot_product_flash_attention_for_cpu] = _flash_cpu
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        out[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _flash_cpu_backward
    return out


def _recorder() -> Any:
    """A dispatch mode that counts every aten op that runs, by overload packet."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls: dict[Any, int] = {}

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            packet = func.overloadpacket
            self.calls[packet] = self.calls.get(packet, 0) + 1
            self.calls.setdefault(("view", packet), func.is_view)
            return func(*args, **(kwargs or {}))

    return _Record()


class _Stack:
    """The modules running now (global forward hooks), to name the one that rejects an input."""

    def __init__(self, paths: dict[int, str]) -> None:
        self.paths = paths
        self.running: list[tuple[str, str, str]] = []
        self.failed: tuple[str, str, str] | None = None

    def pre(self, mod: Any, args: Any) -> None:
        shapes = ", ".join(_describe(a) for a in args) if isinstance(args, tuple) else ""
        self.running.append((self.paths.get(id(mod), "?"), type(mod).__name__, shapes))

    def post(self, mod: Any, args: Any, out: Any) -> None:
        if self.running:
            self.running.pop()

    @contextmanager
    def hooks(self) -> Iterator[None]:
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        a = register_module_forward_pre_hook(self.pre)
        b = register_module_forward_hook(self.post)
        try:
            yield
        finally:
            a.remove()
            b.remove()


def _describe(x: Any) -> str:
    if isinstance(x, (bool, int, float)):
        return repr(x)
    shape = getattr(x, "shape", None)
    if shape is None:
        return type(x).__name__
    dtype = str(getattr(x, "dtype", "")).replace("torch.", "")
    return f"{tuple(shape)} {dtype}"


def _make_inputs(
    model: Any,
    device: Any,
    inputs: Any,
    input_shape: Sequence[int] | None,
    batch: int,
    seq: int | None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    import torch

    def moved(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return torch.empty(x.shape, dtype=x.dtype, device=device)
        return x

    if inputs is not None:
        if isinstance(inputs, dict):
            return (), {k: moved(v) for k, v in inputs.items()}
        if isinstance(inputs, (tuple, list)):
            return tuple(moved(x) for x in inputs), {}
        return (moved(inputs),), {}
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s <= 0 for s in shape):
            raise ArgumentError(f"input_shape={shape}: expected positive sizes, e.g. 1,3,224,224")
        floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
        return (torch.zeros(shape, dtype=floats[0] if floats else None, device=device),), {}
    if seq is not None:
        if seq <= 0 or batch <= 0:
            raise ArgumentError(f"batch={batch}, seq={seq}: expected positive sizes")
        # token ids 0: inside every vocabulary (values do not matter on meta)
        ids = torch.zeros((batch, seq), dtype=torch.long, device=device)
        if _needs_cache(model):
            return (ids,), {"use_cache": True}
        return (ids,), {}
    raise ArgumentError(
        "flops: give input_shape (an image or feature shape, e.g. 1,3,224,224), seq (token "
        "ids of batch × seq for a language model) or inputs"
    )


def _needs_cache(model: Any) -> bool:
    """A transformers model whose config keeps no KV cache (``use_cache=False``). Without a
    cache, transformers looks for packed sequences in the position ids, a test on their
    values that cannot run on meta, so the forward on meta keeps one (``use_cache=True``:
    the cache's writes are copies, without arithmetic, so the FLOPs are those of a run
    without it)."""
    import inspect

    if not type(model).__module__.startswith("transformers."):
        return False
    if getattr(getattr(model, "config", None), "use_cache", None) is not False:
        return False
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "use_cache" in params


def _batched_experts(model: Any) -> str | None:
    """A transformers MoE model's experts implementation when it is not ``batched_mm``
    (which runs without values: it gathers each token's top-k experts' weights), else
    ``None``. The model is switched by :func:`_experts_restored`."""
    get = getattr(model, "get_experts_implementation", None)
    if not callable(get) or not callable(getattr(model, "set_experts_implementation", None)):
        return None
    if not any("_is_expert_parallel" in vars(m) for m in model.modules()):
        return None
    try:
        current = get()
    except Exception:  # an older transformers: leave the model as it is
        return None
    if all(v in (None, "batched_mm") for v in current.values()):
        return None
    return str(current.get("") or next(iter(current.values())))


@contextmanager
def _experts_restored(model: Any, experts: str | None) -> Iterator[None]:
    """``batched_mm`` experts for the ``with`` block, the model's own afterwards."""
    if experts is None:
        yield
        return
    before = model.get_experts_implementation()
    model.set_experts_implementation("batched_mm")
    try:
        yield
    finally:
        model.set_experts_implementation(before)


def _first_tensor(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for x in out:
            t = _first_tensor(x)
            if t is not None:
                return t
    for name in ("logits", "last_hidden_state"):
        t = getattr(out, name, None)
        if isinstance(t, torch.Tensor):
            return t
    return None


def flops(
    target: Any,
    *,
    inputs: Any = None,
    input_shape: Sequence[int] | None = None,
    batch: int = 1,
    seq: int | None = None,
    backward: bool = False,
    depth: int | None = None,
    analytic: bool = False,
    tokens: int | str | None = None,
    lora: Any = None,
    reuse: bool = True,
    _cache: Any = None,
) -> FlopsReport:
    """Count the FLOPs and MACs of one forward (and backward) of a model, per module and op.

    The model runs on the meta device (or under fake tensors when its weights are real), so
    nothing is allocated and a 70B model costs nothing. Every aten op that ran without a
    formula is listed (:attr:`FlopsReport.uncounted`), never silently zero. A module reached by
    several paths is counted once per *call* (parameters are counted once per tensor).

    Args:
        target: an ``nn.Module`` or a model TARGET (``zoo:NAME``, ``package.module:callable``,
            an HF ``config.json``).
        inputs: the inputs themselves (a tensor, a tuple of positional inputs or a dict of
            keyword inputs); only their shapes and dtypes are used.
        input_shape: the shape of one float input (an image: ``(1, 3, 224, 224)``).
        batch: batch size of the token ids made for ``seq``.
        seq: sequence length: token ids (long, 0) of shape ``(batch, seq)``.
        backward: also run a backward from the first output's sum.
        depth: the tree depth shown by default (``None``: all).
        analytic: no forward: the Kaplan formula from the config (:func:`analytic_flops`,
            ``backward`` meaning a training step).
        tokens: tokens processed (``"2T"``); implies ``analytic``.
        lora: a :class:`~paramscope.LoraSpec`: run with the adapters peft would add (base
            frozen, adapters trainable) and count their FLOPs on top of the base's.
        reuse: a forward (not a backward) counts a repeated block (one of a stack,
            identical to one already measured: class, parameter shapes, attributes and input
            shapes) with the FLOPs measured for it instead of running it again; the totals,
            tree and op tables are those of a full run and the notes say how many blocks were
            reused. ``False`` runs every block.
        _cache: a :class:`~paramscope.counting._flops_reuse.BlockCache` shared across calls
            (:func:`paramscope.sweep` passes one to all its points).

    Returns:
        A :class:`FlopsReport`.

    Raises:
        ArgumentError: no inputs, or sizes that are not positive.
        ShapeMismatchError: the model rejects the input; names the module and the shapes.
        TargetError: ``target`` is a checkpoint (no forward to run).

    Example:
        >>> import torch
        >>> r = flops(torch.nn.Linear(784, 10), input_shape=(1, 784))
        >>> r.macs, r.flops
        (7840, 15680)
    """
    if analytic or tokens is not None:
        if lora is not None:
            raise ArgumentError(
                "flops: lora= needs a measured count (a forward on meta), not the analytic one"
            )
        return analytic_flops(target, seq=seq, batch=batch, tokens=tokens, train=backward)
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    source = None
    if isinstance(target, (str, os.PathLike)):
        from .._targets import resolve_target

        source = os.fspath(target)
        target = resolve_target(source)
        if isinstance(target, str):
            raise TargetError(
                f"{source}: flops needs a model (an nn.Module, zoo:NAME, package.module:callable "
                "or an HF config.json); a checkpoint has no forward to run"
            )
    if not isinstance(target, torch.nn.Module):
        raise ArgumentTypeError(
            f"flops: expected an nn.Module or a model TARGET, found {type(target).__name__}"
        )
    model = target
    named = list(model.named_modules(remove_duplicate=False))
    first: dict[int, str] = {}
    for path, mod in named:
        first.setdefault(id(mod), path)
    params = list(model.parameters()) + list(model.buffers())
    device = params[0].device if params else torch.device("meta")
    on_meta = device.type == "meta"
    fake = None
    if not on_meta:
        from torch._subclasses.fake_tensor import FakeTensorMode

        fake = FakeTensorMode(allow_non_fake_inputs=True)
    args, kwargs = _make_inputs(model, device, inputs, input_shape, batch, seq)
    if fake is not None:
        args = tuple(fake.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {
            k: fake.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()
        }
    shown_inputs = [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()]
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    record = _recorder()
    stack = _Stack(first)
    notes = [CONVENTION]
    if inputs is None and kwargs.get("use_cache") is True:
        notes.append(
            "the config keeps no KV cache (use_cache=false), but transformers then tests the "
            "position ids' values for packed sequences, which meta tensors do not have: ran "
            "with use_cache=True, whose cache writes are copies without arithmetic (the same "
            "FLOPs)"
        )
    forward_counts: dict[str, dict[Any, int]] = {}
    # A forward alone is an inference: eval mode (no dropout ops); a training step keeps the
    # model's own mode. The mode is put back afterwards.
    modes = [(m, m.training) for m in model.modules()]
    if not backward:
        model.eval()
        notes.append("forward only: run in eval mode (dropout off), as inference runs")
    if lora is not None:
        from ._flops_lora import lora_adapters

        adapters: Any = lora_adapters(model, lora)
    else:
        adapters = None
    experts = _batched_experts(model)
    if experts is not None:
        notes.append(
            "MoE experts ran with transformers' batched_mm implementation (instead of "
            f"{experts!r}): each token's top-k experts as one batched matmul, so the FLOPs are "
            "those of the experts a token is routed to; grouped and eager experts size their "
            "groups from the routing's values, which a run without values does not have"
        )
    reuser = None
    if reuse and not backward and adapters is None:
        from ._flops_reuse import BlockCache, Reuser

        reuser = Reuser(
            model,
            type(model).__name__,
            counter,
            record,
            _cache if _cache is not None else BlockCache(),
            fake=fake is not None,
        )
    with (
        _maybe(adapters) as lora_info,
        _restored(modes),
        _maybe(fake),
        counter,
        record,
        stack.hooks(),
        torch.set_grad_enabled(backward),
        _maybe(None if reuser is None else reuser.installed()),
        _experts_restored(model, experts),
    ):
        try:
            out = model(*args, **kwargs)
        except Exception as exc:  # the model's own error: say where and with what
            if isinstance(exc, (ArgumentError, TargetError)):
                raise
            where = stack.running[-1] if stack.running else ("", type(model).__name__, "")
            path, kind, shapes = where
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ShapeMismatchError(
                f"flops: {source or type(model).__name__} rejects input "
                f"{', '.join(shown_inputs)}: module {path or '(root)'!r} ({kind}) got "
                f"{shapes or 'no tensors'}: {type(exc).__name__}: {msg}"
            ) from None
        forward_counts = {k: dict(v) for k, v in counter.get_flop_counts().items()}
        forward_total = counter.get_total_flops()
        if backward:
            loss = _first_tensor(out)
            if loss is None or not loss.requires_grad:
                raise ArgumentError(
                    "flops: backward=True, but the model's output has no tensor that needs a "
                    "gradient (are all its parameters frozen?)"
                )
            loss.float().sum().backward()
    counts = counter.get_flop_counts()
    total = counter.get_total_flops()
    registry = counter.flop_registry
    root = _tree(model, named, first, counts, forward_counts)
    by_op: dict[str, dict[str, int]] = {}
    for op, n in sorted(counts.get("Global", {}).items(), key=lambda kv: -kv[1]):
        by_op[str(op)] = {"flops": n, "macs": n // 2, "calls": record.calls.get(op, 0)}
    uncounted: dict[str, int] = {}
    no_arith: dict[str, int] = {}
    for op, n in record.calls.items():
        if isinstance(op, tuple) or op in registry:
            continue
        name = str(op)
        bare = name.split(".", 1)[-1]
        if record.calls.get(("view", op)) or bare in _NO_ARITHMETIC or name.startswith("prim."):
            no_arith[name] = n
        else:
            uncounted[name] = n
    if uncounted:
        notes.append(
            f"{len(uncounted)} aten op type(s) with arithmetic ran without a formula and are not "
            "in the totals (elementwise, normalisation, softmax, reductions: usually a few % "
            "of a network's FLOPs): see 'uncounted'"
        )
    if any(mod_path != first[id(m)] for mod_path, m in named):
        notes.append(
            "a module reached by several paths is counted once per call, under its first path; "
            "each parent that called it includes its calls (parameters, unlike compute, are "
            "counted once per tensor)"
        )
    if any(op.startswith("aten._scaled_dot_product") for op in by_op):
        notes.append(
            "fused attention kernels are counted at the full score matrix (torch's sdpa "
            "formula), causal or not"
        )
    details: dict[str, Any] = {"backward": backward}
    details["reused_blocks"] = 0 if reuser is None else sum(reuser.reused.values())
    reused_note = None if reuser is None else reuser.note()
    if reused_note:
        notes.append(reused_note)
    if lora_info is not None:
        details["lora"] = lora_info
        notes.append(
            f"LoRA {lora.describe()} on {lora_info['modules']} module(s): the adapters peft "
            "would add ran with the model (base_layer(x) + lora_B(lora_A(x))·scaling, peft's "
            "LoRA layer), their forward 2·r·(in + out) FLOPs per token per adapted Linear "
            f"({lora_info['adapter_forward_flops']:,} in all); the base is frozen"
            + (
                ": the backward has the adapters' weight and input gradients (≈ 2 × their "
                "forward) and the activation-gradient pass through the frozen base where an "
                "input needs a gradient, but no weight gradient for the base"
                if backward
                else ""
            )
        )
    notes.append(
        "ran on the meta device: no memory, no values"
        if on_meta
        else "ran under fake tensors on the model's device: no memory, no values"
    )
    return FlopsReport(
        flops=total,
        macs=total // 2,
        forward_flops=forward_total,
        backward_flops=total - forward_total,
        method="measured",
        inputs=shown_inputs,
        root=root,
        by_op=by_op,
        uncounted=dict(sorted(uncounted.items(), key=lambda kv: -kv[1])),
        no_arithmetic=dict(sorted(no_arith.items(), key=lambda kv: -kv[1])),
        depth=depth,
        details=details,
        notes=notes,
        source=source,
    )


@contextmanager
def _maybe(ctx: Any) -> Iterator[Any]:
    if ctx is None:
        yield None
    else:
        with ctx as value:
            yield value


def _tree(
    model: Any,
    named: list[tuple[str, Any]],
    first: dict[int, str],
    counts: dict[str, dict[Any, int]],
    forward_counts: dict[str, dict[Any, int]],
) -> FlopsNode:
    """The module tree with FLOPs: torch's tracker names a module ``Root.a.b`` (one name per
    module object); that name is mapped back to the module's first path."""
    by_path = dict(named)
    prefix = type(model).__name__
    flops_of: dict[int, int] = {}
    fwd_of: dict[int, int] = {}
    for table, into in ((counts, flops_of), (forward_counts, fwd_of)):
        for key, ops in table.items():
            if key == "Global":
                continue
            path = (
                ""
                if key == prefix
                else key[len(prefix) + 1 :]
                if key.startswith(prefix + ".")
                else None
            )
            mod = by_path.get(path) if path is not None else None
            if mod is not None:
                into[id(mod)] = into.get(id(mod), 0) + sum(ops.values())
    nodes: dict[str, FlopsNode] = {}
    for path, mod in named:
        if path in nodes:
            continue
        shared = first[id(mod)] if first[id(mod)] != path else None
        f = 0 if shared else flops_of.get(id(mod), 0)
        node = FlopsNode(
            path, type(mod).__name__, f, f // 2, 0 if shared else fwd_of.get(id(mod), 0), shared
        )
        nodes[path] = node
        if path:
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            if parent in nodes and nodes[parent].shared_with is None:
                nodes[parent].children.append(node)
    return nodes[""]


_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12, "P": 10**15}


def parse_tokens(tokens: int | str) -> int:
    """A token count: an int, or a number with K, M, B (= G), T or P.

    Args:
        tokens: e.g. ``2_000_000``, ``"2T"``, ``"300B"``.

    Returns:
        The count (> 0).

    Raises:
        ArgumentError: unreadable or not positive.

    Example:
        >>> parse_tokens("2T"), parse_tokens("1.5M"), parse_tokens(7)
        (2000000000000, 1500000, 7)
    """
    import re

    if isinstance(tokens, int) and not isinstance(tokens, bool):
        value = tokens
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]?)\s*", str(tokens))
        if m is None or m.group(2).upper() not in _SUFFIX:
            raise ArgumentError(
                f"tokens={tokens!r}: expected a count with an optional K, M, B, T suffix, e.g. 2T"
            )
        value = int(float(m.group(1)) * _SUFFIX[m.group(2).upper()])
    if value <= 0:
        raise ArgumentError(f"tokens={tokens!r}: expected a positive count")
    return value


def _config_int(config: Any, keys: Sequence[str]) -> int | None:
    for key in keys:
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def analytic_flops(
    target: Any,
    *,
    seq: int | None = None,
    batch: int = 1,
    tokens: int | str | None = None,
    train: bool = False,
) -> FlopsReport:
    """Transformer FLOPs from the config and the parameter count, no forward (Kaplan et al.
    2020, "Scaling Laws for Neural Language Models", Table 1 and section 2.1).

    Forward per token ``C_f ≈ 2·N + 2·n_layer·n_ctx·d_model`` with ``N`` the non-embedding
    parameters; training ``≈ 3·C_f`` per token (``6·N·D`` for ``D`` tokens).

    Args:
        target: an ``nn.Module`` with a ``config`` (zoo models and transformers models have
            one) or a model TARGET (built on the meta device: nothing runs).
        seq: the context ``n_ctx`` (default: the config's maximum positions).
        batch: sequences per step; ``tokens`` defaults to ``batch × seq``.
        tokens: tokens processed (``D``), e.g. ``"2T"`` for a training run.
        train: forward + backward (3 × the forward).

    Returns:
        A :class:`FlopsReport` with ``method="analytic"`` and the terms in ``details``.

    Raises:
        TargetError: the model has no config with layers and width.

    Example:
        >>> r = analytic_flops("zoo:gpt2", seq=1024)
        >>> r.details["non_embedding_params"], r.flops
        (85056000, 193522040832)
    """
    import torch

    source = None
    if isinstance(target, (str, os.PathLike)):
        from .._targets import resolve_target

        source = os.fspath(target)
        target = resolve_target(source)
    config = getattr(target, "config", None)
    name = source or type(target).__name__
    if not isinstance(target, torch.nn.Module) or config is None:
        raise TargetError(
            f"{name}: the analytic (Kaplan) count needs a transformer with a config "
            "(zoo:NAME, an HF config.json or a transformers model); run a forward instead "
            "(input_shape= or seq=)"
        )
    layers = _config_int(config, ("num_hidden_layers", "n_layer", "num_layers"))
    width = _config_int(config, ("hidden_size", "n_embd", "d_model"))
    vocab = _config_int(config, ("vocab_size",))
    ctx = seq or _config_int(config, ("max_position_embeddings", "n_positions", "n_ctx"))
    if layers is None or width is None or ctx is None:
        raise TargetError(
            f"{name}: the config gives n_layer={layers}, d_model={width}, n_ctx={ctx}; the "
            "Kaplan formula needs all three (give seq= for n_ctx)"
        )
    skip: set[int] = set()
    for mod in target.modules():
        if isinstance(mod, torch.nn.Embedding) or (
            isinstance(mod, torch.nn.Linear) and vocab is not None and mod.out_features == vocab
        ):
            skip.update(id(p) for p in mod.parameters(recurse=False))
    n = sum(p.numel() for p in target.parameters() if id(p) not in skip)
    per_token = 2 * n + 2 * layers * ctx * width
    count = parse_tokens(tokens) if tokens is not None else batch * ctx
    factor = 3 if train else 1
    total = factor * per_token * count
    forward = per_token * count
    notes = [
        CONVENTION,
        "analytic, nothing ran: Kaplan et al. 2020 (arXiv:2001.08361, Table 1): forward per "
        "token C_f = 2·N + 2·n_layer·n_ctx·d_model, N = non-embedding parameters (embeddings "
        "and the output projection left out), d_attn taken as d_model"
        + ("; training = 3·C_f per token (6·N·D)" if train else ""),
        "not in the formula: the logits (2·d_model·vocab per token, in details), "
        "normalisation, softmax and elementwise ops; a forward (seq=) counts the real matmuls",
    ]
    if any(
        _config_int(config, (k,)) for k in ("num_local_experts", "n_routed_experts", "num_experts")
    ):
        notes.append("mixture of experts: N counts every expert, not the active ones per token")
    details: dict[str, Any] = {
        "formula": "kaplan-2020",
        "non_embedding_params": n,
        "n_layer": layers,
        "d_model": width,
        "n_ctx": ctx,
        "tokens": count,
        "train": train,
        "forward_flops_per_token": per_token,
        "logits_flops_per_token": 2 * width * vocab if vocab else 0,
    }
    return FlopsReport(
        flops=total,
        macs=total // 2,
        forward_flops=forward,
        backward_flops=total - forward,
        method="analytic",
        details=details,
        notes=notes,
        source=source,
    )
