"""Manifest: what headers say about a checkpoint, without tensor data and without torch.

A :class:`Manifest` maps entry names to :class:`Entry` records (shape, dtype, byte size, role,
trainable, tie target, tags, where the bytes live). Counting, ``inspect`` and ``verify``'s
structure checks work on a manifest alone. A reader may back a manifest with
:class:`EntryRows` (its own compact rows, each entry built when read) so that a header of
millions of entries costs no object per entry; entries without metadata share one read-only
``extra`` (:data:`NO_EXTRA`).

Roles, when no paramscope metadata says them, are inferred by :func:`infer_role`:

* integer and bool tensors are buffers;
* names whose last segment is a well-known buffer name (``running_mean``, ``running_var``,
  ``num_batches_tracked``, ``position_ids``, ``inv_freq``, ``masked_bias``, ...) are buffers;
* a GPT-2 style causal mask (``*.attn.bias`` with four dimensions) is a buffer;
* everything else is a parameter, assumed trainable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, ItemsView, Iterator, Mapping, ValuesView
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._dtypes import DType
from ._enums import Format, Role, RoleSource
from ._names import compile_pattern, missing

if TYPE_CHECKING:
    from ._moe import MoEConfig

__all__ = [
    "BUFFER_NAMES",
    "NO_EXTRA",
    "Entry",
    "EntryRows",
    "FrozenDict",
    "Location",
    "Manifest",
    "infer_role",
]

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


_FLOATS = frozenset(d for d in DType if d.is_float)


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
    if dtype not in _FLOATS:
        return Role.BUFFER
    if name.rpartition(".")[2] in BUFFER_NAMES:
        return Role.BUFFER
    if name.endswith("attn.bias") and len(shape) == 4:
        return Role.BUFFER
    return Role.PARAM


class FrozenDict(dict):  # type: ignore[type-arg]
    """A dict that refuses to change, for metadata many entries share (one object instead of
    one each: a per-entry ``{}`` costs 64 bytes, 90 MB over 1.4 M entries). It is a ``dict``
    (JSON, ``isinstance``, ``==`` work as for any); copy it to change it.

    Example:
        >>> d = FrozenDict(role="param")
        >>> d == {"role": "param"}, dict(d, trainable=True)["trainable"]
        (True, True)
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this metadata is shared and read-only; copy it (dict(d)) to change it")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:  # it never changes (and dataclasses take it as a default)
        return hash(frozenset(self))

    def __reduce__(self) -> Any:
        return (_frozen, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: Any) -> FrozenDict:
        return self


def _frozen(items: dict[str, Any]) -> FrozenDict:
    return NO_EXTRA if not items else FrozenDict(items)


