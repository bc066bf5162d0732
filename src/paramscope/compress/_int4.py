"""4-bit packing: two 4-bit integers per byte along the last dimension.

Element ``2i`` goes to the low nibble and ``2i+1`` to the high nibble; signed values (-8..7)
are stored as ``v + 8``; an odd last dimension gets one zero nibble of padding (the storage
convention of :mod:`paramscope._quantstore`). torch is imported when a function runs.

Example:
    >>> import torch
    >>> v = torch.tensor([[-7, 0, 7]], dtype=torch.int8)
    >>> unpack_int4(pack_int4(v, signed=True), 3, signed=True).tolist()
    [[-7, 0, 7]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import EntryError

if TYPE_CHECKING:
    import torch

__all__ = ["pack_int4", "unpack_int4"]


def pack_int4(values: torch.Tensor, *, signed: bool) -> torch.Tensor:
    """Pack 4-bit integers two per byte along the last dimension.

    Element ``2i`` goes to the low nibble and ``2i+1`` to the high nibble; signed values
    (-8..7) are stored as ``v + 8``; an odd last dimension gets one zero nibble of padding.

    Args:
        values: integer tensor (at least 1-D) with values in -8..7 (signed) or 0..15.
        signed: whether the values are signed.

    Returns:
        uint8 tensor of shape ``(*values.shape[:-1], ceil(values.shape[-1] / 2))``.

    Example:
        >>> import torch
        >>> pack_int4(torch.tensor([1, 2, 3], dtype=torch.uint8), signed=False).tolist()
        [33, 3]
    """
    import torch

    if values.dim() == 0:
        values = values.reshape(1)
    if signed:
        u = values.to(torch.int16).add_(8).to(torch.uint8)
    else:
        u = values if values.dtype == torch.uint8 else values.to(torch.uint8)
    last = u.shape[-1]
    if last % 2:
        u = torch.nn.functional.pad(u, (0, 1))
    pairs = u.reshape(*u.shape[:-1], u.shape[-1] // 2, 2)
    high = pairs[..., 1] << 4
    return high.bitwise_or_(pairs[..., 0])


def unpack_int4(packed: torch.Tensor, last_dim: int, *, signed: bool) -> torch.Tensor:
    """Undo :func:`pack_int4`.

    Args:
        packed: uint8 tensor from :func:`pack_int4`.
        last_dim: the original (unpadded) last dimension.
        signed: whether the values were signed (subtracts 8 from each nibble).

    Returns:
        int8 (signed) or uint8 tensor of shape ``(*packed.shape[:-1], last_dim)``.

    Raises:
        EntryError: ``last_dim`` does not fit the packed last dimension.

    Example:
        >>> import torch
        >>> p = torch.tensor([33, 3], dtype=torch.uint8)
        >>> unpack_int4(p, 3, signed=False).tolist()
        [1, 2, 3]
    """
    import torch

    if packed.dim() == 0 or (last_dim + 1) // 2 != packed.shape[-1]:
        found = tuple(packed.shape)
        raise EntryError(
            f"unpack_int4: last dimension {last_dim} needs {(last_dim + 1) // 2} packed bytes, "
            f"found shape {found}"
        )
    out = torch.stack((packed & 0x0F, packed >> 4), dim=-1)
    out = out.reshape(*packed.shape[:-1], packed.shape[-1] * 2)[..., :last_dim]
    if signed:
        return out.to(torch.int8).sub_(8)
    return out.contiguous()
