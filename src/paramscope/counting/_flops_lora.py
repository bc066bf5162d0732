"""LoRA adapters for :func:`paramscope.flops`: the model runs with the adapters peft would add.

While the count runs, every module a :class:`LoraSpec` targets computes what peft's LoRA layer
computes (``peft/tuners/lora/layer.py``, adapter ``default``, no dropout, not merged)::

    result = base_layer(x) + lora_B(lora_A(x)) * scaling

with ``lora_A``/``lora_B`` new tensors on the run's device (meta or fake: nothing allocated),
and every base parameter frozen (peft's ``bias="none"``). The module's own ``forward`` is
wrapped (an instance attribute), so the adapters' FLOPs land in the adapted module's row of
the tree; everything is put back afterwards. The backward is then the one of a LoRA run:
weight gradients for the adapters only, and the activation-gradient pass through the frozen
base wherever an input needs a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._errors import ArgumentError
from ._lora import _SUPPORTED, LoraSpec

__all__ = ["lora_adapters"]

_MISSING = object()


def _sizes(mod: Any, kind: str) -> tuple[int, int]:
    """(in, out) of a base layer as peft reads them."""
    w = mod.weight
    if kind == "Conv1D":  # transformers' Conv1D: weight (in, out)
        return int(w.shape[0]), int(w.shape[1])
    if kind == "Embedding":  # (num, dim)
        return int(w.shape[0]), int(w.shape[1])
    if kind.startswith("Conv"):  # (out, in/groups, *k)
        return int(w.shape[1]) * int(mod.groups), int(w.shape[0])
    return int(w.shape[1]), int(w.shape[0])  # Linear: (out, in)


@contextmanager
def lora_adapters(model: Any, spec: LoraSpec) -> Iterator[dict[str, Any]]:
    """Run ``model`` with the LoRA adapters of ``spec`` on its targeted modules.

    Args:
        model: the ``nn.Module`` about to run.
        spec: the adapters (always tensors that need a gradient, as peft's parameters: it
            decides which matmul kernel torch picks, so the op table matches peft's too).

    Returns:
        A context manager yielding the ``lora`` details: the spec, ``modules`` (how many
        were adapted), ``by_type`` and ``adapter_forward_flops`` (filled in as the forward
        runs: 2·r·(in + out) per token per adapted Linear, the convs' and embeddings' own).

    Raises:
        ArgumentError: no module matches, or a matched module is of a type peft's LoRA does
            not wrap.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 3))
        >>> with lora_adapters(m, LoraSpec(2, targets=["0"])) as info:
        ...     _ = m(torch.zeros(5, 4))
        >>> info["adapter_forward_flops"]  # 5 tokens · 2 · r · (4 + 3)
        140
    """
    import torch
    import torch.nn.functional as F

    alpha = 8.0 if spec.alpha is None else float(spec.alpha)  # peft's default lora_alpha
    scaling = alpha / spec.r
    info: dict[str, Any] = {
        **{k: v for k, v in _spec_dict(spec).items()},
        "scaling": scaling,
        "modules": 0,
        "by_type": {},
        "adapter_forward_flops": 0,
    }
    targets: dict[int, tuple[str, Any, str]] = {}
    for name, mod in model.named_modules():
        if not name or id(mod) in targets or not spec.matches(name):
            continue
        kind = type(mod).__name__
        if kind not in _SUPPORTED:
            raise ArgumentError(
                f"LoRA: module {name!r} is a {kind}; peft's LoRA wraps "
                f"{', '.join(sorted(_SUPPORTED))}; name its Linear children instead"
            )
        if kind.startswith("Conv") and kind != "Conv1D" and spec.r % int(mod.groups):
            raise ArgumentError(
                f"LoRA: r={spec.r} on {name!r}, a {kind} with groups={mod.groups}: peft needs r "
                "to be a multiple of groups"
            )
        targets[id(mod)] = (name, mod, kind)
    if not targets:
        raise ArgumentError(
            f"LoRA {spec.describe()}: no module of {type(model).__name__} matches (peft: "
            "'Target modules not found in the base model')"
        )
    info["modules"] = len(targets)
    for _, _, kind in targets.values():
        info["by_type"][kind] = info["by_type"].get(kind, 0) + 1

    def wrap(mod: Any, kind: str) -> Any:
        orig = mod.forward
        n_in, n_out = _sizes(mod, kind)
        made: dict[str, Any] = {}

        def weights(device: Any) -> tuple[Any, Any, Any]:
            if not made:
                dt = mod.weight.dtype if mod.weight.is_floating_point() else torch.float32
                if kind.startswith("Conv") and kind != "Conv1D":
                    k = tuple(mod.kernel_size)
                    a_shape: tuple[int, ...] = (spec.r, n_in, *k)
                    b_shape: tuple[int, ...] = (n_out, spec.r // int(mod.groups), *(1,) * len(k))
                else:
                    a_shape, b_shape = (spec.r, n_in), (n_out, spec.r)
                made["A"] = torch.empty(a_shape, device=device, dtype=dt, requires_grad=True)
                made["B"] = torch.empty(b_shape, device=device, dtype=dt, requires_grad=True)
                made["b"] = (
                    torch.empty((n_out,), device=device, dtype=dt, requires_grad=True)
                    if spec.bias and kind != "Embedding"
                    else None
                )
            return made["A"], made["B"], made["b"]

        def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
            out = orig(x, *args, **kwargs)
            a, b, bias = weights(out.device)
            if kind == "Embedding":
                after_a = F.embedding(x, a.T, mod.padding_idx, mod.max_norm, mod.norm_type,
                                      mod.scale_grad_by_freq, mod.sparse)  # fmt: skip
                delta = F.linear(after_a, b)
                info["adapter_forward_flops"] += 2 * x.numel() * spec.r * n_out
            elif kind in ("Linear", "Conv1D"):
                delta = F.linear(F.linear(x.to(a.dtype), a), b, bias)
                info["adapter_forward_flops"] += 2 * (x.numel() // n_in) * spec.r * (n_in + n_out)
            else:  # ConvNd: lora_A has the base's kernel, stride, padding (not its dilation)
                conv = getattr(F, f"conv{a.dim() - 2}d")
                h = conv(x.to(a.dtype), a, None, mod.stride, mod.padding)
                delta = conv(h, b, bias, 1, 0, 1, int(mod.groups))
                sites = math.prod(h.shape) // spec.r  # batch × output positions
                k = math.prod(a.shape[2:])
                info["adapter_forward_flops"] += (
                    2 * sites * spec.r * (n_in * k + n_out // int(mod.groups))
                )
            return out + (delta * scaling).to(out.dtype)

        return forward

    saved_forward: list[tuple[Any, Any]] = []
    saved_grad = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved_grad:
            p.requires_grad_(False)
        for _, mod, kind in targets.values():
            saved_forward.append((mod, mod.__dict__.get("forward", _MISSING)))
            mod.forward = wrap(mod, kind)
        yield info
    finally:
        for mod, fwd in saved_forward:
            if fwd is _MISSING:
                mod.__dict__.pop("forward", None)
            else:
                mod.forward = fwd
        for p, g in saved_grad:
            p.requires_grad_(g)


def _spec_dict(spec: LoraSpec) -> dict[str, Any]:
    return {
        "r": spec.r,
        "alpha": spec.alpha,
        "targets": spec.targets if isinstance(spec.targets, str) else list(spec.targets),
        "bias": spec.bias,
    }