#: The shared, read-only empty ``extra`` (equal to ``{}``) of entries without metadata.
NO_EXTRA = FrozenDict()


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
    extra: Mapping[str, Any] = NO_EXTRA
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
        """Elements the entry stands for: the logical shape of a quantised (packed) entry
        (the derived ``extra["quant_layout"]`` record of :mod:`paramscope._quantlayouts`:
        ``0`` for a weight's further data entries; or paramscope's own ``extra["quant"]``),
        else :attr:`numel`."""
        extra = self.extra
        if not extra or not isinstance(extra, Mapping):
            return self.numel
        layout = extra.get("quant_layout")
        if isinstance(layout, Mapping) and layout.get("part") == "data":
            shape = layout.get("shape")
            if not layout.get("primary", True) or not isinstance(shape, list):
                return 0
            return math.prod(int(d) for d in shape)
        quant = extra.get("quant")
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
        entries: the entries, in file order; or an :class:`EntryRows` (a reader's compact
            rows, each entry built when asked for, so a huge header costs no object per
            entry).
        format: where they came from.
        source: the path read (``None`` for in-memory sources).
        roles: whether roles were stored (``exact``) or guessed (``inferred``).
        metadata: free ``str → str`` metadata of the file(s), paramscope's own key removed.
        files: every file read to build the manifest.
        notes: things the reader wants the user to know (skipped items, unwrapped keys).
        moe: what the model's config or file metadata says about its experts (top-k, expert
            count: :class:`paramscope._moe.MoEConfig`), for active parameters per token;
            ``None`` when nothing says.

    Example:
        >>> m = Manifest([Entry("fc.weight", (10, 784), DType.F32)])
        >>> m["fc.weight"].numel
        7840
    """

    def __init__(
        self,
        entries: list[Entry] | tuple[Entry, ...] | EntryRows,
        *,
        format: Format = Format.PARAMDICT,
        source: str | None = None,
        roles: RoleSource = RoleSource.EXACT,
        metadata: Mapping[str, str] | None = None,
        files: list[str] | None = None,
        notes: list[str] | None = None,
        moe: MoEConfig | None = None,
    ) -> None:
        self._entries: Mapping[str, Entry] = (
            entries if isinstance(entries, EntryRows) else {e.name: e for e in entries}
        )
        self.format = format
        self.source = source
        self.roles = roles
        self.metadata: dict[str, str] = dict(metadata or {})
        self.files: list[str] = list(files or ([] if source is None else [source]))
        self.notes: list[str] = list(notes or [])
        self.moe: MoEConfig | None = moe

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise missing(name, self._entries) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def values(self) -> ValuesView[Entry]:
        """The entries, in order (built one at a time for a reader's compact rows).

        Returns:
            A values view.
        """
        return self._entries.values()

    def items(self) -> ItemsView[str, Entry]:
        """``(name, entry)`` pairs, in order.

        Returns:
            An items view.
        """
        return self._entries.items()

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
        if isinstance(self._entries, EntryRows):  # only its tie map can hold aliases
            pairs: Any = ((n, t) for n, t in self._entries.ties.items() if n in self._entries)
        else:
            pairs = ((e.name, e.tie) for e in self._entries.values() if e.tie is not None)
        for name, tie in pairs:
            groups.setdefault(tie, [tie]).append(name)
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
            moe=self.moe,
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


class EntryRows(Mapping[str, Entry]):
    """name → :class:`Entry`, each built on access from a reader's compact row.

    A reader keeps one small tuple per entry (a safetensors header: dtype, shape, offsets) and
    hands this mapping to :class:`Manifest`; an :class:`Entry` exists only while it is used,
    so a header of 1.4 M entries costs its tuples, not 1.4 M entries and locations.

    Args:
        *parts: ``(rows, make)`` pairs: ``rows`` maps name → row, ``make(name, row)`` builds
            the entry. Names are listed part by part, each in its own order; a name should be
            in one part only.
        ties: alias → stored name for every entry whose ``tie`` is set (the others have
            none), so :meth:`Manifest.ties` needs no entry built.
        owner: what the rows come from (a parsed header), kept alive as long as they are.

    Example:
        >>> rows = EntryRows(({"w": (2, 3)}, lambda n, r: Entry(n, r, DType.F32)))
        >>> Manifest(rows)["w"].numel
        6
    """

    __slots__ = ("_parts", "owner", "ties")

    def __init__(
        self,
        *parts: tuple[Mapping[str, Any], Callable[[str, Any], Entry]],
        ties: Mapping[str, str] | None = None,
        owner: Any = None,
    ) -> None:
        self._parts = parts
        self.ties: Mapping[str, str] = ties or {}
        self.owner = owner

    def __getitem__(self, name: str) -> Entry:
        for rows, make in self._parts:
            row = rows.get(name, _ABSENT)
            if row is not _ABSENT:
                return make(name, row)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        for rows, _ in self._parts:
            yield from rows

    def __len__(self) -> int:
        return sum(len(rows) for rows, _ in self._parts)

    def __contains__(self, name: object) -> bool:
        return any(name in rows for rows, _ in self._parts)

    def values(self) -> ValuesView[Entry]:
        """The entries, built one at a time.

        Returns:
            A values view.
        """
        return _Values(self)

    def items(self) -> ItemsView[str, Entry]:
        """``(name, entry)`` pairs, each entry built as it comes.

        Returns:
            An items view.
        """
        return _Items(self)


_ABSENT: Any = object()


class _Values(ValuesView[Entry]):
    _mapping: EntryRows

    def __iter__(self) -> Iterator[Entry]:
        for rows, make in self._mapping._parts:
            for name, row in rows.items():
                yield make(name, row)


class _Items(ItemsView[str, Entry]):
    _mapping: EntryRows

    def __iter__(self) -> Iterator[tuple[str, Entry]]:
        for rows, make in self._mapping._parts:
            for name, row in rows.items():
                yield name, make(name, row)
