"""The ggml tensor types of GGUF files (llama.cpp): id, name, values per block, bytes per block.

A GGUF tensor stores its values in blocks: a block of ``block_size`` values takes
``type_size`` bytes (the scales and the packed quants together), so a tensor of ``n`` values
takes ``n / block_size * type_size`` bytes, and a row (the innermost dimension) must hold a
whole number of blocks. The table covers every type of ggml's ``ggml_type`` enum that is
still defined (ids 4 and 5, ``Q4_2``/``Q4_3``, and 31–33, the ``Q4_0_4_4`` repackings, were
removed from ggml and are refused as unknown). Source: ggml's ``type_traits`` table
(``ggml/src/ggml.c``) as mirrored by the ``gguf`` package's ``GGML_QUANT_SIZES``
(gguf-py 0.19); a test compares every row with that package, which is not imported here.

Core: no imports beyond the standard library.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["GGML_TYPES", "PLAIN_TYPES", "GGMLType", "ggml_type"]


class GGMLType(NamedTuple):
    """One ggml tensor type.

    Attributes:
        id: its number in GGUF tensor infos.
        name: ggml's name (``"Q4_K"``).
        block_size: values per block.
        type_size: bytes per block.

    Example:
        >>> q4_k = GGML_TYPES[12]
        >>> q4_k.bits, q4_k.nbytes(4096 * 4096)
        (4.5, 9437184)
    """

    id: int
    name: str
    block_size: int
    type_size: int

    @property
    def bits(self) -> float:
        """Stored bits per value, scales included (``Q4_K``: 4.5)."""
        return self.type_size * 8 / self.block_size

    def nbytes(self, numel: int) -> int:
        """Bytes of ``numel`` values (a whole number of blocks).

        Args:
            numel: the value count, a multiple of :attr:`block_size`.

        Returns:
            The byte count.
        """
        return numel // self.block_size * self.type_size


_ROWS = (
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
)

#: Every known type by id.
GGML_TYPES: dict[int, GGMLType] = {r[0]: GGMLType(*r) for r in _ROWS}

_BY_NAME: dict[str, GGMLType] = {t.name: t for t in GGML_TYPES.values()}

#: Types stored as plain arrays of one value each (the safetensors dtype of the same name).
PLAIN_TYPES: dict[str, str] = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "F64": "F64",
    "I8": "I8",
    "I16": "I16",
    "I32": "I32",
    "I64": "I64",
}


def ggml_type(name: str) -> GGMLType:
    """The type of a name.

    Args:
        name: ggml's name (``"Q6_K"``).

    Returns:
        The :class:`GGMLType`.

    Raises:
        KeyError: no such type.

    Example:
        >>> ggml_type("Q6_K")
        GGMLType(id=14, name='Q6_K', block_size=256, type_size=210)
    """
    return _BY_NAME[name]
