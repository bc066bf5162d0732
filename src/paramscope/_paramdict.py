"""ParamDict: an ordered, typed dictionary of named tensors with metadata and ties.

Names are unique dotted names (see :func:`paramscope.validate_name`). Each entry carries a
role (``param`` / ``buffer``), a trainable flag, tags and free JSON-able ``extra`` data, all of
which survive :func:`paramscope.save` and :func:`paramscope.load`. A tie makes one name an
alias of another's storage: both names return the same tensor object, the storage is saved
once, and it comes back tied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ._dtypes import DType
from ._enums import Format, Role, RoleSource
from ._errors import DTypeMismatchError, InvalidNameError, ShapeMismatchError, TargetError
from ._manifest import Entry, Manifest
from ._names import Pattern, apply_renames, compile_pattern, ensure_new, missing, validate_name
from ._text import listed

if TYPE_CHECKING:
    import torch

__all__ = ["EntryMeta", "ParamDict"]


@dataclass(frozen=True)
class EntryMeta:
    """Metadata of one entry.

    Attributes:
        role: ``param`` or ``buffer``.
        trainable: whether the entry is meant to be trained.
        tags: free labels.
        extra: free JSON-able data.
    """

    role: Role = Role.PARAM
    trainable: bool = True
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in a file's paramscope metadata.

        Returns:
            ``{"role", "trainable", "tags", "extra"}`` (empty tags and extra left out).
        """
        out: dict[str, Any] = {"role": self.role.value, "trainable": self.trainable}
        if self.tags:
            out["tags"] = list(self.tags)
        if self.extra:
            out["extra"] = self.extra
        return out


def _check_tensor(name: str, value: object) -> None:
    import torch

    if not isinstance(value, torch.Tensor):
        raise InvalidNameError(
            f"entry {name!r}: expected a torch.Tensor, found {type(value).__name__}"
        )


_QUANTIZED_NAMESPACES = ("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic")


def _holds_packed(mod: Any) -> bool:
    """Whether a torch quantised module keeps its weights packed outside ``_parameters``."""
    if not type(mod).__module__.startswith(_QUANTIZED_NAMESPACES):
        return False
    if hasattr(mod, "_packed_params") or hasattr(mod, "_all_weight_values"):
        return True
    return any(type(v).__name__ == "ScriptObject" for v in vars(mod).values())


