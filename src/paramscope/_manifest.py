"""Manifest: what headers say about a checkpoint, without tensor data and without torch.

A :class:`Manifest` maps entry names to :class:`Entry` records (shape, dtype, byte size, role,
trainable, tie target, tags, where the bytes live). Counting, ``inspect`` and ``verify``'s
structure checks work on a manifest alone.

Roles, when no paramscope metadata says them, are inferred by :func:`infer_role`:

* integer and bool tensors are buffers;
* names whose last segment is a well-known buffer name (``running_mean``, ``running_var``,
  ``num_batches_tracked``, ``position_ids``, ``inv_freq``, ``masked_bias``, ...) are buffers;
* a GPT-2 style causal mask (``*.attn.bias`` with four dimensions) is a buffer;
* everything else is a parameter, assumed trainable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ._dtypes import DType
from ._enums import Format, Role, RoleSource
from ._names import compile_pattern, missing

__all__ = ["BUFFER_NAMES", "Entry", "Location", "Manifest", "infer_role"]

BUFFER_NAMES: frozenset[str] = frozenset(
    {
        "running_mean",
        "running_var",
        "num_batches_tracked",
        "position_ids",
        "token_type_ids",
        "inv_freq",
        "masked_bias",
        "relative_position_index",
        "attention_mask",
        "causal_mask",
        "_float_tensor",
    }
)


def infer_role(name: str, dtype: DType, shape: tuple[int, ...]) -> Role:
    """Guess whether an entry is a parameter or a buffer from its name, dtype and shape.

    Args:
        name: the entry's dotted name.
        dtype: its dtype.
        shape: its shape.

    Returns:
        :attr:`Role.BUFFER` or :attr:`Role.PARAM` by the rules in this module's docstring.

    Example:
        >>> infer_role("bn.running_mean", DType.F32, (8,)).value
        'buffer'
    """
    if not dtype.is_float:
        return Role.BUFFER
    last = name.rsplit(".", 1)[-1]
    if last in BUFFER_NAMES:
        return Role.BUFFER
    if name.endswith("attn.bias") and len(shape) == 4:
        return Role.BUFFER
    return Role.PARAM


@dataclass(frozen=True, slots=True)
class Location:
    """Where an entry's bytes live.

    Attributes:
        file: the file holding them.
        offset: byte offset in ``file`` (for zip members: within the member).
        length: byte count.
        member: for zip-based formats (torch, npz), the member name; else ``None``.
    """

    file: str
    offset: int
    length: int
    member: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One named tensor as a header describes it.

    Attributes:
        name: dotted name.
        shape: dimensions.
        dtype: element type.
        role: parameter or buffer.
        trainable: whether it is meant to be trained (``requires_grad``).
        tie: for an alias, the name whose storage it shares; else ``None``.
        tags: free labels.
        extra: free-form JSON-able metadata.
        location: where the bytes live, when known.
        hash: ``"sha256:<hex>"`` recorded at save time, when present.
    """

    name: str
    shape: tuple[int, ...]
    dtype: DType
    role: Role = Role.PARAM
    trainable: bool = True
    tie: str | None = None
    tags: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    location: Location | None = None
    hash: str | None = None

    @property
    def numel(self) -> int:
        """Element count (1 for a scalar)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the values (sub-byte types packed)."""
        return self.dtype.nbytes(self.numel)

    @property
    def logical_numel(self) -> int:
        """Elements the entry stands for: the original shape of a quantised (packed) entry,
        else :attr:`numel`."""
        quant = self.extra.get("quant") if isinstance(self.extra, Mapping) else None
        if isinstance(quant, Mapping) and isinstance(quant.get("shape"), list):
            return math.prod(int(d) for d in quant["shape"])
        return self.numel

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of this entry.

        Returns:
            Keys ``name, shape, dtype, params, bytes, role, trainable, tie, tags``.

        Example:
            >>> Entry("w", (2, 3), DType.F32).to_dict()["params"]
            6
        """
        out: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype.value,
            "params": self.logical_numel,
            "bytes": self.nbytes,
            "role": self.role.value,
            "trainable": self.trainable,
            "tie": self.tie,
            "tags": list(self.tags),
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


class Manifest(Mapping[str, Entry]):
    """An ordered, read-only mapping name → :class:`Entry`, built from headers alone.

    Args:
        entries: the entries, in file order.
        format: where they came from.
        source: the path read (``None`` for in-memory sources).
        roles: whether roles were stored (``exact``) or guessed (``inferred``).
        metadata: free ``str → str`` metadata of the file(s), paramscope's own key removed.
        files: every file read to build the manifest.
        notes: things the reader wants the user to know (skipped items, unwrapped keys).

    Example:
        >>> m = Manifest([Entry("fc.weight", (10, 784), DType.F32)])
        >>> m["fc.weight"].numel
        7840
    """

    def __init__(
        self,
        entries: list[Entry] | tuple[Entry, ...],
        *,
        format: Format = Format.PARAMDICT,
        source: str | None = None,
        roles: RoleSource = RoleSource.EXACT,
        metadata: Mapping[str, str] | None = None,
        files: list[str] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self._entries: dict[str, Entry] = {e.name: e for e in entries}
        self.format = format
        self.source = source
        self.roles = roles
        self.metadata: dict[str, str] = dict(metadata or {})
        self.files: list[str] = list(files or ([] if source is None else [source]))
        self.notes: list[str] = list(notes or [])

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise missing(name, self._entries) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"Manifest({len(self)} entries, format={self.format.value}, "
            f"source={self.source!r}, roles={self.roles.value})"
        )

    def ties(self) -> list[list[str]]:
        """Groups of names sharing one storage: ``[target, alias, ...]`` per group.

        Returns:
            One list per tie group, the stored entry first.

        Example:
            >>> m = Manifest([Entry("a", (2,), DType.F32), Entry("b", (2,), DType.F32, tie="a")])
            >>> m.ties()
            [['a', 'b']]
        """
        groups: dict[str, list[str]] = {}
        for e in self._entries.values():
            if e.tie is not None:
                groups.setdefault(e.tie, [e.tie]).append(e.name)
        return list(groups.values())

    def select(self, pattern: str | list[str]) -> Manifest:
        """The entries whose names match a glob or ``re:`` regex (see :mod:`paramscope`).

        Args:
            pattern: glob, ``re:<regex>``, or a list of them.

        Returns:
            A new manifest with the matching entries, other fields kept.

        Example:
            >>> m = Manifest([Entry("a.weight", (2,), DType.F32), Entry("a.bias", (2,), DType.F32)])
            >>> list(m.select("*.bias"))
            ['a.bias']
        """
        match = compile_pattern(pattern)
        return self._with([e for e in self._entries.values() if match(e.name)])

    def _with(self, entries: list[Entry]) -> Manifest:
        return Manifest(
            entries,
            format=self.format,
            source=self.source,
            roles=self.roles,
            metadata=self.metadata,
            files=self.files,
            notes=self.notes,
        )

    def with_inferred_roles(self) -> Manifest:
        """Fill roles and trainable flags by :func:`infer_role` (marks roles ``inferred``).

        Returns:
            A new manifest.

        Example:
            >>> m = Manifest([Entry("bn.running_var", (4,), DType.F32)]).with_inferred_roles()
            >>> m["bn.running_var"].role.value, m.roles.value
            ('buffer', 'inferred')
        """
        out = []
        for e in self._entries.values():
            role = infer_role(e.name, e.dtype, e.shape)
            out.append(replace(e, role=role, trainable=role is Role.PARAM))
        m = self._with(out)
        m.roles = RoleSource.INFERRED
        return m
