"""The traced dependency graph of a model's channels: which tensors lose which slices when a
layer's output channels (or a Linear's output features) go.

The model is traced with :func:`torch.fx.symbolic_trace`'s machinery; a submodule that fx
cannot trace inside becomes a leaf (its inputs and outputs are then opaque). "Channel spaces"
are propagated forward node by node:

- a **producer** (a convolution's output channels, dimension 1; a Linear's output features,
  the last dimension) creates a space;
- per-channel operations pass it through: activations, dropout, pooling, identity, BatchNorm,
  LayerNorm / GroupNorm / RMS-like norms over that dimension (their weight and bias lose the
  entries), a depthwise convolution (``groups == in == out``), arithmetic with a scalar or
  with a tensor that broadcasts over the channels, or with a per-channel parameter (which
  loses the entries);
- element-wise operations between two spaces **join** them: a residual add, a SwiGLU
  ``gate * up`` — every member of the joined space loses the same indices;
- ``torch.cat`` along the channel dimension concatenates spaces (at offsets);
- ``flatten`` of ``(N, C, H, W)`` makes each channel a block of ``H * W`` features (the sizes
  come from the example inputs' shapes, or from an adaptive pooling's output size);
- **consumers** (a convolution's input channels, a Linear's input features) lose the slices.

Anything else that touches a space — ``view``, ``reshape``, ``permute``, indexing,
size-dependent code, an unknown function or leaf module, a grouped convolution, a tied
weight, the model's output — marks the space untraceable, with the reason; every producer of
such a space is refused.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import TargetError

if TYPE_CHECKING:
    import torch

__all__ = ["DepGraph", "Slice", "Space", "trace_graph"]


@dataclass(frozen=True)
class Slice:
    """One tensor that loses entries when units of a space go.

    Attributes:
        module: the owning module's qualified name (``""`` for the root).
        attr: the parameter or buffer name in that module.
        dim: the dimension that loses entries.
        offset: where the space starts along ``dim``.
        block: how many consecutive entries one unit covers (``H * W`` after a flatten).
        buffer: a buffer (running statistics) rather than a parameter.
    """

    module: str
    attr: str
    dim: int
    offset: int = 0
    block: int = 1
    buffer: bool = False

    def indices(self, units: list[int]) -> list[int]:
        """The entries along :attr:`dim` that ``units`` of the space cover.

        Args:
            units: unit indices of the space.

        Returns:
            The tensor indices, ascending within each unit.

        Example:
            >>> Slice("fc", "weight", 1, offset=2, block=3).indices([0, 2])
            [2, 3, 4, 8, 9, 10]
        """
        b, o = self.block, self.offset
        return [o + u * b + j for u in units for j in range(b)]

    @property
    def label(self) -> str:
        """``"module.attr[dim]"`` as the report names it."""
        prefix = f"{self.module}." if self.module else ""
        return f"{prefix}{self.attr}[{self.dim}]"


@dataclass
class Space:
    """A set of channels that must be removed together.

    Attributes:
        size: units in the space.
        producers: ``(module name, kind)`` of the layers writing it; kind is ``"conv"`` or
            ``"linear"``.
        slices: every tensor that loses entries with it.
        bad: why it cannot be shrunk (empty: it can).
    """

    size: int
    producers: list[tuple[str, str]] = field(default_factory=list)
    slices: list[Slice] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Seg:
    space: int | None  # None: channels of fixed width (an input, an embedding, opaque output)
    n: int | None
    block: int = 1


@dataclass(frozen=True)
class _Lay:
    """A tensor carrying channel spaces along ``dim`` (non-negative when ``rank`` is known)."""

    rank: int | None
    dim: int
    segs: tuple[_Seg, ...]
    spatial: tuple[int | None, ...] | None = None  # sizes of the dimensions after ``dim``

    @property
    def neg(self) -> int:
        return self.dim - self.rank if self.rank is not None and self.dim >= 0 else self.dim

    def width(self) -> int | None:
        total = 0
        for s in self.segs:
            if s.n is None:
                return None
            total += s.n * s.block
        return total


@dataclass(frozen=True)
class _Fixed:
    """A tensor that carries no space: shape when known, a parameter's name when it is one."""

    shape: tuple[int, ...] | None = None
    param: tuple[str, str] | None = None
    one_at: int | None = None  # a negative dimension known to be of size 1 (keepdim reduce)