class ParamDict(MutableMapping[str, "torch.Tensor"]):
    """An ordered mapping name → ``torch.Tensor`` with per-entry metadata and ties.

    Args:
        items: initial entries (a mapping or ``(name, tensor)`` pairs); tensors that are the
            same object become ties.
        metadata: free ``str → str`` metadata kept with the dict (saved in the file header).

    Example:
        >>> import torch
        >>> pd = ParamDict({"fc1.weight": torch.randn(10, 20), "fc1.bias": torch.zeros(10)})
        >>> pd.add("fc2.weight", torch.randn(2, 10), tags=("head",))
        >>> pd["fc1.weight"].shape
        torch.Size([10, 20])
        >>> list(pd.select("*.weight"))
        ['fc1.weight', 'fc2.weight']
    """

    def __init__(
        self,
        items: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._values: dict[str, torch.Tensor] = {}
        self._alias: dict[str, str] = {}
        self._meta: dict[str, EntryMeta] = {}
        self._order: dict[str, None] = {}
        self.metadata: dict[str, str] = dict(metadata or {})
        pairs = items.items() if isinstance(items, Mapping) else (items or ())
        by_id: dict[int, str] = {}
        for name, value in pairs:
            _check_tensor(name, value)
            if id(value) in by_id:
                self.tie(name, by_id[id(value)])
            else:
                self.add(name, value)
                by_id[id(value)] = name

    # ------------------------------------------------------------------ mapping protocol
    def __getitem__(self, name: str) -> torch.Tensor:
        target = self._alias.get(name, name)
        try:
            return self._values[target]
        except KeyError:
            raise missing(name, self._order) from None

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        if name in self._order:
            self.update(name, value)
        else:
            self.add(name, value)

    def __delitem__(self, name: str) -> None:
        self.remove(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._order

    def __repr__(self) -> str:
        """The entry and element counts, trainable / frozen apart, and the first 20 entries.

        Elements are counted once per storage (ties once); ``frozen`` are parameters with
        ``trainable=False``. Each listed frozen entry is marked, and frozen entries past the
        first 20 are named in the last line.

        Returns:
            The text.

        Example:
            >>> import torch
            >>> pd = ParamDict({"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2)})
            >>> pd.set_meta("fc.weight", trainable=False)
            >>> print(repr(pd))
            ParamDict(2 entries, 8 elements: 2 trainable, 6 frozen)
              fc.weight: (2, 3) F32 param frozen
              fc.bias: (2,) F32 param
        """
        trainable = frozen = buffers = 0
        for name, t in self._values.items():
            m = self._meta[name]
            if m.role != Role.PARAM:
                buffers += t.numel()
            elif m.trainable:
                trainable += t.numel()
            else:
                frozen += t.numel()
        split = f"{trainable:,} trainable, {frozen:,} frozen"
        if buffers:
            split += f", {buffers:,} in buffers"
        lines = [f"ParamDict({len(self)} entries, {self.numel():,} elements: {split})"]
        names = list(self._order)
        for name in names[:20]:
            t = self[name]
            tie = f" -> {self._alias[name]}" if name in self._alias else ""
            lines.append(
                f"  {name}: {tuple(t.shape)} {DType.from_torch(t.dtype).value}"
                f" {self._meta[name].role.value}{self._frozen_mark(name)}{tie}"
            )
        if len(names) > 20:
            rest = [n for n in names[20:] if self._frozen_mark(n)]
            more = f"  … {len(names) - 20} more"
            if rest:
                shown = ", ".join(rest[:5]) + (f", … (+{len(rest) - 5})" if len(rest) > 5 else "")
                more += f" ({len(rest)} frozen: {shown})"
            lines.append(more)
        return "\n".join(lines)

    def _frozen_mark(self, name: str) -> str:
        """``" frozen"`` for a parameter entry with ``trainable=False``, else ``""``."""
        m = self._meta[name]
        return " frozen" if m.role == Role.PARAM and not m.trainable else ""

    # ------------------------------------------------------------------ entries
    def add(
        self,
        name: str,
        value: torch.Tensor,
        *,
        role: Role | str = Role.PARAM,
        trainable: bool | None = None,
        tags: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Add a new entry; refuse a name that exists.

        Args:
            name: a valid dotted name.
            value: the tensor (kept as is, not copied).
            role: ``param`` or ``buffer``.
            trainable: defaults to ``True`` for params, ``False`` for buffers.
            tags: free labels.
            extra: free JSON-able metadata.

        Raises:
            InvalidNameError: bad name or a non-tensor value.
            DuplicateNameError: the name exists.

        Example:
            >>> import torch
            >>> pd = ParamDict()
            >>> pd.add("bn.running_mean", torch.zeros(4), role="buffer")
            >>> pd.meta("bn.running_mean").trainable
            False
        """
        validate_name(name)
        ensure_new(name, self._order)
        _check_tensor(name, value)
        r = Role(role)
        self._values[name] = value
        self._meta[name] = EntryMeta(
            r,
            r is Role.PARAM if trainable is None else bool(trainable),
            tuple(tags),
            dict(extra or {}),
        )
        self._order[name] = None

    def remove(self, name: str) -> torch.Tensor:
        """Remove an entry and return its tensor.

        Removing a tie target keeps the storage alive under its first alias, which becomes the
        stored entry of the group; no data is lost.

        Args:
            name: the entry.

        Returns:
            The removed entry's tensor.

        Raises:
            MissingNameError: no such entry.

        Example:
            >>> import torch
            >>> pd = ParamDict({"a": torch.ones(2)})
            >>> pd.remove("a").tolist()
            [1.0, 1.0]
        """
        value = self[name]
        if name in self._alias:
            del self._alias[name]
        else:
            aliases = [a for a, t in self._alias.items() if t == name]
            del self._values[name]
            if aliases:
                heir = aliases[0]
                del self._alias[heir]
                self._values[heir] = value
                for a in aliases[1:]:
                    self._alias[a] = heir
        del self._meta[name]
        del self._order[name]
        return value

    def update(
        self,
        name: str,
        value: torch.Tensor,
        *,
        allow_shape_change: bool = False,
        allow_dtype_change: bool = False,
    ) -> None:
        """Give an entry a new value.

        With the same shape and dtype the value is copied *into* the existing tensor, so an
        entry that shares storage with a model (``from_module``) or with tied names changes
        for all of them. A different shape or dtype is refused unless allowed; then the entry
        (and its tie group) gets the new tensor object.

        Args:
            name: the entry.
            value: the new value.
            allow_shape_change: accept another shape.
            allow_dtype_change: accept another dtype.

        Raises:
            MissingNameError: no such entry.
            ShapeMismatchError: another shape, not allowed.
            DTypeMismatchError: another dtype, not allowed.

        Example:
            >>> import torch
            >>> pd = ParamDict({"w": torch.zeros(2)})
            >>> pd.update("w", torch.ones(2)); pd["w"].tolist()
            [1.0, 1.0]
        """
        import torch

        old = self[name]
        _check_tensor(name, value)
        same_shape = tuple(old.shape) == tuple(value.shape)
        same_dtype = old.dtype == value.dtype
        if not same_shape and not allow_shape_change:
            raise ShapeMismatchError(
                f"entry {name!r}: has shape {tuple(old.shape)}, new value has "
                f"{tuple(value.shape)} (pass allow_shape_change=True to replace it)"
            )
        if not same_dtype and not allow_dtype_change:
            raise DTypeMismatchError(
                f"entry {name!r}: has dtype {old.dtype}, new value has {value.dtype} "
                "(pass allow_dtype_change=True to replace it)"
            )
        if same_shape and same_dtype and old.device.type != "meta":
            with torch.no_grad():
                old.copy_(value)
        else:
            self._values[self._alias.get(name, name)] = value

    def meta(self, name: str) -> EntryMeta:
        """The metadata of an entry.

        Args:
            name: the entry.

        Returns:
            Its :class:`EntryMeta`.

        Example:
            >>> import torch
            >>> ParamDict({"w": torch.zeros(1)}).meta("w").role.value
            'param'
        """
        if name not in self._meta:
            raise missing(name, self._order)
        return self._meta[name]

    def set_meta(self, name: str, **changes: Any) -> None:
        """Change fields of an entry's metadata (``role``, ``trainable``, ``tags``, ``extra``).

        Args:
            name: the entry.
            **changes: the fields to set.

        Example:
            >>> import torch
            >>> pd = ParamDict({"w": torch.zeros(1)})
            >>> pd.set_meta("w", trainable=False, tags=("frozen",))
            >>> pd.meta("w").tags
            ('frozen',)
        """
        m = self.meta(name)
        if "role" in changes:
            changes["role"] = Role(changes["role"])
        if "tags" in changes:
            changes["tags"] = tuple(changes["tags"])
        self._meta[name] = replace(m, **changes)

    # ------------------------------------------------------------------ names
    def rename(
        self,
        old: str | None = None,
        new: str | None = None,
        *,
        rules: Sequence[tuple[str, str]] | None = None,
    ) -> dict[str, str]:
        """Rename one entry, or every entry by ordered regex rules; collisions are refused.

        Args:
            old: the entry to rename (with ``new``).
            new: its new name.
            rules: ``(regex, replacement)`` pairs applied to all names instead.

        Returns:
            old name → new name for the names that changed.

        Raises:
            MissingNameError: ``old`` does not exist.
            DuplicateNameError: a new name collides; nothing is renamed.

        Example:
            >>> import torch
            >>> pd = ParamDict({"module.fc.weight": torch.zeros(1)})
            >>> pd.rename(rules=[(r"^module\\.", "")])
            {'module.fc.weight': 'fc.weight'}
        """
        if rules is not None:
            mapping = apply_renames(self._order, rules)
        else:
            if old is None or new is None:
                raise InvalidNameError("rename: give old and new, or rules=")
            if old not in self._order:
                raise missing(old, self._order)
            validate_name(new)
            if new != old:
                ensure_new(new, self._order)
            mapping = {n: (new if n == old else n) for n in self._order}
        self._values = {mapping[k]: v for k, v in self._values.items()}
        self._alias = {mapping[k]: mapping[v] for k, v in self._alias.items()}
        self._meta = {mapping[k]: v for k, v in self._meta.items()}
        self._order = {mapping[k]: None for k in self._order}
        return {k: v for k, v in mapping.items() if k != v}

    def _subset(self, names: Iterable[str], rename: Mapping[str, str] | None = None) -> ParamDict:
        keep = list(names)
        kept = set(keep)
        out = ParamDict(metadata=self.metadata)
        rn = rename or {}
        holder: dict[str, str] = {}  # stored name not kept → the kept alias now holding it
        for name in keep:
            new = rn.get(name, name)
            target = self._alias.get(name)
            if target is not None and target in kept:
                out._alias[new] = rn.get(target, target)
            elif target is not None and target in holder:
                out._alias[new] = holder[target]
            else:  # a stored entry, or the first kept alias of a group whose target is not kept
                out._values[new] = self[name]
                if target is not None:
                    holder[target] = new
            out._meta[new] = self._meta[name]
            out._order[new] = None
        return out

    def select(self, pattern: Pattern) -> ParamDict:
        """Entries whose names match a glob or ``re:`` regex — sharing tensors, no copy.

        Args:
            pattern: glob (``*`` crosses dots), ``re:<regex>`` (full match), or a list.

        Returns:
            A new ParamDict over the same tensor objects (in-place changes show in both);
            ties inside the selection are kept.

        Example:
            >>> import torch
            >>> pd = ParamDict({"a.weight": torch.zeros(1), "a.bias": torch.zeros(1)})
            >>> list(pd.select("re:.*bias"))
            ['a.bias']
        """
        match = compile_pattern(pattern)
        return self._subset(n for n in self._order if match(n))

    def prefix(self, prefix: str) -> ParamDict:
        """Entries under ``prefix.``, with names relative to it — sharing tensors.

        Args:
            prefix: a dotted prefix such as ``"encoder"`` or ``"layers.0"``.

        Returns:
            A new ParamDict over the same tensor objects.

        Example:
            >>> import torch
            >>> pd = ParamDict({"enc.0.weight": torch.zeros(1), "dec.weight": torch.zeros(1)})
            >>> list(pd.prefix("enc"))
            ['0.weight']
        """
        p = prefix.rstrip(".") + "."
        names = [n for n in self._order if n.startswith(p)]
        return self._subset(names, {n: n[len(p) :] for n in names})

    def to_nested(self) -> dict[str, Any]:
        """Nested dicts by name segment: ``{"fc1": {"weight": t, "bias": t}}``.

        Returns:
            The nested dict (ties are the same tensor object in both places).

        Raises:
            InvalidNameError: a name is both a leaf and a prefix (``a`` and ``a.b``).

        Example:
            >>> import torch
            >>> ParamDict({"fc.weight": torch.zeros(1)}).to_nested()["fc"]["weight"].shape
            torch.Size([1])
        """
        out: dict[str, Any] = {}
        for name in self._order:
            node = out
            *parents, leaf = name.split(".")
            for seg in parents:
                node = node.setdefault(seg, {})
                if not isinstance(node, dict):
                    raise InvalidNameError(f"entry {name!r}: {seg!r} is also a leaf entry")
            if leaf in node:
                raise InvalidNameError(f"entry {name!r}: is also a prefix of other entries")
            node[leaf] = self[name]
        return out

    @classmethod
    def from_pytree(cls, tree: Any, sep: str = ".") -> ParamDict:
        """Build from a JAX parameter tree: nested dicts / lists of ``jax.Array`` or numpy
        arrays (Flax ``params``, an NNX ``State``, Haiku), or an Equinox module; names are the
        tree paths joined by ``sep``, a leaf shared by two paths becomes a tie. See
        :func:`paramscope._pytree.from_pytree`.

        Args:
            tree: the tree.
            sep: the name separator.

        Returns:
            A ParamDict of CPU torch tensors.

        Example:
            >>> import numpy as np
            >>> pd = ParamDict.from_pytree({"dense": {"kernel": np.ones((2, 3), np.float32)}})
            >>> list(pd), tuple(pd["dense.kernel"].shape)
            (['dense.kernel'], (2, 3))
        """
        from ._pytree import from_pytree

        out = from_pytree(tree, sep)
        return out if cls is ParamDict else cls(out)

    def to_pytree(self, sep: str = ".", *, like: Any = None) -> Any:
        """The nested-dict tree of numpy arrays (the inverse of :meth:`from_pytree`; exact,
        lists and tuples restored when this ParamDict came from a tree); with ``like``, a tree
        of that tree's type (an Equinox module, an NNX ``State``). See
        :func:`paramscope._pytree.to_pytree`.

        Args:
            sep: the name separator.
            like: a tree whose structure to fill.

        Returns:
            The tree.

        Example:
            >>> import numpy as np
            >>> tree = {"dense": {"kernel": np.ones((2, 3), np.float32)}}
            >>> ParamDict.from_pytree(tree).to_pytree()["dense"]["kernel"].shape
            (2, 3)
        """
        from ._pytree import to_pytree

        return to_pytree(self, sep, like=like)

    @classmethod
    def from_nested(
        cls, nested: Mapping[str, Any], *, metadata: Mapping[str, str] | None = None
    ) -> ParamDict:
        """Build from nested dicts of tensors (the inverse of :meth:`to_nested`).

        Args:
            nested: dicts whose leaves are tensors.
            metadata: free str → str metadata.

        Returns:
            A ParamDict with dotted names.

        Example:
            >>> import torch
            >>> list(ParamDict.from_nested({"fc": {"weight": torch.zeros(1)}}))
            ['fc.weight']
        """
        flat: list[tuple[str, Any]] = []

        def walk(node: Mapping[str, Any], prefix: str) -> None:
            for k, v in node.items():
                name = f"{prefix}.{k}" if prefix else str(k)
                if isinstance(v, Mapping):
                    walk(v, name)
                else:
                    flat.append((name, v))

        walk(nested, "")
        return cls(flat, metadata=metadata)

    # ------------------------------------------------------------------ ties
    def tie(self, name: str, target: str) -> None:
        """Make ``name`` an alias of ``target``'s storage (the same tensor object).

        ``name`` may be new or exist with the same shape and dtype (its own value is dropped).
        Aliases of ``name`` follow it to ``target``.

        Args:
            name: the alias.
            target: the entry that holds the storage (an alias resolves to its target).

        Raises:
            MissingNameError: ``target`` does not exist.
            ShapeMismatchError / DTypeMismatchError: ``name`` exists with another shape/dtype.

        Example:
            >>> import torch
            >>> pd = ParamDict({"wte.weight": torch.randn(5, 3)})
            >>> pd.tie("lm_head.weight", "wte.weight")
            >>> pd["lm_head.weight"] is pd["wte.weight"], pd.ties()
            (True, [['wte.weight', 'lm_head.weight']])
        """
        if target not in self._order:
            raise missing(target, self._order)
        root = self._alias.get(target, target)
        if name == root:
            raise InvalidNameError(f"tie: {name!r} cannot be tied to itself")
        t = self._values[root]
        if name in self._order:
            cur = self[name]
            if tuple(cur.shape) != tuple(t.shape):
                raise ShapeMismatchError(
                    f"tie {name!r} → {target!r}: shapes {tuple(cur.shape)} and {tuple(t.shape)}"
                )
            if cur.dtype != t.dtype:
                raise DTypeMismatchError(
                    f"tie {name!r} → {target!r}: dtypes {cur.dtype} and {t.dtype}"
                )
            if name in self._values:
                del self._values[name]
                for a, tgt in self._alias.items():
                    if tgt == name:
                        self._alias[a] = root
        else:
            validate_name(name)
            self._meta[name] = self._meta[root]
            self._order[name] = None
        self._alias[name] = root

    def untie(self, name: str) -> None:
        """Give an alias its own copy of the storage.

        Args:
            name: an alias.

        Raises:
            InvalidNameError: ``name`` is not an alias.

        Example:
            >>> import torch
            >>> pd = ParamDict({"a": torch.zeros(1)}); pd.tie("b", "a"); pd.untie("b")
            >>> pd["a"] is pd["b"]
            False
        """
        if name not in self._alias:
            raise InvalidNameError(f"untie: {name!r} is not an alias of another entry")
        target = self._alias.pop(name)
        self._values[name] = self._values[target].clone()

    def ties(self) -> list[list[str]]:
        """Tie groups: ``[stored name, alias, ...]`` each.

        Returns:
            One list per group.
        """
        groups: dict[str, list[str]] = {}
        for a, t in self._alias.items():
            groups.setdefault(t, [t]).append(a)
        return list(groups.values())

    def alias_of(self, name: str) -> str | None:
        """The stored name ``name`` is an alias of, or ``None`` when it holds its own storage.

        Args:
            name: the entry.

        Returns:
            The target name or ``None``.
        """
        return self._alias.get(name)

    # ------------------------------------------------------------------ views of the whole
    def numel(self) -> int:
        """Elements stored, ties counted once.

        Returns:
            The element count.
        """
        return sum(t.numel() for t in self._values.values())

    def stored(self) -> list[str]:
        """Names that hold their own storage (not aliases), in order.

        Returns:
            The names.
        """
        return [n for n in self._order if n not in self._alias]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A plain ``dict`` name → tensor (ties are the same object).

        Returns:
            The dict.
        """
        return {n: self[n] for n in self._order}

    def manifest(self) -> Manifest:
        """The :class:`Manifest` of this dict (shapes, dtypes, roles; no locations).

        Returns:
            A manifest with format ``paramdict`` and exact roles.
        """
        entries = []
        for name in self._order:
            t = self[name]
            m = self._meta[name]
            shape = tuple(t.shape)
            dtype = DType.from_torch(t.dtype)
            if dtype is DType.F4:
                shape = (*shape[:-1], shape[-1] * 2) if shape else (2,)
            entries.append(
                Entry(
                    name,
                    shape,
                    dtype,
                    role=m.role,
                    trainable=m.trainable,
                    tie=self._alias.get(name),
                    tags=m.tags,
                    extra=m.extra,
                )
            )
        return Manifest(
            entries, format=Format.PARAMDICT, roles=RoleSource.EXACT, metadata=self.metadata
        )

    @classmethod
    def from_module(cls, model: torch.nn.Module, *, buffers: str = "persistent") -> ParamDict:
        """A ParamDict sharing storage with a model's parameters and buffers (no copy).

        Parameters reachable by several paths (tied weights, shared modules) become ties,
        found by object identity — never by ``data_ptr``, which is 0 on the meta device.
        Parameters registered directly on containers and in ``ParameterList`` /
        ``ParameterDict`` are included.

        Args:
            model: any ``torch.nn.Module``, on any device including ``meta``.
            buffers: ``"persistent"`` (as in ``state_dict``), ``"all"`` (non-persistent ones
                too, tagged ``extra={"persistent": False}``) or ``"none"``.

        Returns:
            The ParamDict; params have role ``param`` and ``trainable = requires_grad``.

        Raises:
            TargetError: the model holds tensors a ParamDict cannot share, so it would
                silently have fewer entries than the model: lazy modules not yet run
                (``nn.LazyLinear`` before its first forward; the message names the
                uninitialised tensors: run one forward pass first), or weights packed outside
                ``_parameters`` (``torch.ao.quantization.quantize_dynamic``; the message names
                the modules: :func:`paramscope.count` counts them by logical shape). There
                is no option to skip them: a ParamDict carries no notes saying what is left
                out.

        Example:
            >>> import torch
            >>> pd = ParamDict.from_module(torch.nn.Linear(784, 10))
            >>> pd.numel()
            7850
        """
        from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

        if buffers not in ("persistent", "all", "none"):
            raise InvalidNameError(f"buffers={buffers!r}: expected 'persistent', 'all' or 'none'")
        out = cls()
        first: dict[int, str] = {}
        lazy: list[str] = []
        packed: list[str] = []
        for mod_name, mod in model.named_modules(remove_duplicate=False):
            pre = f"{mod_name}." if mod_name else ""
            if _holds_packed(mod) and not any(mod_name.startswith(f"{q}.") for q in packed):
                packed.append(mod_name)
            for pname, p in mod._parameters.items():
                if p is None:
                    continue
                if isinstance(p, UninitializedParameter):
                    lazy.append(pre + pname)
                    continue
                out._add_shared(first, pre + pname, p, Role.PARAM, bool(p.requires_grad), {})
            if buffers == "none":
                continue
            non_persistent = getattr(mod, "_non_persistent_buffers_set", set())
            for bname, b in mod._buffers.items():
                if b is None:
                    continue
                persistent = bname not in non_persistent
                if not persistent and buffers == "persistent":
                    continue
                if isinstance(b, UninitializedBuffer):
                    lazy.append(pre + bname)
                    continue
                extra = {} if persistent else {"persistent": False}
                out._add_shared(first, pre + bname, b, Role.BUFFER, False, extra)
        if lazy:
            raise TargetError(
                f"ParamDict.from_module: expected initialised tensors, found {len(lazy)} "
                f"uninitialised lazy ones ({listed(lazy)}): their shapes are known only after "
                "the first forward; run one forward pass (model(example_input)) first"
            )
        if packed:
            named = [f"{p!r} ({model.get_submodule(p)._get_name()})" for p in packed]
            raise TargetError(
                f"ParamDict.from_module: expected weights in _parameters, found {len(packed)} "
                f"modules with packed (quantised) weights ({listed(named, quote=False)}) that "
                "a ParamDict cannot share; use paramscope.count(model), which counts packed "
                "weights of known types by their logical shape"
            )
        return out

    def _add_shared(
        self,
        first: dict[int, str],
        name: str,
        t: Any,
        role: Role,
        trainable: bool,
        extra: dict[str, Any],
    ) -> None:
        if name in self._order:
            return
        if id(t) in first:
            self._alias[name] = first[id(t)]
            self._meta[name] = self._meta[first[id(t)]]
        else:
            first[id(t)] = name
            self._values[name] = t.detach()
            self._meta[name] = EntryMeta(role, trainable, (), extra)
        self._order[name] = None
