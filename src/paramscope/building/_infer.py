"""Rebuild a runnable ``nn.Sequential`` from a bare state dict: names and shapes only.

:func:`infer_model` recognises simple stacks, the kind a bare state dict of a tutorial model holds:

- **Linear stacks**: 2-D weights ``(out, in)`` with optional biases, each layer's
  ``in_features`` equal to the previous layer's ``out_features``.
- **Conv2d … Linear stacks**: 4-D weights ``(out, in / groups, kh, kw)`` (``groups`` follows
  from the channels coming in), optional BatchNorm layers (entries ``weight``, ``bias``,
  ``running_mean``, ``running_var``, ``num_batches_tracked``; ``BatchNorm2d`` after a
  convolution, ``BatchNorm1d`` after a Linear layer), then Linear layers.

**Names.** Either ``nn.Sequential`` indices (``0.weight``, ``2.weight``, ...) or module names
(``fc1.weight``, ``conv1.weight``, ``bn1.running_mean``, ...), one level deep.

- *Indices*: the result uses the same indices. A gap between two layers holds parameter-free
  modules: its first slot gets the activation, the rest ``nn.Identity()``; no gap, no
  activation (``Conv2d`` at 0 and ``BatchNorm2d`` at 1 run back to back). Between the last
  convolution and the first Linear layer the gap ends with the flattening modules (below), and
  a gap of one slot holds only the ``Flatten``; modules that find no free slot are added under
  names (``pool``, ``flatten``). Slots before the first layer hold ``nn.Identity()`` (the
  last one ``nn.Flatten()`` when the stack starts with a Linear layer).
- *Module names*: an activation (``act1``, ``act2``, ...) follows every layer but the last,
  except a convolution or Linear layer directly followed by its BatchNorm.

**From convolutions to Linear layers** the result inserts ``nn.Flatten()`` (in the gap's last
slot, or as ``flatten``). How many features the flattening gives depends on the image size,
which no weight records, so ``flatten`` decides:

- ``"auto"`` (default): when the first Linear layer takes exactly as many features as the
  last convolution has channels, insert ``nn.AdaptiveAvgPool2d((1, 1))`` (global pooling, as
  in ResNet); otherwise compute the flattened size from ``input_shape=(C, H, W)`` and insert
  a plain ``Flatten`` when it matches; without ``input_shape`` raise :class:`InferError`
  saying what is ambiguous.
- ``"flatten"``: a plain ``Flatten`` (checked against ``input_shape`` when given).
- ``"pool"``: global average pooling, then ``Flatten``.
- ``(h, w)``: ``nn.AdaptiveAvgPool2d((h, w))`` then ``Flatten`` (VGG's ``(7, 7)``): works for
  any input size.

**What the weights cannot tell** takes torch's defaults: convolutions get stride 1, padding 0
and dilation 1; pooling, dropout and other parameter-free layers are not restored (a gap
becomes activation + ``Identity``); the activation kind is ``activation``. The result holds
exactly the given parameters (``load_state_dict(strict=True)``), so its ``state_dict()`` keys
equal the input names and its values equal the input tensors; it computes what the original
model computed when the original used those defaults.

Anything else (attention, embeddings next to norms, 1-D / 3-D / 5-D weights, nested names,
chains whose sizes do not connect) raises :class:`InferError` naming the first entry that
breaks the pattern and why.

Example:
    >>> import torch
    >>> state = {"fc1.weight": torch.randn(10, 20), "fc1.bias": torch.zeros(10)}
    >>> infer_model(state)(torch.randn(1, 20)).shape
    torch.Size([1, 10])
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import InferError

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict

__all__ = ["InferError", "infer_model"]

_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
_KNOWN = ("weight", "bias", *_BN_STATS)


@dataclass
class _Layer:
    """One parameterised layer read off the state dict."""

    key: str  # module name / index in the result
    kind: str  # "linear" | "conv" | "bn"
    entry: str  # its first entry's name, for messages
    tensors: dict[str, torch.Tensor]
    in_: int = 0  # in features / in channels (per group for conv) / num features (bn)
    out: int = 0
    groups: int = 1
    bn_dim: int = 1


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _entries(state: Any) -> dict[str, torch.Tensor]:
    import torch

    from .._paramdict import ParamDict

    if isinstance(state, (str, os.PathLike)):
        from ..io import load

        state = load(state)
    if isinstance(state, ParamDict):
        return state.state_dict()
    if not isinstance(state, Mapping):
        raise InferError(
            "", f"expected a state dict, a ParamDict or a checkpoint path, got {type(state)}"
        )
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise InferError(str(name), f"expected a tensor, got {type(value).__name__}")
        out[str(name)] = value
    if not out:
        raise InferError("", "the state dict is empty: nothing to infer a model from")
    return out


def _group(entries: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Entries by module name, in first-seen order; one level of nesting only."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in entries.items():
        prefix, _, leaf = name.rpartition(".")
        if not prefix:
            raise InferError(
                name,
                "has no module prefix; infer_model rebuilds nn.Sequential stacks whose names "
                "look like '0.weight' or 'fc1.weight'",
            )
        if "." in prefix:
            raise InferError(
                name,
                "is nested (module path with dots); infer_model rebuilds flat stacks whose "
                "names look like '0.weight' or 'fc1.weight'",
            )
        if leaf not in _KNOWN:
            raise InferError(
                name,
                f"unknown entry kind {leaf!r} (attention, embedding or custom layers are not "
                "inferred); expected weight, bias, running_mean, running_var or "
                "num_batches_tracked",
            )
        groups.setdefault(prefix, {})[leaf] = t
    return groups


def _classify(key: str, ts: dict[str, torch.Tensor]) -> _Layer:
    def name(leaf: str) -> str:
        return f"{key}.{leaf}"

    first = name(next(iter(ts)))
    if any(s in ts for s in _BN_STATS):
        for need in ("running_mean", "running_var", "num_batches_tracked"):
            if need not in ts:
                raise InferError(
                    first,
                    f"BatchNorm layer {key!r} lacks {name(need)!r}; a BatchNorm state holds "
                    "running_mean, running_var and num_batches_tracked (add "
                    "torch.tensor(0) for an old checkpoint without the counter)",
                )
        mean = ts["running_mean"]
        if mean.dim() != 1:
            raise InferError(name("running_mean"), f"expected 1-D, got shape {_shape(mean)}")
        c = _shape(mean)[0]
        if ("weight" in ts) != ("bias" in ts):
            has = "weight" if "weight" in ts else "bias"
            raise InferError(name(has), "a BatchNorm layer has both weight and bias, or neither")
        for leaf in ("running_var", "weight", "bias"):
            if leaf in ts and _shape(ts[leaf]) != (c,):
                raise InferError(
                    name(leaf), f"expected shape ({c},) like running_mean, got {_shape(ts[leaf])}"
                )
        return _Layer(key, "bn", first, ts, in_=c, out=c)
    if "weight" not in ts:
        raise InferError(name("bias"), f"has no matching {name('weight')!r}")
    w = ts["weight"]
    shape = _shape(w)
    if w.dim() == 2:
        layer = _Layer(key, "linear", first, ts, in_=shape[1], out=shape[0])
    elif w.dim() == 4:
        layer = _Layer(key, "conv", first, ts, in_=shape[1], out=shape[0])
    else:
        guess = {
            1: " (LayerNorm, GroupNorm or a BatchNorm without running stats: ambiguous)",
            3: " (Conv1d?)",
            5: " (Conv3d?)",
        }.get(w.dim(), "")
        raise InferError(
            name("weight"),
            f"{w.dim()}-D weight {shape}{guess}; infer_model rebuilds Linear (2-D weight), "
            "Conv2d (4-D weight) and BatchNorm (with running stats) layers only",
        )
    if "bias" in ts and _shape(ts["bias"]) != (shape[0],):
        raise InferError(
            name("bias"),
            f"expected shape ({shape[0]},) to match the weight, got {_shape(ts['bias'])}",
        )
    return layer


def _activation(activation: str | Callable[[], torch.nn.Module] | None) -> Callable[[], Any]:
    import torch

    if activation is None:
        return torch.nn.Identity
    if isinstance(activation, str):
        from ._spec import SpecError, nn_class

        try:
            factory: Callable[[], Any] = nn_class(activation, "activation")
        except SpecError as exc:
            raise InferError("", str(exc)) from None
    else:
        factory = activation
    probe = factory()
    if not isinstance(probe, torch.nn.Module) or any(True for _ in probe.state_dict()):
        raise InferError(
            "",
            f"activation={activation!r}: expected a parameter-free torch.nn module "
            "(ReLU, GELU, Tanh ...) so the state dict keys stay the input's",
        )
    return factory


def _check_flatten(flatten: Any) -> str | tuple[int, int]:
    if flatten in ("auto", "flatten", "pool"):
        return str(flatten)
    if (
        isinstance(flatten, (tuple, list))
        and len(flatten) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in flatten)
    ):
        return (int(flatten[0]), int(flatten[1]))
    raise InferError(
        "", f"flatten={flatten!r}: expected 'auto', 'flatten', 'pool' or (h, w) positive ints"
    )


class _Chain:
    """Walks the layers, checking sizes and deciding the Conv → Linear transition."""

    def __init__(self, input_shape: tuple[int, ...] | None, flatten: str | tuple[int, int]):
        self.input_shape = input_shape
        self.flatten = flatten
        self.mode = "input"  # "input" | "conv" | "linear"
        self.width: int | None = None  # channels / features flowing out of the last layer
        self.last = ""  # the last layer's key
        self.hw: tuple[int, int] | None = None  # spatial size, when input_shape is known
        self.transition: list[str] = []  # modules before the first Linear: "pool(h,w)"…
        self.lead_flatten = False

    def feed(self, layer: _Layer) -> None:
        if layer.kind == "conv":
            self.conv(layer)
        elif layer.kind == "bn":
            self.bn(layer)
        else:
            self.linear(layer)
        self.last = layer.key

    def _source(self) -> str:
        return f"the previous layer {self.last!r}"

    def conv(self, layer: _Layer) -> None:
        w = layer.tensors["weight"]
        out, per_group, kh, kw = _shape(w)
        if self.mode == "linear":
            raise InferError(
                layer.entry,
                "a Conv2d after a Linear layer; infer_model rebuilds Conv2d stacks followed by "
                "Linear layers, not the reverse",
            )
        width = self.width
        if width is None and self.input_shape is not None:
            if len(self.input_shape) != 3:
                raise InferError(
                    layer.entry,
                    f"a Conv2d stack takes input_shape=(C, H, W), got {self.input_shape}",
                )
            width = self.input_shape[0]
            self.hw = (self.input_shape[1], self.input_shape[2])
        if width is not None:
            source = self._source() if self.width is not None else "input_shape"
            if width % per_group or out % (width // per_group):
                raise InferError(
                    layer.entry,
                    f"takes {per_group} input channels per group, which does not divide the "
                    f"{width} channels of {source}",
                )
            layer.groups = width // per_group
        layer.in_ = per_group * layer.groups
        if self.hw is not None:
            h, w_ = self.hw[0] - kh + 1, self.hw[1] - kw + 1
            if h < 1 or w_ < 1:
                raise InferError(
                    layer.entry,
                    f"a {kh}x{kw} kernel does not fit the {self.hw[0]}x{self.hw[1]} feature map "
                    f"(input_shape={self.input_shape}; convolutions are rebuilt with stride 1, "
                    "padding 0)",
                )
            self.hw = (h, w_)
        self.mode, self.width = "conv", out

    def bn(self, layer: _Layer) -> None:
        if self.width is not None and layer.in_ != self.width:
            raise InferError(
                layer.entry,
                f"normalises {layer.in_} features but {self._source()} gives {self.width}",
            )
        if self.mode != "input":  # a leading BatchNorm takes the kind of the layer after it
            layer.bn_dim = 2 if self.mode == "conv" else 1
        self.width = layer.in_

    def linear(self, layer: _Layer) -> None:
        if self.mode == "conv":
            self.to_linear(layer)
        elif self.width is not None and layer.in_ != self.width:
            raise InferError(
                layer.entry,
                f"has in_features {layer.in_} but {self._source()} gives {self.width} outputs",
            )
        elif self.mode == "input" and self.input_shape is not None:
            n = math.prod(self.input_shape)
            if n != layer.in_:
                raise InferError(
                    layer.entry,
                    f"has in_features {layer.in_} but input_shape={self.input_shape} has {n}",
                )
            self.lead_flatten = len(self.input_shape) > 1
        self.mode, self.width = "linear", layer.out

    def to_linear(self, layer: _Layer) -> None:
        f, c = layer.in_, self.width or 0
        if f % c:
            raise InferError(
                layer.entry,
                f"has in_features {f}, not a multiple of the {c} channels of {self._source()}, "
                "so no flattening of its feature maps fits",
            )
        mode = self.flatten
        flat = None if self.hw is None else c * self.hw[0] * self.hw[1]
        if mode == "auto":
            if f == c:
                mode = "pool"
            elif flat is not None:
                mode = "flatten"
            else:
                raise InferError(
                    layer.entry,
                    f"the Linear layer takes {f} features but the last Conv2d "
                    f"({self.last!r}) gives {c} channels: the flattened size {c} x H x W "
                    "depends on the input image size, which the weights do not record. Pass "
                    "input_shape=(C, H, W) to compute it, or flatten=(h, w) with h * w = "
                    f"{f // c} to insert AdaptiveAvgPool2d((h, w)) before Flatten",
                )
        if mode == "flatten":
            if flat is not None and flat != f:
                assert self.hw is not None
                raise InferError(
                    layer.entry,
                    f"has in_features {f} but flattening the {c} x {self.hw[0]} x {self.hw[1]} "
                    f"feature maps of input_shape={self.input_shape} gives {flat} (convolutions "
                    f"are rebuilt with stride 1, padding 0); pass flatten=(h, w) with h * w = "
                    f"{f // c} to pool to a fixed size instead",
                )
            self.transition = ["flatten"]
        elif mode == "pool":
            if f != c:
                raise InferError(
                    layer.entry,
                    f"flatten='pool' gives {c} features but the Linear layer takes {f}",
                )
            self.transition = ["pool:1:1", "flatten"]
        else:
            h, w = mode  # type: ignore[misc]
            if c * h * w != f:
                raise InferError(
                    layer.entry,
                    f"flatten=({h}, {w}) gives {c} x {h} x {w} = {c * h * w} features but the "
                    f"Linear layer takes {f}",
                )
            self.transition = [f"pool:{h}:{w}", "flatten"]


def _make(layer: _Layer) -> torch.nn.Module:
    import torch

    ts = layer.tensors
    if layer.kind == "linear":
        return torch.nn.Linear(layer.in_, layer.out, bias="bias" in ts, dtype=ts["weight"].dtype)
    if layer.kind == "conv":
        _, _, kh, kw = _shape(ts["weight"])
        return torch.nn.Conv2d(
            layer.in_,
            layer.out,
            (kh, kw),
            groups=layer.groups,
            bias="bias" in ts,
            dtype=ts["weight"].dtype,
        )
    cls = torch.nn.BatchNorm2d if layer.bn_dim == 2 else torch.nn.BatchNorm1d
    return cls(layer.in_, affine="weight" in ts, dtype=ts["running_mean"].dtype)


def _filler(tag: str, act: Callable[[], Any]) -> torch.nn.Module:
    import torch

    if tag == "act":
        return act()  # type: ignore[no-any-return]
    if tag == "flatten":
        return torch.nn.Flatten()
    if tag.startswith("pool:"):
        _, h, w = tag.split(":")
        return torch.nn.AdaptiveAvgPool2d((int(h), int(w)))
    return torch.nn.Identity()


def _fresh(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}{i}"
    taken.add(name)
    return name


def _layout(
    layers: list[_Layer], tails: dict[str, list[str]], lead_flatten: bool, indexed: bool
) -> list[tuple[str, str | _Layer]]:
    """The module sequence: (name, layer or filler tag) pairs."""
    taken = {layer.key for layer in layers}
    out: list[tuple[str, str | _Layer]] = []
    if indexed:
        lead = int(layers[0].key)
        tags = ["identity"] * lead
        if layers[0].kind == "linear" and lead:
            tags[-1] = "flatten"
        elif lead_flatten:
            out.append((_fresh("flatten", taken), "flatten"))
        out.extend((str(i), t) for i, t in enumerate(tags))
        for prev, layer in zip([None, *layers], layers, strict=False):
            if prev is not None:
                slots = [str(i) for i in range(int(prev.key) + 1, int(layer.key))]
                tail = tails.get(layer.key, [])
                # the first slot is the activation, unless a 1-slot gap must hold the Flatten
                act = ["act"] if len(slots) > (1 if tail else 0) else []
                spare = max(0, len(slots) - len(act) - len(tail))
                tags = act + ["identity"] * spare + tail
                names = slots + [_fresh(t.split(":")[0], taken) for t in tags[len(slots) :]]
                out.extend(zip(names, tags, strict=True))
            out.append((layer.key, layer))
        return out
    if lead_flatten:
        out.append((_fresh("flatten", taken), "flatten"))
    n_act = 0
    for prev, layer in zip([None, *layers], layers, strict=False):
        if prev is not None:
            tags = [] if layer.kind == "bn" and prev.kind != "bn" else ["act"]
            for tag in tags + tails.get(layer.key, []):
                if tag == "act":
                    n_act += 1
                    out.append((_fresh(f"act{n_act}", taken), tag))
                else:
                    out.append((_fresh(tag.split(":")[0], taken), tag))
        out.append((layer.key, layer))
    return out


def infer_model(
    state: Mapping[str, torch.Tensor] | ParamDict | str | os.PathLike[str],
    *,
    activation: str | Callable[[], torch.nn.Module] | None = "ReLU",
    flatten: str | tuple[int, int] = "auto",
    input_shape: Sequence[int] | None = None,
    copy: bool = True,
) -> torch.nn.Sequential:
    """Rebuild a runnable ``nn.Sequential`` holding exactly the given parameters.

    The module docstring gives the patterns recognised and the rules for activations and
    flattening.

    Args:
        state: a state dict (name → tensor), a :class:`~paramscope.ParamDict`, or a checkpoint
            path (read with :func:`paramscope.load`).
        activation: the activation between layers: a ``torch.nn`` class name, a factory
            returning a parameter-free module, or ``None`` for ``nn.Identity``.
        flatten: how convolution outputs become Linear inputs: ``"auto"``, ``"flatten"``,
            ``"pool"`` or ``(h, w)``.
        input_shape: the shape of one input without the batch dimension (``(C, H, W)`` for a
            convolution stack, ``(features,)`` or e.g. ``(1, 28, 28)`` for a Linear stack):
            it fixes the flattened size and is checked against the first layer.
        copy: give the model copies of the tensors (``False``: the model's parameters share
            storage with ``state``, no copy).

    Returns:
        The model, in training mode, on the tensors' device; ``state_dict()`` keys equal the
        input names and the values equal the input tensors.

    Raises:
        InferError: the first entry that breaks the pattern, and why (unknown names,
            unsupported shapes, sizes that do not connect, an ambiguous flattened size).

    Example:
        >>> import torch
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                           torch.nn.Linear(8, 2))
        >>> again = infer_model(mlp.state_dict())
        >>> x = torch.randn(3, 4)
        >>> torch.equal(again(x), mlp(x))
        True
    """
    import torch

    from .zoo._meta import skip_init_on_meta

    entries = _entries(state)
    act = _activation(activation)
    mode = _check_flatten(flatten)
    shape = None
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s < 1 for s in shape):
            raise InferError("", f"input_shape={input_shape!r}: expected positive sizes")
    groups = _group(entries)
    indexed = all(k.isascii() and k.isdigit() for k in groups)
    keys = sorted(groups, key=int) if indexed else list(groups)
    layers = [_classify(k, groups[k]) for k in keys]
    for i, layer in enumerate(layers):
        if layer.kind == "bn" and i == 0 and len(layers) > 1:
            layer.bn_dim = 2 if layers[1].kind == "conv" else 1
    chain = _Chain(shape, mode)
    tails: dict[str, list[str]] = {}
    for layer in layers:
        before = chain.mode
        chain.feed(layer)
        if before == "conv" and layer.kind == "linear":
            tails[layer.key] = chain.transition
    with torch.device("meta"), skip_init_on_meta():
        modules = OrderedDict(
            (name, _make(item) if isinstance(item, _Layer) else _filler(item, act))
            for name, item in _layout(layers, tails, chain.lead_flatten, indexed)
        )
    model = torch.nn.Sequential(modules)
    values = {}
    for layer in layers:
        for leaf, t in layer.tensors.items():
            t = t.detach()
            values[f"{layer.key}.{leaf}"] = t.clone() if copy else t
    model.load_state_dict(values, strict=True, assign=True)
    return model