@dataclass(frozen=True)
class _ShapeOf:
    lay: _Lay


_UNARY_FN_NAMES = {
    "relu",
    "relu_",
    "relu6",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "mish",
    "softplus",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "exp",
    "rsqrt",
    "sqrt",
    "neg",
    "abs",
    "square",
    "erf",
    "log",
    "clamp",
    "clamp_min",
    "clamp_max",
    "logsigmoid",
}
_UNARY_METHODS = _UNARY_FN_NAMES | {
    "float",
    "half",
    "bfloat16",
    "double",
    "to",
    "contiguous",
    "clone",
    "detach",
    "type",
    "type_as",
    "pow",
    "sigmoid_",
    "tanh_",
    "clamp_",
    "cpu",
    "cuda",
    "requires_grad_",
}
_BINARY_FN = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
}
_BINARY_NAMES = {
    "add",
    "sub",
    "mul",
    "div",
    "add_",
    "sub_",
    "mul_",
    "div_",
    "multiply",
    "subtract",
    "true_divide",
    "maximum",
    "minimum",
}
_REDUCE_NAMES = {"mean", "sum", "amax", "amin", "var", "std", "norm"}
_POOL_NAMES = {
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "lp_pool2d",
}
_SAFE_ATTRS = {"dtype", "device", "is_cuda", "ndim", "requires_grad", "layout", "is_sparse"}


def _fn_name(target: Any) -> str:
    return getattr(target, "__name__", None) or str(target)


def _std_leaf_types() -> tuple[type, ...]:
    from torch import nn

    names = [
        "Conv1d",
        "Conv2d",
        "Conv3d",
        "ConvTranspose1d",
        "ConvTranspose2d",
        "ConvTranspose3d",
        "Linear",
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "SyncBatchNorm",
        "LayerNorm",
        "GroupNorm",
        "Embedding",
        "EmbeddingBag",
        "RMSNorm",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "InstanceNorm3d",
    ]
    return tuple(getattr(nn, n) for n in names if hasattr(nn, n))


class _Tracer:
    """An fx tracer that keeps standard layers whole and remembers the innermost submodule a
    failed trace was inside."""

    def __new__(cls, leaves: set[str]) -> Any:
        import torch.fx as fx

        std = _std_leaf_types()

        class T(fx.Tracer):
            def __init__(self) -> None:
                super().__init__()
                self.failed: str | None = None

            def is_leaf_module(self, m: Any, qualname: str) -> bool:
                if qualname in leaves or isinstance(m, std):
                    return True
                return bool(super().is_leaf_module(m, qualname))

            def call_module(self, m: Any, forward: Any, args: Any, kwargs: Any) -> Any:
                try:
                    return super().call_module(m, forward, args, kwargs)
                except Exception:
                    if self.failed is None:
                        self.failed = self.path_of_module(m)
                    raise

        return T()


def _trace(model: torch.nn.Module) -> tuple[Any, set[str]]:
    """Trace ``model``, turning submodules fx cannot trace into leaves; ``(graph, leaves)``."""
    leaves: set[str] = set()
    for _ in range(len(list(model.modules())) + 1):
        tracer = _Tracer(leaves)
        try:
            return tracer.trace(model), leaves
        except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
            failed = tracer.failed
            if not failed or failed in leaves:
                raise TargetError(
                    f"{type(model).__name__}: torch.fx cannot trace the model "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                    "shrinking needs a traceable forward"
                ) from None
            leaves.add(failed)
    raise TargetError(
        f"{type(model).__name__}: torch.fx cannot trace the model"
    )  # pragma: no cover


@dataclass
class DepGraph:
    """The spaces of a traced model.

    Attributes:
        spaces: the joined spaces (each once).
        leaves: submodules fx could not trace inside (kept opaque).
    """

    spaces: list[Space]
    leaves: set[str]


