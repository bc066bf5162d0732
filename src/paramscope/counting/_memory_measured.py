"""``paramscope memory TARGET --measured``: activation memory measured on the meta device.

The model is built (or moved) on the meta device and run once under
:func:`paramscope.measure_activations` (forward, and backward for a training step), with the
inputs ``flops`` makes (token ids of batch × seq, or one float input of a given shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._errors import TargetError

__all__ = ["measured_memory"]


def measured_memory(
    model: Any,
    *,
    source: str,
    input_shape: Sequence[int] | None = None,
    batch: int = 1,
    seq: int | None = None,
    backward: bool = True,
) -> dict[str, Any]:
    """Measure a model's activation memory on the meta device.

    Args:
        model: an ``nn.Module`` (moved to meta if it is not there: nothing is allocated) or,
            for a checkpoint TARGET, its path (an error).
        source: the TARGET as given, for messages.
        input_shape: the shape of one float input.
        batch: batch of token ids for ``seq``.
        seq: token ids of ``batch × seq``.
        backward: forward + backward (training) rather than forward only.

    Returns:
        ``peak`` (bytes), ``peak_phase``, ``top_module`` (the module holding the most at the
        end of forward) and its bytes, ``saved`` (bytes alive at the end of forward),
        ``inputs``, ``method`` and ``notes`` (what the run kept that a real one may not).

    Raises:
        TargetError: the TARGET is a checkpoint (no forward to run), or a transformers mixture
            of experts (whose experts cannot run without values).
        ArgumentError: no input given.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
        >>> measured_memory(m, source="mlp", input_shape=(4, 8))["saved"]
        256
    """
    import torch

    from ._activations import measure_activations
    from ._flops import _batched_experts, _describe, _make_inputs

    if not isinstance(model, torch.nn.Module):
        raise TargetError(
            f"{source}: memory --measured needs a model (zoo:NAME, package.module:callable or "
            "an HF config.json); a checkpoint has no forward to run"
        )
    experts = _batched_experts(model)
    if experts is not None:
        raise TargetError(
            f"{source}: memory --measured cannot run this mixture of experts without values: "
            f"transformers' {experts} experts size their groups from the router's values, and "
            "its batched_mm experts copy each token's expert weights, which a real run does "
            "not hold; use the formula estimate (without --measured)"
        )
    if any(t.device.type != "meta" for t in [*model.parameters(), *model.buffers()]):
        model = model.to("meta")
    args, kwargs = _make_inputs(model, torch.device("meta"), None, input_shape, batch, seq)
    if not backward:
        model.eval()
    outputs: list[Any] = []
    hook = model.register_forward_hook(lambda _m, _a, out: outputs.append(out))
    try:
        with torch.set_grad_enabled(backward):
            r = measure_activations(model, args, backward=backward, kwargs=kwargs)
    finally:
        hook.remove()
    notes = []
    if outputs and _kept_cache(outputs[-1]):
        notes.append(
            "transformers kept a KV cache in this run ("
            + (
                "use_cache=True: without one, transformers tests the position ids' values for "
                "packed sequences, which meta tensors do not have"
                if kwargs.get("use_cache")
                else "the config's use_cache"
            )
            + "): the peak includes its copies of keys and values, which a run with "
            "use_cache=False (as training usually is) does not hold"
        )
    top = r["top_module"]
    return {
        "peak": r["peak"],
        "peak_phase": r["peak_phase"],
        "top_module": top,
        "top_module_bytes": r["by_module"].get(top, 0),
        "saved": r["saved"],
        "inputs": [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()],
        "notes": notes,
        "method": "measured on the meta device (torch dispatch tracking of every storage "
        "allocated, forward"
        + (" + backward; the gradients it allocates included)" if backward else ")"),
    }


def _kept_cache(out: Any) -> bool:
    """A transformers output that carries a KV cache (an encoder such as BERT keeps none)."""
    get = getattr(out, "get", None)  # ModelOutput is a dict: no deprecated attribute read
    return callable(get) and any(get(k) is not None for k in ("past_key_values", "cache"))
