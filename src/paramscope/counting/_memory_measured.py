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
        ``inputs`` and ``method``.

    Raises:
        TargetError: the TARGET is a checkpoint (no forward to run).
        ArgumentError: no input given.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
        >>> measured_memory(m, source="mlp", input_shape=(4, 8))["saved"]
        256
    """
    import torch

    from ._activations import measure_activations
    from ._flops import _describe, _make_inputs

    if not isinstance(model, torch.nn.Module):
        raise TargetError(
            f"{source}: memory --measured needs a model (zoo:NAME, package.module:callable or "
            "an HF config.json); a checkpoint has no forward to run"
        )
    if any(t.device.type != "meta" for t in [*model.parameters(), *model.buffers()]):
        model = model.to("meta")
    args, kwargs = _make_inputs(model, torch.device("meta"), None, input_shape, batch, seq)
    del kwargs  # _make_inputs gives positional inputs for a shape or a sequence
    if not backward:
        model.eval()
    with torch.set_grad_enabled(backward):
        r = measure_activations(model, args, backward=backward)
    top = r["top_module"]
    return {
        "peak": r["peak"],
        "peak_phase": r["peak_phase"],
        "top_module": top,
        "top_module_bytes": r["by_module"].get(top, 0),
        "saved": r["saved"],
        "inputs": [_describe(a) for a in args],
        "method": "measured on the meta device (torch dispatch tracking of every storage "
        "allocated, forward"
        + (" + backward; the gradients it allocates included)" if backward else ")"),
    }