class _Builder:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.parent: list[int] = []
        self.sp: list[Space] = []
        self.mod_out: dict[str, _Lay] = {}
        self.mod_in: dict[str, Any] = {}
        names: dict[int, list[str]] = {}
        for mname, mod in model.named_modules(remove_duplicate=False):
            for pname, p in mod.named_parameters(recurse=False, remove_duplicate=False):
                names.setdefault(id(p), []).append(f"{mname}.{pname}" if mname else pname)
        self.tied = {n for ns in names.values() if len(ns) > 1 for n in ns}

    # -- spaces
    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def new(self, size: int, producer: str, kind: str) -> int:
        self.parent.append(len(self.sp))
        self.sp.append(Space(size, [(producer, kind)]))
        return len(self.sp) - 1

    def bad(self, v: Any, reason: str) -> None:
        for lay in self._lays(v):
            for s in lay.segs:
                if s.space is not None:
                    self.sp[self.find(s.space)].bad.append(reason)

    def union(self, a: int, b: int, where: str) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        sa, sb = self.sp[a], self.sp[b]
        if sa.size != sb.size:
            sa.bad.append(f"{where}: joins spaces of {sa.size} and {sb.size} channels")
        self.parent[b] = a
        sa.producers += sb.producers
        sa.slices += sb.slices
        sa.bad += sb.bad

    def add_slice(self, lay: _Lay, module: str, attr: str, dim: int, buffer: bool = False) -> None:
        owner = self.model.get_submodule(module) if module else self.model
        t = getattr(owner, attr, None)
        if t is None:
            return
        full = f"{module}.{attr}" if module else attr
        off = 0
        for s in lay.segs:
            if s.n is None:
                off = -1
                continue
            if s.space is not None:
                if off < 0:
                    self.sp[self.find(s.space)].bad.append(
                        f"{full}: follows a concatenated tensor of unknown width"
                    )
                elif full in self.tied:
                    self.sp[self.find(s.space)].bad.append(f"{full}: tied weight")
                else:
                    self.sp[self.find(s.space)].slices.append(
                        Slice(module, attr, dim, off, s.block, buffer)
                    )
            if off >= 0:
                off += s.n * s.block
        if off >= 0 and (t.dim() <= dim or t.shape[dim] != off):
            self.bad(
                lay,
                f"{full}: expected {off} entries along dimension {dim}, "
                f"found shape {tuple(t.shape)}",
            )

    def _lays(self, v: Any) -> list[_Lay]:
        import torch.fx as fx

        out: list[_Lay] = []
        fx.node.map_aggregate(v, lambda x: out.append(x) if isinstance(x, _Lay) else None)
        if isinstance(v, _ShapeOf):
            out.append(v.lay)
        return out

    # -- helpers
    def nd(self, lay: _Lay, d: int) -> int | None:
        """Dimension ``d`` of ``lay``'s tensor in the form ``lay.dim`` uses, or ``None``."""
        if lay.rank is not None:
            return d % lay.rank if -lay.rank <= d < lay.rank else None
        return d if d < 0 else None

    def is_dim(self, lay: _Lay, d: int) -> bool:
        return self.nd(lay, d) == lay.dim

    def join(self, a: Any, b: Any, where: str) -> Any:
        if isinstance(a, _Lay) and isinstance(b, _Lay):
            if a.neg != b.neg or [(s.n, s.block) for s in a.segs] != [
                (s.n, s.block) for s in b.segs
            ]:
                self.bad(a, f"{where}: joins tensors whose channels do not line up")
                self.bad(b, f"{where}: joins tensors whose channels do not line up")
                return a
            for sa, sb in zip(a.segs, b.segs, strict=True):
                if sa.space is not None and sb.space is not None:
                    self.union(sa.space, sb.space, where)
                elif sa.space is not None or sb.space is not None:
                    self.bad(a, f"{where}: joined with a tensor of fixed width")
                    self.bad(b, f"{where}: joined with a tensor of fixed width")
            return a if a.rank is not None else b
        lay, other = (a, b) if isinstance(a, _Lay) else (b, a)
        if not isinstance(lay, _Lay):
            return _Fixed() if isinstance(a, _Fixed) or isinstance(b, _Fixed) else None
        if other is None or isinstance(other, (int, float, bool)):
            return lay
        if isinstance(other, _Fixed):
            neg = lay.neg
            if neg >= 0:
                self.bad(lay, f"{where}: combined with a tensor of unknown rank")
                return lay
            if other.one_at is not None and other.one_at == neg:
                return lay
            if other.shape is None:
                self.bad(
                    lay,
                    f"{where}: combined with a tensor of fixed width "
                    "(the model input or an embedding?)",
                )
                return lay
            pos = len(other.shape) + neg
            if pos < 0 or other.shape[pos] == 1:
                return lay
            if other.param is not None and other.shape[pos] == lay.width():
                self.add_slice(lay, other.param[0], other.param[1], pos)
                return lay
            self.bad(lay, f"{where}: combined with a tensor of fixed width {tuple(other.shape)}")
            return lay
        self.bad(lay, f"{where}: combined with {type(other).__name__}")
        return lay


