"""Entry digests: the hash paramscope records per entry at save time, and its check.

The digest lives in the same file as the data, so it can detect corruption (a flipped byte, a
truncated copy), never tampering: whoever can change the bytes can change the header. A fast
128-bit non-cryptographic hash (XXH3) is therefore the default; SHA-256 is read too.
"""

from __future__ import annotations

from typing import Any

from .._errors import IntegrityError
from ._lazytensors import open_mmap
from ._safetensors_rules import DEFAULT_HASH, DIGEST_KEY, Header

__all__ = ["hash_bytes", "verify_hashes"]


def hash_bytes(buf: Any, algo: str = DEFAULT_HASH) -> str:
    """The hex digest of a buffer (128-bit XXH3 by default; SHA-256 on request).

    Args:
        buf: bytes or any buffer.
        algo: ``"xxh3-128"`` or ``"sha256"``.

    Returns:
        32 hex characters for XXH3-128, 64 for SHA-256.

    Example:
        >>> hash_bytes(b"", "sha256")[:8], hash_bytes(b"")
        ('e3b0c442', '99aa06d3014798d86001c324468d497f')
    """
    if algo == "sha256":
        import hashlib

        return hashlib.sha256(buf).hexdigest()
    import xxhash

    return xxhash.xxh3_128(buf).hexdigest()


def check_digest(h: Header, name: str, buf: Any) -> tuple[bool, str | None]:
    """Whether the header records a digest for entry ``name``, and the problem if ``buf`` (the
    entry's stored bytes, read by someone else) does not match it.

    Args:
        h: the parsed header.
        name: a stored entry.
        buf: its bytes.

    Returns:
        ``(checked, problem or None)``.
    """
    meta = h.ps_meta or {}
    want = meta.get("entries", {}).get(name, {}).get(DIGEST_KEY)
    if not isinstance(want, str):
        return False, None
    algo = meta.get("hash", "sha256")
    got = hash_bytes(buf, algo)
    if got == want:
        return True, None
    return True, str(
        IntegrityError(
            h.path,
            f"entry {name!r}: {algo} is {got[:16]}…, the header records {want[:16]}… (the "
            "bytes changed after saving)",
        )
    )


def verify_hashes(h: Header, skip: frozenset[str] = frozenset()) -> tuple[int, list[str]]:
    """Recompute each stored entry's hash from the file and compare.

    Args:
        h: the parsed header.
        skip: entries already checked by the caller (:func:`check_digest` on bytes it read).

    Returns:
        ``(number of hashed entries checked, problems)``; each problem names the entry.
    """
    entries = (h.ps_meta or {}).get("entries", {})
    algo = (h.ps_meta or {}).get("hash", "sha256")
    problems: list[str] = []
    checked = 0
    if not entries or all(n in skip for n in h.tensors):
        return 0, problems
    from ._lazytensors import RemoteSpans

    mm = open_mmap(h.path)
    remote = isinstance(mm, RemoteSpans)  # each entry one range request, hashed and dropped
    view = memoryview(mm) if not isinstance(mm, (bytes, RemoteSpans)) else memoryview(b"")
    try:
        for name, (_, _, begin, end) in h.tensors.items():
            if name in skip:
                continue
            want = entries.get(name, {}).get(DIGEST_KEY)
            if not isinstance(want, str):
                continue
            checked += 1
            a, b = h.data_start + begin, h.data_start + end
            got = hash_bytes(mm.span(a, b) if remote else view[a:b], algo)
            if got != want:
                problems.append(
                    str(
                        IntegrityError(
                            h.path,
                            f"entry {name!r}: {algo} is {got[:16]}…, the header records "
                            f"{want[:16]}… (the bytes changed after saving)",
                        )
                    )
                )
    finally:
        view.release()
        if not isinstance(mm, bytes):
            mm.close()
    return checked, problems
