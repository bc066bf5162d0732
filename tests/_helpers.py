"""Helpers shared by the hostile-input tests: exact exception checks and pickle opcodes.

Pickle opcodes are assembled by hand (protocol 2) for what no Python object pickles into.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest


def raises_exactly(cls: type[Exception], fn: Callable[[], object], *fragments: str) -> Exception:
    """``fn()`` raises exactly ``cls`` (not a subclass), its message holding every fragment."""
    with pytest.raises(cls) as info:
        fn()
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))
    return info.value


def _s(text: str) -> bytes:
    """BINUNICODE: a str."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(n: int) -> bytes:
    """BININT: a 32-bit int."""
    return b"J" + struct.pack("<i", n)


def _g(module: str, name: str) -> bytes:
    """GLOBAL: ``module.name``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _t(*items: bytes) -> bytes:
    """MARK items TUPLE."""
    return b"(" + b"".join(items) + b"t"