def _meta_shape(node: Any) -> tuple[int, ...] | None:
    tm = node.meta.get("tensor_meta")
    shape = getattr(tm, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def trace_graph(model: torch.nn.Module, example_inputs: Any = None) -> DepGraph:
    """Trace ``model`` and return its channel spaces.

    Args:
        model: the model (not changed; with ``example_inputs`` it runs once in eval mode).
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs;
            gives every node its shape (needed for flatten → Linear unless an adaptive pooling
            fixes the spatial size).

    Returns:
        The :class:`DepGraph`.

    Raises:
        TargetError: fx cannot trace the model even with untraceable submodules as leaves.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                         torch.nn.Linear(8, 2))
        >>> g = trace_graph(m)
        >>> [(s.producers[0][0], s.size, s.bad == []) for s in g.spaces]
        [('0', 8, True), ('2', 2, False)]
    """
    import torch
    import torch.fx as fx

    graph, leaves = _trace(model)
    if example_inputs is not None:
        from torch.fx.passes.shape_prop import ShapeProp

        gm = fx.GraphModule(model, graph)
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if isinstance(example_inputs, dict):
            args = [example_inputs[n.target] for n in placeholders if n.target in example_inputs]
        elif isinstance(example_inputs, (tuple, list)):
            args = list(example_inputs)
        else:
            args = [example_inputs]
        modes = [(m, m.training) for m in model.modules()]
        try:
            model.eval()
            with torch.no_grad():
                ShapeProp(gm).propagate(*args)
        except Exception as exc:
            raise TargetError(
                f"{type(model).__name__}: example_inputs: the traced model does not run on "
                f"them ({type(exc).__name__}: {exc})"
            ) from None
        finally:
            for m, training in modes:
                m.training = training
    b = _Builder(model)
    env: dict[Any, Any] = {}
    for node in graph.nodes:
        env[node] = _visit(b, node, env, model)
        val = env[node]
        shape = _meta_shape(node)
        if isinstance(val, _Lay) and shape is not None:
            rank = len(shape)
            dim = val.dim if val.dim >= 0 else val.dim + rank
            env[node] = _Lay(rank, dim, val.segs, tuple(shape[dim + 1 :]))
    roots = sorted({b.find(i) for i in range(len(b.sp))})
    return DepGraph([b.sp[i] for i in roots], leaves)


def _val_of(env: dict[Any, Any], a: Any) -> Any:
    import torch.fx as fx

    return fx.node.map_aggregate(a, lambda x: env[x] if isinstance(x, fx.Node) else x)


def _visit(b: _Builder, node: Any, env: dict[Any, Any], model: Any) -> Any:
    op = node.op
    shape = _meta_shape(node)
    if op == "placeholder":
        return _Fixed(shape)
    if op == "get_attr":
        mod, _, attr = node.target.rpartition(".")
        owner = model.get_submodule(mod) if mod else model
        t = getattr(owner, attr, None)
        tshape = tuple(t.shape) if hasattr(t, "shape") else None
        return _Fixed(tshape, (mod, attr))
    args = _val_of(env, node.args)
    kwargs = _val_of(env, node.kwargs)
    if op == "output":
        b.bad(args, "reaches the model output (its width must not change)")
        return None
    if op == "call_module":
        return _module(b, node.target, model.get_submodule(node.target), args, kwargs, shape)
    name = _fn_name(node.target)
    where = f"{name} ({node.name})"
    if op == "call_method":
        return _method(b, name, args, kwargs, shape, where)
    return _function(b, node.target, name, args, kwargs, shape, where)


def _unknown(b: _Builder, where: str, args: Any, kwargs: Any, shape: Any) -> Any:
    b.bad((args, kwargs), f"used by {where}, which shrinking cannot follow")
    return _Fixed(shape)


def _arg(args: Any, kwargs: Any, i: int, key: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(key, default)


def _reduce(b: _Builder, lay: _Lay, dims: Any, keep: bool, where: str, shape: Any) -> Any:
    if dims is None:
        return _Fixed(shape)
    ds = [dims] if isinstance(dims, int) else list(dims)
    norm = [b.nd(lay, d) for d in ds]
    if any(n is None for n in norm):
        b.bad(lay, f"{where}: reduces dimensions of unknown position")
        return _Fixed(shape)
    if lay.dim in norm:
        return _Fixed(shape, one_at=lay.neg if keep else None)
    if keep:
        return lay
    if lay.rank is None:
        return _Lay(None, lay.dim, lay.segs)
    before = sum(1 for n in norm if n is not None and n < lay.dim)
    return _Lay(lay.rank - len(norm), lay.dim - before, lay.segs)


def _flatten(b: _Builder, lay: _Lay, start: int, end: int, where: str) -> Any:
    if lay.rank is None:
        b.bad(lay, f"{where}: flatten of a tensor of unknown rank")
        return _Fixed()
    s, e = start % lay.rank, end % lay.rank
    if e < lay.dim or s > lay.dim:
        d = lay.dim if lay.dim < s else lay.dim - (e - s)
        return _Lay(lay.rank - (e - s), d, lay.segs)
    if s < lay.dim:
        b.bad(lay, f"{where}: flattens dimensions before the channels")
        return _Fixed()
    inner = lay.spatial[: e - s] if lay.spatial is not None else None
    if inner is None or len(inner) != e - s or any(v is None for v in inner):
        b.bad(lay, f"{where}: flatten needs the spatial size; pass example_inputs")
        return _Fixed()
    block = 1
    for v in inner:
        block *= int(v)  # type: ignore[arg-type]
    segs = tuple(_Seg(g.space, g.n, g.block * block) for g in lay.segs)
    rest = lay.spatial[e - s :] if lay.spatial is not None else None
    return _Lay(lay.rank - (e - s), lay.dim, segs, rest)


def _cat(b: _Builder, items: list[Any], dim: int, where: str, shape: Any) -> Any:
    lays = [x for x in items if isinstance(x, _Lay)]
    if not lays:
        return _Fixed(shape)
    ref = lays[0]
    if not all(b.is_dim(x, dim) for x in lays):
        if all(isinstance(x, _Lay) for x in items) and all(
            x.neg == ref.neg for x in lays
        ):  # along another dimension: the same channels, joined
            out = ref
            for x in lays[1:]:
                out = b.join(out, x, where)
            return out
        b.bad(items, f"{where}: concatenates along a dimension that is not the channels")
        return _Fixed(shape)
    segs: list[_Seg] = []
    for x in items:
        if isinstance(x, _Lay):
            segs += x.segs
        elif isinstance(x, _Fixed) and x.shape is not None:
            segs.append(_Seg(None, x.shape[dim]))
        else:
            segs.append(_Seg(None, None))
    return _Lay(ref.rank, ref.dim, tuple(segs))


def _function(
    b: _Builder, target: Any, name: str, args: Any, kwargs: Any, shape: Any, where: str
) -> Any:
    import torch
    import torch.nn.functional as F

    x = args[0] if args else None
    if target in _BINARY_FN or (
        name in _BINARY_NAMES
        and getattr(target, "__module__", "") in ("torch", None)
        and len(args) >= 2
    ):
        if len(args) >= 2 and not kwargs:
            return b.join(args[0], args[1], where)
        return _unknown(b, where, args, kwargs, shape)
    if target is getattr:
        if isinstance(x, _Lay):
            if args[1] in _SAFE_ATTRS:
                return None
            if args[1] == "shape":
                return _ShapeOf(x)
            return _unknown(b, where, args, kwargs, shape)
        return _Fixed(shape) if args[1] not in _SAFE_ATTRS else None
    if target is operator.getitem:
        if isinstance(x, _ShapeOf):
            i = args[1]
            if isinstance(i, int) and b.nd(x.lay, i) is not None and not b.is_dim(x.lay, i):
                return None
            return _unknown(b, f"{where} (the channel count)", (x.lay,), {}, shape)
        if isinstance(x, _Lay):
            return _unknown(b, f"{where} (indexing)", args, kwargs, shape)
        return _unknown(b, where, args, kwargs, shape) if b._lays(args) else _Fixed(shape)
    if target in (torch.flatten,):
        if isinstance(x, _Lay):
            return _flatten(
                b,
                x,
                _arg(args, kwargs, 1, "start_dim", 0),
                _arg(args, kwargs, 2, "end_dim", -1),
                where,
            )
    elif target in (torch.cat, torch.concat) or name in ("cat", "concat"):
        items = _arg(args, kwargs, 0, "tensors", [])
        return _cat(b, list(items), _arg(args, kwargs, 1, "dim", 0), where, shape)
    elif name in _POOL_NAMES and getattr(F, name, None) is target:
        if isinstance(x, _Lay):
            if not b.is_dim(x, 1):
                return _unknown(b, where, args, kwargs, shape)
            out = _arg(args, kwargs, 1, "output_size")
            sp = None
            if name.startswith("adaptive") and out is not None:
                sp = (out,) * int(name[-2]) if isinstance(out, int) else tuple(out)
            return _Lay(x.rank, x.dim, x.segs, sp)
    elif name in _REDUCE_NAMES and getattr(torch, name, None) is target:
        if isinstance(x, _Lay) and not b._lays((args[1:], kwargs)):
            return _reduce(
                b,
                x,
                _arg(args, kwargs, 1, "dim"),
                bool(_arg(args, kwargs, 2, "keepdim", False)),
                where,
                shape,
            )
    elif (
        name in _UNARY_FN_NAMES
        and target in (getattr(F, name, None), getattr(torch, name, None))
        and isinstance(x, _Lay)
        and not b._lays((args[1:], kwargs))
    ):
        return x
    if b._lays((args, kwargs)):
        return _unknown(b, where, args, kwargs, shape)
    return _Fixed(shape)


def _method(b: _Builder, name: str, args: Any, kwargs: Any, shape: Any, where: str) -> Any:
    x = args[0] if args else None
    if not isinstance(x, _Lay):
        if b._lays((args, kwargs)):
            if name in _BINARY_NAMES and len(args) == 2 and not kwargs:
                return b.join(x, args[1], where)
            return _unknown(b, where, args, kwargs, shape)
        return _Fixed(shape) if name not in ("dim", "size", "numel") else None
    rest = (args[1:], kwargs)
    if name in _BINARY_NAMES and len(args) == 2 and not kwargs:
        return b.join(x, args[1], where)
    if name in _UNARY_METHODS and not b._lays(rest):
        return x
    if name == "dim":
        return None
    if name == "size":
        d = _arg(args, kwargs, 1, "dim")
        if d is None:
            return _ShapeOf(x)
        if isinstance(d, int) and b.nd(x, d) is not None and not b.is_dim(x, d):
            return None
    elif name == "flatten":
        return _flatten(
            b, x, _arg(args, kwargs, 1, "start_dim", 0), _arg(args, kwargs, 2, "end_dim", -1), where
        )
    elif name in _REDUCE_NAMES and not b._lays(rest):
        return _reduce(
            b,
            x,
            _arg(args, kwargs, 1, "dim"),
            bool(_arg(args, kwargs, 2, "keepdim", False)),
            where,
            shape,
        )
    return _unknown(b, where, args, kwargs, shape)


def _module(b: _Builder, name: str, mod: Any, args: Any, kwargs: Any, shape: Any) -> Any:
    from torch import nn

    x = args[0] if args else None
    where = f"{name} ({type(mod).__name__})"
    extra = b._lays((args[1:], kwargs))
    if extra:
        return _unknown(b, where, args, kwargs, shape)
    stateful = any(True for _ in mod.parameters(recurse=False)) or any(
        True for _ in mod.buffers(recurse=False)
    )
    if stateful and name in b.mod_in:  # called again: its inputs must be the same channels
        prev = b.mod_in[name]
        if isinstance(x, _Lay) or isinstance(prev, _Lay):
            x = b.join(prev, x, where)
    if stateful:
        b.mod_in.setdefault(name, x)
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        nd = int(type(mod).__name__[-2])
        g = mod.groups
        if g == mod.in_channels == mod.out_channels and g > 1:  # depthwise: passes through
            if not isinstance(x, _Lay):
                return _Fixed(shape)
            if not b.is_dim(x, 1) and not (x.rank is None and x.dim == -(nd + 1)):
                return _unknown(b, where, args, kwargs, shape)
            b.add_slice(x, name, "weight", 0)
            if mod.bias is not None:
                b.add_slice(x, name, "bias", 0)
            return _Lay(x.rank if x.rank is not None else nd + 2, 1, x.segs)
        if isinstance(x, _Lay):
            if g != 1:
                b.bad(x, f"{where}: grouped convolution (groups={g}) reads it")
            elif b.is_dim(x, 1) or (x.rank is None and x.dim == -(nd + 1)):
                b.add_slice(x, name, "weight", 1)
            else:
                b.bad(x, f"{where}: reads a dimension that is not its channels")
        if name in b.mod_out:
            return b.mod_out[name]
        s = b.new(mod.out_channels, name, "conv")
        if g != 1:
            b.sp[s].bad.append(f"{where}: grouped convolution (groups={g})")
        lay = _Lay(
            x.rank if isinstance(x, _Lay) and x.rank else nd + 2, 1, (_Seg(s, mod.out_channels),)
        )
        b.add_slice(lay, name, "weight", 0)
        if mod.bias is not None:
            b.add_slice(lay, name, "bias", 0)
        b.mod_out[name] = lay
        return lay
    if isinstance(mod, nn.Linear):
        rank = None
        if isinstance(x, _Lay):
            rank = x.rank
            if x.neg == -1:
                b.add_slice(x, name, "weight", 1)
            else:
                b.bad(x, f"{where}: reads a dimension that is not its channels")
        elif isinstance(x, _Fixed) and x.shape is not None:
            rank = len(x.shape)
        if shape is not None:
            rank = len(shape)
        if name in b.mod_out:
            return b.mod_out[name]
        s = b.new(mod.out_features, name, "linear")
        lay = _Lay(rank, rank - 1 if rank else -1, (_Seg(s, mod.out_features),))
        b.add_slice(lay, name, "weight", 0)
        if mod.bias is not None:
            b.add_slice(lay, name, "bias", 0)
        b.mod_out[name] = lay
        return lay
    if not isinstance(x, _Lay):
        return _Fixed(shape)
    bn = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    if isinstance(mod, bn) or (
        isinstance(mod, nn.GroupNorm) and mod.num_groups in (1, mod.num_channels)
    ):
        if not b.is_dim(x, 1):
            return _unknown(b, where, args, kwargs, shape)
        for attr in ("weight", "bias"):
            if getattr(mod, attr, None) is not None:
                b.add_slice(x, name, attr, 0)
        for attr in ("running_mean", "running_var"):
            if getattr(mod, attr, None) is not None:
                b.add_slice(x, name, attr, 0, buffer=True)
        return x
    rms = getattr(nn, "RMSNorm", ())
    if isinstance(mod, (nn.LayerNorm, *([rms] if rms else []))):
        if x.neg != -1 or len(tuple(mod.normalized_shape)) != 1:
            return _unknown(b, where, args, kwargs, shape)
        for attr in ("weight", "bias"):
            if getattr(mod, attr, None) is not None:
                b.add_slice(x, name, attr, 0)
        return x
    passing = (
        nn.ReLU,
        nn.ReLU6,
        nn.GELU,
        nn.SiLU,
        nn.Sigmoid,
        nn.Tanh,
        nn.LeakyReLU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.Hardswish,
        nn.Hardsigmoid,
        nn.Hardtanh,
        nn.Mish,
        nn.Softplus,
        nn.Dropout,
        nn.Dropout1d,
        nn.Dropout2d,
        nn.Dropout3d,
        nn.AlphaDropout,
        nn.Identity,
    )
    if isinstance(mod, passing):
        return x
    pools = (
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.MaxPool3d,
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AvgPool3d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveAvgPool3d,
        nn.AdaptiveMaxPool1d,
        nn.AdaptiveMaxPool2d,
        nn.AdaptiveMaxPool3d,
    )
    if isinstance(mod, pools):
        if not b.is_dim(x, 1):
            return _unknown(b, where, args, kwargs, shape)
        sp = None
        out = getattr(mod, "output_size", None)
        if out is not None:
            n = int(type(mod).__name__[-2])
            sp = (out,) * n if isinstance(out, int) else tuple(out)
        return _Lay(x.rank, x.dim, x.segs, sp)
    if isinstance(mod, nn.Flatten):
        return _flatten(b, x, mod.start_dim, mod.end_dim, where)
    return _unknown(b, where, args, kwargs, shape)
