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


Snapshot = dict[int, tuple[object, dict[str, object]]]


def snapshot(targets: list[object]) -> Snapshot:
    """The ``vars`` of every target that has them (classes, singletons a file could poison)."""
    return {id(o): (o, dict(vars(o))) for o in targets if hasattr(o, "__dict__")}


def restore(snap: Snapshot) -> list[str]:
    """Put every target back as it was; the names of what had changed."""
    changed = []
    for obj, before in snap.values():
        now = dict(vars(obj))
        diff = [k for k in before.keys() | now.keys() if before.get(k, now) is not now.get(k)]
        if not diff:
            continue
        changed += [f"{getattr(obj, '__qualname__', obj)}.{k}" for k in sorted(diff)]
        if isinstance(obj, type):
            for k in diff:
                if k in before:
                    type.__setattr__(obj, k, before[k])
                else:
                    type.__delattr__(obj, k)
        else:
            vars(obj).clear()
            vars(obj).update(before)
    return changed
