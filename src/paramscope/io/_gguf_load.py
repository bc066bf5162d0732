"""GGUF tensor values: plain types as they are, block types dequantised to float32.

``F32``/``F16``/``BF16``/``F64`` and the integer types come back in their own dtype.
``Q8_0`` and ``Q4_0`` are dequantised here (numpy; ggml's ``dequantize_row_q8_0`` /
``dequantize_row_q4_0``: ``x = d · q`` with a float16 scale ``d`` per 32 values, ``q`` int8,
or a nibble minus 8); every other block type goes through the ``gguf`` package
(``gguf.quants.dequantize``, the optional extra ``paramscope[gguf]``). A type neither can
dequantise is an :class:`~paramscope.UnsupportedDTypeError` naming the tensor and the type.
Values are float32 in the tensor's numpy-order shape, as ``gguf.quants.dequantize`` gives.

Torch and numpy are imported here, at load time only; headers never need them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._dtypes import DType
from .._errors import FormatError, UnsupportedDTypeError
from .._ggml import ggml_type
from .._manifest import Entry, Manifest
from ._source import ByteSource, open_source

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .._paramdict import ParamDict

__all__ = ["dequantize", "load_gguf", "logical_entries", "read_entry"]

#: numpy codes of the plain types wider than a byte (BF16 swapped as 16-bit units).
_SWAP = {
    DType.F16: "u2",
    DType.BF16: "u2",
    DType.I16: "u2",
    DType.F32: "u4",
    DType.I32: "u4",
    DType.F64: "u8",
    DType.I64: "u8",
}

#: ``extra`` keys the reader derives (never copied into a loaded entry's metadata).
_DERIVED = ("gguf", "quant_layout")


def _q8_0(blocks: np.ndarray) -> np.ndarray:
    import numpy as np

    d = blocks[:, :2].copy().view("<f2").astype(np.float32)
    return d * blocks[:, 2:].view(np.int8).astype(np.float32)


def _q4_0(blocks: np.ndarray) -> np.ndarray:
    import numpy as np

    d = blocks[:, :2].copy().view("<f2").astype(np.float32)
    qs = blocks[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - np.int8(8)
    return d * q.astype(np.float32)


_OWN: dict[str, Callable[[Any], Any]] = {"Q8_0": _q8_0, "Q4_0": _q4_0}


def dequantize(raw: Any, type_name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Float32 values of a tensor's blocks.

    Args:
        raw: the tensor's bytes (a uint8 numpy array or bytes).
        type_name: its ggml type (``"Q4_K"``).
        shape: its logical shape, numpy order.
        where: ``"file: tensor 'name'"``, for errors.

    Returns:
        A float32 array of ``shape``.

    Raises:
        UnsupportedDTypeError: the type needs the ``gguf`` package and it is not installed,
            or no dequantisation is known for it.

    Example:
        >>> import numpy as np, gguf
        >>> x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
        >>> blocks = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
        >>> y = dequantize(blocks, "Q8_0", (2, 32), "m.gguf: tensor 'w'")
        >>> y.shape, float(abs(y - x).max()) < 0.01
        ((2, 32), True)
    """
    import numpy as np

    t = ggml_type(type_name)
    data = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw
    own = _OWN.get(t.name)
    if own is not None:
        return own(data.reshape(-1, t.type_size)).reshape(shape)
    try:
        import gguf
        from gguf import quants
    except ImportError:
        raise UnsupportedDTypeError(
            f"{where} is {t.name}: dequantising it needs the gguf package "
            "(pip install 'paramscope[gguf]'); F32/F16/BF16/Q8_0/Q4_0 need nothing more"
        ) from None
    qtype = getattr(gguf.GGMLQuantizationType, t.name, None)
    rows = data.reshape(*shape[:-1], (shape[-1] if shape else 1) // t.block_size * t.type_size)
    try:
        if qtype is None:
            raise NotImplementedError(t.name)
        out = quants.dequantize(rows, qtype)
    except NotImplementedError:
        raise UnsupportedDTypeError(
            f"{where} is {t.name}: no dequantisation is known for this ggml type (the gguf "
            "package has none either); counting and inspect still work"
        ) from None
    return out.astype(np.float32, copy=False).reshape(shape)


def _big_endian(src: ByteSource) -> bool:
    head = src.read_at(4, 4)
    return len(head) == 4 and struct.unpack("<I", head)[0] & 0xFFFF == 0


def logical_entries(entries: list[Entry], records: dict[str, Mapping[str, Any]]) -> list[Entry]:
    """The entries as values come back: block-typed ones as float32 of their logical shape.

    Args:
        entries: stored entries of a GGUF manifest.
        records: filled with name → its ``extra["gguf"]`` record, for :func:`read_entry`.

    Returns:
        The entries, block-typed ones replaced (``dtype`` F32, the logical ``shape``, the
        same location, ``extra`` without the record).

    Example:
        >>> rec = {"gguf": {"type": "Q8_0", "shape": [2, 32], "bytes": 68}}
        >>> out = logical_entries([Entry("w", (68,), DType.U8, extra=rec)], records := {})
        >>> out[0].dtype.value, out[0].shape, records["w"]["type"]
        ('F32', (2, 32), 'Q8_0')
    """
    out = []
    for e in entries:
        rec = e.extra.get("gguf") if e.extra else None
        if isinstance(rec, Mapping):
            records[e.name] = rec
            extra = {k: v for k, v in e.extra.items() if k != "gguf"}
            e = replace(e, dtype=DType.F32, shape=tuple(rec["shape"]), extra=extra)
        out.append(e)
    return out


def read_entry(src: ByteSource, e: Entry, record: Mapping[str, Any] | None) -> torch.Tensor:
    """One GGUF tensor's values, in fresh memory.

    Args:
        src: the file holding it.
        e: its entry (stored, or as :func:`logical_entries` gives it).
        record: its ``extra["gguf"]`` record when block-typed, else ``None``.

    Returns:
        The tensor: plain types in their dtype, block types dequantised to float32; numpy-order
        shape.

    Raises:
        FormatError: the file ends before the tensor's bytes.
        UnsupportedDTypeError: a block type that cannot be dequantised (see
            :func:`dequantize`), or a block type in a big-endian file.
    """
    import numpy as np
    import torch

    loc = e.location
    assert loc is not None
    where = f"{loc.file}: tensor {e.name!r}"
    raw = np.empty(loc.length, dtype=np.uint8)
    got = src.readinto_at(loc.offset, memoryview(raw)) if loc.length else 0
    if got != loc.length:
        raise FormatError(
            loc.file,
            f"tensor {e.name!r}: expected {loc.length} bytes at offset {loc.offset}, the file "
            f"ends after {got}",
        )
    big = _big_endian(src)
    if record is not None:
        if big:
            raise UnsupportedDTypeError(
                f"{where} is {record['type']} in a big-endian GGUF: the byte order of its "
                "blocks is not defined by the format, so it is not dequantised"
            )
        shape = tuple(int(d) for d in record["shape"])
        return torch.from_numpy(dequantize(raw, str(record["type"]), shape, where))
    dt = e.dtype
    if big and dt.bits > 8:  # swap each value's bytes into the host's (little-endian) order
        code = _SWAP[dt]
        raw = raw.view(">" + code).astype("<" + code).view(np.uint8)
    return torch.from_numpy(raw).view(dt.to_torch()).reshape(e.shape)


def load_gguf(m: Manifest, match: Callable[[str], bool]) -> ParamDict:
    """A GGUF model's selected tensors as a :class:`~paramscope.ParamDict` (read now, block
    types dequantised).

    Args:
        m: its manifest.
        match: which names to load.

    Returns:
        The ParamDict; ``metadata`` holds the file's metadata as strings.
    """
    from .._paramdict import EntryMeta, ParamDict

    pd = ParamDict(metadata=m.metadata)
    sources: dict[str, ByteSource] = {}
    try:
        for name in m:
            if not match(name):
                continue
            e = m[name]
            loc = e.location
            assert loc is not None
            src = sources.get(loc.file)
            if src is None:
                src = sources[loc.file] = open_source(loc.file)
            rec = e.extra.get("gguf") if e.extra else None
            t = read_entry(src, e, rec if isinstance(rec, Mapping) else None)
            pd.add(name, t)
            extra = {k: v for k, v in e.extra.items() if k not in _DERIVED}
            pd._meta[name] = EntryMeta(e.role, e.trainable, e.tags, extra)
    finally:
        for src in sources.values():
            src.close()
    return pd
