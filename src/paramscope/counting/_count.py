"""Counting parameters: totals, bytes by dtype and a per-prefix tree, ties counted once.

Works on a :class:`Manifest` (so on any checkpoint path, from headers alone), a
:class:`ParamDict`, or a ``torch.nn.Module`` (through ``ParamDict.from_module``).
"""

from __future__ import annotations

import contextlib
import os
import re
import reprlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .._enums import Format, Role, RoleSource
from .._manifest import Entry, Manifest
from .._moe import MoE, MoETally, logical_shape
from .._names import Pattern, group_prefix
from ._quant import QuantTally as _QuantTally

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict
    from ._lora import LoraSpec

__all__ = ["Count", "Group", "Node", "count", "group", "tie_candidates", "to_manifest"]


@dataclass
class Node:
    """One name prefix in the tree, with cumulative counts of everything under it.

    Attributes:
        path: the dotted prefix (``""`` for the root).
        params: parameter elements under it.
        trainable: trainable parameter elements under it.
        buffers: buffer elements under it.
        bytes: bytes under it.
        entries: stored entries under it.
        kind: a module type name where known (module sources), else ``None``.
        children: child prefixes by segment, in first-seen order.
        quant_meta: elements of quantisation metadata under it (scales, zero points,
            absmax, ...: neither parameters nor buffers).
    """

    path: str = ""
    params: int = 0
    trainable: int = 0
    buffers: int = 0
    bytes: int = 0
    entries: int = 0
    kind: str | None = None
    children: dict[str, Node] = field(default_factory=dict)
    quant_meta: int = 0

    def _add(self, e: Entry) -> None:
        if _is_quant_meta(e):
            self.quant_meta += e.numel
        elif e.role is Role.PARAM:
            n = e.logical_numel  # quantised entries count what they stand for
            self.params += n
            self.trainable += n if e.trainable else 0
        else:
            self.buffers += e.numel
        self.bytes += e.nbytes
        self.entries += 1

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        """A JSON-able dict of this node and its children down to ``depth`` levels.

        Args:
            depth: how many levels of children to include (``None``: all).

        Returns:
            ``{"path", "params", "trainable", "buffers", "bytes", "entries", "kind",
            "children": [...]}``.
        """
        out: dict[str, Any] = {
            "path": self.path,
            "params": self.params,
            "trainable": self.trainable,
            "buffers": self.buffers,
            "bytes": self.bytes,
            "entries": self.entries,
        }
        if self.quant_meta:  # quantised checkpoints only: other trees keep their keys
            out["quant_meta"] = self.quant_meta
        if self.kind is not None:
            out["kind"] = self.kind
        if depth is None or depth > 0:
            out["children"] = [
                c.to_dict(None if depth is None else depth - 1) for c in self.children.values()
            ]
        return out


def _is_quant_meta(e: Entry) -> bool:
    """Whether ``e`` is quantisation metadata (see :mod:`paramscope._quantlayouts`)."""
    extra = e.extra
    if not extra:
        return False
    rec = extra.get("quant_layout")
    return rec is not None and rec.get("part") == "meta"


class _Children(dict):  # type: ignore[type-arg]
    """A node's children, built from the entries under it when first looked at.

    :func:`count_manifest` fills the root's totals in one pass; the tree below costs a node
    per distinct name prefix (a hostile header can name millions), so each level is built only
    when something reads it, from the names under its node (one pointer per entry).
    """

    __slots__ = ("_pending",)

    def __init__(self, m: Manifest, names: list[str] | None, depth: int, prefix: str) -> None:
        super().__init__()
        self._pending: tuple[Manifest, list[str] | None, int, str] | None = (
            m,
            names,
            depth,
            prefix,
        )

    def _fill(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        m, names, depth, prefix = pending
        entries = m.values() if names is None else (m[n] for n in names)
        under: dict[str, list[str]] = {}
        for e in entries:
            if e.tie is not None:
                continue
            parts = e.name.split(".", depth + 1)
            if len(parts) <= depth + 1:  # a leaf at this level
                continue
            seg = parts[depth]
            child = dict.get(self, seg)
            if child is None:
                child = Node(f"{prefix}.{seg}" if depth else seg)
                dict.__setitem__(self, seg, child)
                child.children = _Children(m, under.setdefault(seg, []), depth + 1, child.path)
            child._add(e)
            under[seg].append(e.name)

    def __getitem__(self, key: str) -> Node:
        self._fill()
        return dict.__getitem__(self, key)

    def __iter__(self) -> Iterator[str]:
        self._fill()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._fill()
        return dict.__len__(self)

    def __contains__(self, key: object) -> bool:
        self._fill()
        return dict.__contains__(self, key)

    def __eq__(self, other: object) -> bool:
        self._fill()
        if isinstance(other, _Children):
            other._fill()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._fill()
        return dict.__repr__(self)

    def __reduce__(self) -> Any:
        self._fill()
        return (dict, (dict(self.items()),))

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self._fill()
        return dict.get(self, key, default)

    def keys(self) -> Any:
        self._fill()
        return dict.keys(self)

    def values(self) -> Any:
        self._fill()
        return dict.values(self)

    def items(self) -> Any:
        self._fill()
        return dict.items(self)

    def copy(self) -> dict[str, Node]:
        self._fill()
        return dict(dict.items(self))

    def __setitem__(self, key: str, value: Node) -> None:
        self._fill()
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._fill()
        dict.__delitem__(self, key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._fill()
        return dict.setdefault(self, key, default)

    def pop(self, key: str, *default: Any) -> Any:
        self._fill()
        return dict.pop(self, key, *default)

    def popitem(self) -> Any:
        self._fill()
        return dict.popitem(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._fill()
        dict.update(self, *args, **kwargs)

    def clear(self) -> None:
        self._pending = None
        dict.clear(self)

    def __reversed__(self) -> Iterator[str]:
        self._fill()
        return dict.__reversed__(self)


@dataclass
class Count:
    """The result of :func:`count`.

    Attributes:
        params: parameter elements (role ``param``), ties counted once.
        trainable: trainable parameter elements.
        frozen: frozen parameter elements (``params - trainable``).
        buffers: buffer elements.
        bytes: bytes of stored values (ties once).
        by_dtype: dtype → ``{"elements", "bytes"}``.
        roles: ``exact`` or ``inferred``.
        entries: stored entries (ties once).
        ties: tie groups, ``[stored name, alias, ...]``: from the source, and found by
            content with ``count(..., values=True)``.
        tree: the per-prefix tree.
        format: where the counts came from.
        source: the path, when there is one.
        notes: what the reader or counter wants said.
        nonpersistent_buffers: buffer elements left out of ``state_dict`` (modules only);
            included in ``buffers``.
        uninitialized: lazy tensors not counted (modules only).
        pruned: pruned parameter → ``{"params", "nonzero"}`` (modules only).
        shared: module path → first path of the same instance (modules only).
        active_params: parameters used per token by a mixture-of-experts model (everything
            dense, input embedding included, + shared experts + the top-k routed experts);
            ``None`` when the model is not MoE or its top-k is not known (a note says so).
        moe: the experts found (:class:`paramscope._moe.MoE`: experts, top-k, where top-k
            came from, routed and shared params, the count without the embedding lookup);
            ``None`` when no routed expert was found.
        quant_meta: elements of quantisation metadata (scales, zero points, absmax, g_idx,
            quant maps): counted apart, neither in ``params`` nor in ``buffers``.
        stored_elements: elements as stored (packed values, metadata, everything; ties
            once).
        bits_per_weight: over the quantised weights: stored bytes of their data and
            metadata × 8 / their logical parameters; ``None`` when nothing is quantised.
        quantization: what is quantised and how
            (:meth:`paramscope.counting._quant.QuantTally.summary`), or ``None``.
        lora: with ``count(..., lora=LoraSpec(...))``: the adapters added
            (:meth:`paramscope.counting._lora.LoraPlan.to_dict`); for a peft adapter folder:
            what its ``adapter_config.json`` says (base model, r, alpha, targets); else
            ``None``.
    """

    params: int
    trainable: int
    frozen: int
    buffers: int
    bytes: int
    by_dtype: dict[str, dict[str, int]]
    roles: RoleSource
    entries: int
    ties: list[list[str]]
    tree: Node
    format: str
    source: str | None = None
    notes: list[str] = field(default_factory=list)
    nonpersistent_buffers: int = 0
    uninitialized: list[str] = field(default_factory=list)
    pruned: dict[str, dict[str, int | None]] = field(default_factory=dict)
    shared: dict[str, str] = field(default_factory=dict)
    active_params: int | None = None
    moe: MoE | None = None
    quant_meta: int = 0
    stored_elements: int = 0
    bits_per_weight: float | None = None
    quantization: dict[str, Any] | None = None
    lora: dict[str, Any] | None = None

    @property
    def total(self) -> int:
        """Parameters plus buffer elements."""
        return self.params + self.buffers

    def to_dict(self, depth: int | None = 1) -> dict[str, Any]:
        """The JSON form used by ``paramscope count --json``.

        Args:
            depth: tree levels to include.

        Returns:
            ``params, trainable, frozen, buffers, bytes, by_dtype, roles, entries, ties,
            format, source, notes, tree``.
        """
        return {
            "source": self.source,
            "format": self.format,
            "params": self.params,
            "params_logical": self.params,
            "active_params": self.active_params,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "buffers": self.buffers,
            "quant_meta": self.quant_meta,
            "stored_elements": self.stored_elements,
            "bits_per_weight": self.bits_per_weight,
            "quantization": self.quantization,
            "lora": self.lora,
            "bytes": self.bytes,
            "entries": self.entries,
            "moe": None if self.moe is None else self.moe.to_dict(),
            "by_dtype": self.by_dtype,
            "roles": self.roles.value,
            "ties": self.ties,
            "nonpersistent_buffers": self.nonpersistent_buffers,
            "uninitialized": self.uninitialized,
            "pruned": self.pruned,
            "shared": self.shared,
            "notes": self.notes,
            "tree": self.tree.to_dict(depth),
        }

    def to_text(self, width: int | None = None) -> str:
        """The human form ``paramscope count`` prints: totals with short forms, bytes by
        dtype, ties, nonzeros of pruned tensors, notes.

        Args:
            width: unused (the lines are never wider than their content); the same signature
                as every report's ``to_text``.

        Returns:
            The text, without a final newline; strings from files are escaped.

        Example:
            >>> from paramscope import DType, Entry, Manifest, count
            >>> print(count(Manifest([Entry("w", (3, 4), DType.F32)])).to_text())
            (in memory)  [paramdict, roles exact]
              params                     12  (12)
              trainable                  12  (12)
              frozen                      0  (0)
              buffers                     0  (0)
              bytes                      48  (48 B)
              entries                     1
              F32                        12  elements, 48 B
        """
        from .._text import printable_tree
        from ._render import count_text

        return count_text(printable_tree(self.to_dict(depth=0)))


def to_manifest(source: Any, what: str = "count") -> Manifest:
    """Any countable source as a :class:`Manifest`.

    Args:
        source: a path, a Manifest, a ParamDict, a ``torch.nn.Module`` or a dict of tensors.
        what: the public function asking, for the message (``"diagram"``, ``"inspect"`` …).

    Returns:
        The manifest (read from headers for paths).

    Raises:
        ArgumentTypeError: ``source`` is none of those.

    Example:
        >>> to_manifest(42, "diagram")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paramscope._errors.ArgumentTypeError: diagram: expected a checkpoint path or TARGET ...
    """
    if isinstance(source, Manifest):
        return source
    if isinstance(source, (str, os.PathLike)):
        from .._targets import target_manifest

        return target_manifest(source)
    from .._paramdict import ParamDict  # not needed on the header-only path above

    if isinstance(source, ParamDict):
        return source.manifest()
    if hasattr(source, "named_parameters"):
        from .._modtree import scan_module

        return scan_module(source).manifest()
    from .._pytree import is_pytree, pytree_manifest

    if is_pytree(source):  # JAX / Flax / Equinox parameters: shapes alone, shared leaves once
        return pytree_manifest(source)
    if isinstance(source, dict):
        return ParamDict(source).manifest()
    from .._errors import ArgumentTypeError

    raise ArgumentTypeError(
        f"{what}: expected a checkpoint path or TARGET (zoo:NAME, package.module:callable, "
        "config.json), a Manifest, a ParamDict, a dict of tensors, a torch.nn.Module or a "
        "JAX/Flax/Equinox parameter tree, "
        f"found {type(source).__name__} {reprlib.repr(source)}"
    )


def count(
    source: str | os.PathLike[str] | Manifest | ParamDict | torch.nn.Module,
    *,
    nonzero: bool = False,
    values: bool = False,
    lora: LoraSpec | None = None,
) -> Count:
    """Count parameters exactly: totals, trainable/frozen, buffers, bytes by dtype, a tree.

    Ties (aliases of one storage) are counted once, under the stored name. Nonzero counts of
    sparse tensors come for free where they are recorded (pruned modules with masks, files
    written by :func:`paramscope.prune`); ``nonzero=True`` also reads the values (a model's
    tensors, or a checkpoint streamed tensor by tensor) and reports every parameter that has
    zeros in :attr:`Count.pruned`.

    Ties a header cannot show (a DCP checkpoint stores every name of a tie apart; a file may
    hold an equal copy under a second name) are found with ``values=True``: every stored
    parameter is read, one tensor at a time, and digested (xxh3-128 over shape, dtype and
    bytes); parameters with the same shape, dtype and digest are counted once, listed in
    :attr:`Count.ties` (first name in file order as the stored one) and said in a note. This
    is a content test, so an accidental equal copy is merged too. Constant tensors (every
    element the same bytes, one-element tensors included: fresh LayerNorm weights, zero
    biases) are left apart, since equal init values are no sign of a tie; buffers and
    quantised entries (equal packed bytes may have other scales) are not compared either.
    ``nonzero`` and ``values`` share the one read.

    Header-only, a DCP checkpoint without paramscope's sidecar gets a note naming the likely
    ties (:func:`tie_candidates`).

    Args:
        source: any TARGET (a checkpoint file or folder, ``zoo:NAME``,
            ``package.module:callable``, an HF ``config.json``), a Manifest, a ParamDict or a
            module.
        nonzero: read values to count the nonzeros of every parameter with zeros.
        values: read values to find ties by content (see above).
        lora: count the model as it would be trained with these LoRA adapters
            (:class:`paramscope.LoraSpec`): the base is frozen, the adapters are added and
            trainable (``params`` = base + adapters, as peft prints), :attr:`Count.lora`
            says how many modules, adapter parameters and bytes.

    Returns:
        A :class:`Count`.

    Example:
        >>> import torch, paramscope
        >>> c = paramscope.count(torch.nn.Linear(784, 10))
        >>> c.params, c.trainable, c.buffers
        (7850, 7850, 0)
        >>> w = torch.randn(3, 4)
        >>> c = paramscope.count({"a": w, "b": w.clone()}, values=True)
        >>> c.params, c.ties
        (12, [['a', 'b']])
    """
    label = None
    if isinstance(source, (str, os.PathLike)):  # a TARGET: checkpoint, zoo:, config …
        from .._targets import resolve_source

        label = os.fspath(source)
        source = resolve_source(source)
    scan = None
    if (nonzero or values) and not isinstance(source, Manifest):
        from .._pytree import from_pytree, is_pytree

        if is_pytree(source):  # values are read: as a ParamDict (shared leaves tied)
            source = from_pytree(source)
    if hasattr(source, "named_parameters") and not isinstance(source, (Manifest, dict)):
        from .._modtree import scan_module

        scan = scan_module(source)  # type: ignore[arg-type]
        m = scan.manifest()
        recorded = set(scan.pruned)
    else:
        m = to_manifest(source)
        recorded = (  # only nonzero=True reads it: no pass over a huge header otherwise
            {e.name for e in m.values() if _recorded_nonzero(e) is not None} if nonzero else set()
        )
    found: dict[str, dict[str, int | None]] = {}
    digests: dict[str, tuple[Any, ...]] = {}
    notes: list[str] = []
    if nonzero or values:
        with _param_tensors(source, m, scan) as pairs:
            if pairs is None:
                notes.append("values not read: a Manifest holds none (nonzero / ties by content)")
            else:
                for e, t in pairs:
                    if t is None or t.is_meta:
                        continue
                    if nonzero and e.name not in recorded:
                        _nonzero_one(e, t, found)
                    if values:
                        key = _content_key(e, t)
                        if key is not None:
                            digests[e.name] = key
    merged: list[list[str]] = []
    if values:
        m, merged = _content_ties(m, digests)
    plan = None
    if lora is not None:
        from ._lora import lora_manifest, module_layers

        m, plan = lora_manifest(m, lora, module_layers(source) if scan is not None else None)
    c = count_manifest(m, tie_note=not values)
    if plan is not None:
        c.lora = plan.to_dict()
        c.notes.append(
            f"LoRA {lora.describe()}: {len(plan.modules)} modules adapted, "
            f"{plan.adapter_params:,} adapter parameters trainable "
            f"({plan.adapter_bytes:,} bytes in {plan.spec.dtype}), the base frozen"
        )
    elif label is not None:
        from ._lora import adapter_folder_info

        c.lora = adapter_folder_info(label)
        if c.lora is not None:
            c.notes.append(
                f"peft {c.lora['peft_type']} adapter of base "
                f"{c.lora['base_model'] or '(not named in adapter_config.json)'}: "
                f"r={c.lora['r']}, alpha={c.lora['alpha']}, targets {c.lora['targets']}; "
                "params are the adapter's own"
            )
    if scan is not None:
        c.uninitialized = scan.uninitialized
        c.pruned = dict(scan.pruned)
        c.shared = scan.shared
        _set_kinds(c.tree, scan.kinds)
    aliases = {n for g in merged for n in g[1:]}
    for name, v in found.items():
        if name not in aliases and name not in c.pruned:
            c.pruned[name] = v
    for name in aliases:
        c.pruned.pop(name, None)
    if merged:
        shown = "; ".join(" = ".join(g) for g in merged[:_MAX_NOTED])
        more = f"; and {len(merged) - _MAX_NOTED} more" if len(merged) > _MAX_NOTED else ""
        notes.append(
            f"{len(merged)} tie(s) found by content (same shape, dtype and bytes), counted "
            f"once: {shown}{more}; an accidental equal copy would be merged too"
        )
    elif values and digests:
        notes.append(f"no ties found by content among {len(digests)} non-constant parameters")
    c.notes.extend(notes)
    if c.source is None:  # a model built from a TARGET: named by the TARGET as given
        c.source = label
    return c


#: How many tie groups a note names before summarising the rest.
_MAX_NOTED = 5


def _recorded_nonzero(e: Entry) -> int | None:
    nnz = e.extra.get("nonzero")
    return nnz if isinstance(nnz, int) and not isinstance(nnz, bool) else None


@contextlib.contextmanager
def _param_tensors(source: Any, m: Manifest, scan: Any) -> Iterator[Any]:
    """``(entry, tensor)`` of every stored parameter of ``source``, read one at a time.

    Yields ``None`` when the source holds no values (a Manifest).
    """
    from .._paramdict import ParamDict

    if scan is not None:
        yield (
            (e, _module_tensor(source, e.name))
            for e in scan.entries
            if e.tie is None and e.role is Role.PARAM and "packed" not in e.tags
        )
    elif isinstance(source, (str, os.PathLike)):
        if m.format is Format.DCP:
            from ..io._dcp import iter_dcp_tensors

            wanted = [n for n, e in m.items() if e.tie is None and e.role is Role.PARAM]
            yield ((m[n], t) for n, t in iter_dcp_tensors(m.source or source, wanted))
        else:
            from ..io._reader import SourceReader

            with SourceReader(source) as reader:
                yield ((e, reader.read(e)) for e in reader.entries if e.role is Role.PARAM)
    elif isinstance(source, (ParamDict, dict)):
        pd = source if isinstance(source, ParamDict) else ParamDict(source)
        pm = pd.manifest()
        yield ((pm[n], pd[n]) for n in pd.stored() if pm[n].role is Role.PARAM)
    else:
        yield None


def _module_tensor(model: Any, name: str) -> Any:
    from .._modtree import owner

    mod, local = owner(model, name)
    return mod._parameters.get(local, mod._buffers.get(local))


def _nonzero_one(e: Entry, t: Any, out: dict[str, dict[str, int | None]]) -> None:
    import torch

    from .._values import widen

    if "quant" in e.extra:
        return
    w = widen(t)  # any dtype: F8, U64, FP4 pairs (values, not bytes)
    nnz = int(torch.count_nonzero(w))
    if nnz < w.numel():
        out[e.name] = {"params": w.numel(), "nonzero": nnz}


def _content_key(e: Entry, t: Any) -> tuple[Any, ...] | None:
    """``(shape, dtype, xxh3-128 of shape + dtype + bytes)``; ``None`` when not comparable.

    Constant tensors (init values) and quantised entries (equal packed bytes with other scales
    are other tensors) are not compared.
    """
    import torch
    import xxhash

    if "quant" in e.extra:
        return None
    flat = t.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return None
    raw = flat.view(torch.uint8).reshape(flat.numel(), -1)
    if flat.numel() == 1 or torch.equal(raw, raw[:1].expand_as(raw)):
        return None  # constant: an init value, no sign of a tie
    shape = tuple(int(s) for s in t.shape)
    h = xxhash.xxh3_128()
    h.update(repr((shape, str(t.dtype))).encode())
    h.update(raw.reshape(-1).cpu().numpy().data)
    return (shape, str(t.dtype), h.hexdigest())


def _content_ties(
    m: Manifest, digests: dict[str, tuple[Any, ...]]
) -> tuple[Manifest, list[list[str]]]:
    """``m`` with entries of equal content made aliases of the first; the new groups."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name in m:  # file order: the first name of a group is the stored one
        key = digests.get(name)
        if key is not None:
            groups.setdefault(key, []).append(name)
    merged = [g for g in groups.values() if len(g) > 1]
    if not merged:
        return m, []
    target = {a: g[0] for g in merged for a in g[1:]}
    out = []
    for e in m.values():
        if e.name in target:
            out.append(replace(e, tie=target[e.name]))
        elif e.tie is not None and e.tie in target:  # an alias of a name now an alias
            out.append(replace(e, tie=target[e.tie]))
        else:
            out.append(e)
    return m._with(out), merged


#: A name segment that marks an input embedding or output head, where ties live.
_TIE_WORDS = re.compile(r"(?:^|\.)(?:[^.]*embed[^.]*|wte|lm_head|shared|output)(?:\.|$)")
_LAYER_INDEX = re.compile(r"(?:^|\.)\d+(?:\.|$)")


def tie_candidates(m: Manifest) -> list[list[str]]:
    """Groups of entries that may be one tied tensor, judged from names, shapes and dtypes.

    The rule: parameters (not aliases already) of two or more dimensions that share shape and
    dtype, outside numbered layers (no name segment is all digits, so the per-layer repeats
    of a transformer, whose q/k/v share shapes, are never listed), in a group where at least
    one name has a segment that looks like an embedding or output head (containing
    ``embed``, or exactly ``wte``, ``lm_head``, ``shared`` or ``output``). This covers
    ``transformer.wte.weight`` / ``lm_head.weight`` (GPT-2), ``model.embed_tokens.weight`` /
    ``lm_head.weight`` (Llama), ``tok_embeddings.weight`` / ``output.weight`` (Meta's Llama),
    ``shared.weight`` / ``encoder.embed_tokens.weight`` / ... (T5, BART) and
    ``...word_embeddings.weight`` / ``cls.predictions.decoder.weight`` (BERT).

    Args:
        m: the manifest.

    Returns:
        The groups, each in file order.

    Example:
        >>> from paramscope import Manifest, Entry, DType
        >>> m = Manifest([Entry("wte.weight", (9, 4), DType.F32),
        ...               Entry("lm_head.weight", (9, 4), DType.F32)])
        >>> tie_candidates(m)
        [['wte.weight', 'lm_head.weight']]
    """
    groups: dict[tuple[Any, ...], list[str]] = {}
    for e in m.values():
        stored_param = e.tie is None and e.role is Role.PARAM
        if stored_param and len(e.shape) >= 2 and not _LAYER_INDEX.search(e.name):
            groups.setdefault((e.shape, e.dtype), []).append(e.name)
    return [g for g in groups.values() if len(g) > 1 and any(_TIE_WORDS.search(n) for n in g)]


def _tie_candidates_note(m: Manifest) -> str | None:
    """The header-only note of a DCP checkpoint without a sidecar, if it has candidates."""
    if m.format is not Format.DCP or m.roles is not RoleSource.INFERRED:
        return None
    found = tie_candidates(m)
    if not found:
        return None
    said = []
    for g in found[:_MAX_NOTED]:
        names = ", ".join(g[:-1]) + f" and {g[-1]}"
        said.append(f"{names} have the same shape and dtype and may be one tied tensor")
    more = f"; and {len(found) - _MAX_NOTED} more such groups" if len(found) > _MAX_NOTED else ""
    return (
        f"{'; '.join(said)}{more} (DCP stores every name of a tie apart, so each name is "
        "counted here); count --values (values=True) checks by content"
    )


def _set_kinds(node: Node, kinds: dict[str, str]) -> None:
    node.kind = kinds.get(node.path)
    for child in node.children.values():
        _set_kinds(child, kinds)


def count_manifest(m: Manifest, *, tie_note: bool = True) -> Count:
    """:func:`count` of a manifest.

    Args:
        m: the manifest.
        tie_note: add the note on likely ties of a DCP checkpoint without a sidecar
            (:func:`tie_candidates`).

    Returns:
        A :class:`Count`.
    """
    root = Node()
    nonpersistent = 0
    sparse: dict[str, dict[str, int | None]] = {}
    by_dtype: dict[str, dict[str, int]] = {}
    nested = False
    stored = 0
    quant = _QuantTally()
    experts = MoETally()
    for e in m.values():
        if e.tie is not None:
            continue
        numel = e.numel
        stored += numel
        name = e.name
        if e.role is Role.PARAM and ("exp" in name or "emb" in name or "wte" in name):
            experts.add(name, logical_shape(e), e.logical_numel)  # mixture of experts
        if e.extra:
            rec = e.extra.get("quant_layout")
            if rec is not None:
                quant.add(e, rec)
            nnz = _recorded_nonzero(e)
            if nnz is not None:  # recorded by prune
                sparse[e.name] = {"params": e.logical_numel, "nonzero": nnz}
            if e.extra.get("persistent") is False:
                nonpersistent += numel
        d = by_dtype.get(e.dtype.value)
        if d is None:
            d = by_dtype[e.dtype.value] = {"elements": 0, "bytes": 0}
        d["elements"] += numel
        d["bytes"] += e.dtype.nbytes(numel)
        root._add(e)
        nested = nested or "." in e.name
    if nested:  # the levels below the root are built when read (see _Children)
        root.children = _Children(m, None, 0, "")
    notes = list(m.notes)
    quantization = quant.summary(notes)
    said = _tie_candidates_note(m) if tie_note else None
    if said is not None:
        notes.append(said)
    moe, moe_notes = (
        experts.result(root.params, m.moe, frozenset(n for g in m.ties() for n in g))
        if experts.found
        else (None, [])
    )
    notes.extend(moe_notes)
    return Count(
        params=root.params,
        trainable=root.trainable,
        frozen=root.params - root.trainable,
        buffers=root.buffers,
        bytes=root.bytes,
        by_dtype=by_dtype,
        roles=m.roles,
        entries=root.entries,
        ties=m.ties(),
        tree=root,
        format=m.format.value,
        source=m.source,
        notes=notes,
        nonpersistent_buffers=nonpersistent,
        pruned=sparse,
        active_params=None if moe is None else moe.active_params,
        moe=moe,
        quant_meta=root.quant_meta,
        stored_elements=stored,
        bits_per_weight=None if quantization is None else quantization["bits_per_weight"],
        quantization=quantization,
    )


@dataclass(slots=True)  # a hostile header's inspect --depth 2 may make millions
class Group:
    """Entries sharing a name prefix, with subtotals (``inspect``'s rows).

    Attributes:
        prefix: the shared prefix (``""`` for names at the root).
        params: parameter elements (ties once).
        buffers: buffer elements.
        bytes: bytes (ties once).
        entries: the entries, aliases included (their counts are 0 in subtotals).
        quant_meta: elements of quantisation metadata (neither params nor buffers).
    """

    prefix: str
    params: int = 0
    buffers: int = 0
    bytes: int = 0
    entries: Sequence[Entry] = field(default_factory=list)
    quant_meta: int = 0

    def to_dict(self, *, stream: bool = False) -> dict[str, Any]:
        """JSON form: ``prefix, params, buffers, bytes, entries``.

        Args:
            stream: give ``entries`` as a lazy list whose dicts are made as it is iterated
                (for a sink that writes them one by one: a group of a hostile header may hold
                millions); a plain list otherwise.

        Returns:
            The dict (with ``quant_meta`` when the group holds quantisation metadata).
        """
        out: dict[str, Any] = {
            "prefix": self.prefix,
            "params": self.params,
            "buffers": self.buffers,
            "bytes": self.bytes,
            "entries": _Lazy(self.entries, Entry.to_dict)
            if stream
            else [e.to_dict() for e in self.entries],
        }
        if self.quant_meta:
            out["quant_meta"] = self.quant_meta
        return out


class _Lazy(list):  # type: ignore[type-arg]
    """A list-typed stand-in that maps ``fn`` over ``items`` as it is iterated (nothing kept).

    Only for sinks that iterate (``cli._output``): its own storage is empty, so code reading
    a list's items directly (the C json encoder) must not get it.
    """

    def __init__(self, items: Sequence[Any], fn: Any) -> None:
        super().__init__()
        self._items = items
        self._fn = fn

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return len(self._items) > 0

    def __iter__(self) -> Iterator[Any]:
        fn = self._fn
        return (fn(x) for x in self._items)

    def __eq__(self, other: object) -> bool:
        return list(self) == other

    __hash__ = None  # type: ignore[assignment]

    #: Marks a list that sinks must iterate item by item (``cli._output._chunks``).
    is_lazy = True


def _streamed(g: Group) -> dict[str, Any]:
    return g.to_dict(stream=True)


class _Named(Sequence[Entry]):
    """A group's entries held by name, each :class:`Entry` built when read (a group of a
    hostile header's millions of entries costs one pointer each; a group of one, the many
    groups of ``inspect --depth 2`` on one, holds its name without a list)."""

    __slots__ = ("_m", "_names")

    def __init__(self, m: Manifest) -> None:
        self._m = m
        self._names: str | list[str] | None = None

    def append(self, name: str) -> None:
        held = self._names
        if held is None:
            self._names = name
        elif isinstance(held, str):
            self._names = [held, name]
        else:
            held.append(name)

    def _list(self) -> list[str]:
        held = self._names
        return [] if held is None else [held] if isinstance(held, str) else held

    def __len__(self) -> int:
        held = self._names
        return 0 if held is None else 1 if isinstance(held, str) else len(held)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._m[n] for n in self._list()[i]]
        return self._m[self._list()[i]]

    def __iter__(self) -> Iterator[Entry]:
        m = self._m
        return (m[n] for n in self._list())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


def group(m: Manifest, depth: int, pattern: Pattern | None = None) -> list[Group]:
    """Group a manifest's entries by name prefix to ``depth`` segments, with subtotals.

    Subtotals count each stored value once (aliases add nothing), so they add up to the
    totals of :func:`count` on the same entries.

    Args:
        m: the manifest.
        depth: prefix depth (0: one group).
        pattern: an optional glob / ``re:`` filter on names.

    Returns:
        Groups in first-seen order.

    Example:
        >>> from paramscope import Manifest, Entry, DType
        >>> m = Manifest([Entry("a.0.w", (2,), DType.F32), Entry("a.1.w", (3,), DType.F32)])
        >>> [(g.prefix, g.params) for g in group(m, 2)]
        [('a.0', 2), ('a.1', 3)]
    """
    if pattern is not None:
        m = m.select(pattern)
    groups: dict[str, Group] = {}
    for e in m.values():
        key = group_prefix(e.name, depth)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(key, entries=_Named(m))
        g.entries.append(e.name)  # type: ignore[attr-defined]
        if e.tie is None:
            if _is_quant_meta(e):
                g.quant_meta += e.numel
            elif e.role is Role.PARAM:
                g.params += e.logical_numel
            else:
                g.buffers += e.numel
            g.bytes += e.nbytes
    return list(groups.values())


@dataclass
class Inspection:
    """The result of :func:`inspect`: entries grouped by prefix, and totals.

    Attributes:
        total: the :class:`Count` of the (filtered) entries.
        groups: the groups, subtotals adding up to the total.
        depth: the grouping depth.
        filter: the name filter applied, if any.
    """

    total: Count
    groups: list[Group]
    depth: int
    filter: Pattern | None = None

    def to_dict(self, *, stream: bool = False) -> dict[str, Any]:
        """JSON form used by ``paramscope inspect --json``.

        Args:
            stream: each group's ``entries`` as a lazy list (see :meth:`Group.to_dict`), for
                the CLI's sinks, which write them one at a time.

        Returns:
            ``source, format, roles, depth, filter, total, groups, notes``.
        """
        t = self.total
        return {
            "source": t.source,
            "format": t.format,
            "roles": t.roles.value,
            "depth": self.depth,
            "filter": self.filter,
            "total": {
                "params": t.params,
                "trainable": t.trainable,
                "frozen": t.frozen,
                "buffers": t.buffers,
                "bytes": t.bytes,
                "entries": t.entries,
                **({"quant_meta": t.quant_meta} if t.quant_meta else {}),
                **({"active_params": t.active_params} if t.moe is not None else {}),
            },
            "ties": t.ties,
            "groups": _Lazy(self.groups, _streamed)
            if stream
            else [g.to_dict() for g in self.groups],
            "notes": t.notes,
        }

    def to_text(self, width: int | None = None, *, rows: int | None = None) -> str:
        """The human form ``paramscope inspect`` prints: a table of the groups and their
        entries with subtotals, then the total.

        Args:
            width: the table width (``None``: unlimited, nothing is cut or wrapped).
            rows: the most table rows (groups and entries) shown, the rest counted in a line
                (default :data:`~paramscope.counting._render.INSPECT_ROWS`, 1,000);
                :meth:`to_dict` always lists every entry.

        Returns:
            The text, without a final newline; strings from files are escaped.

        Example:
            >>> from paramscope import DType, Entry, Manifest, inspect
            >>> m = Manifest([Entry("fc.w", (2, 3), DType.F32), Entry("fc.b", (2,), DType.F32)])
            >>> print(inspect(m).to_text().splitlines()[-1])
            params 8 (trainable 8, frozen 0), buffers 0, 32 B
        """
        from .._text import printable_tree
        from ._render import INSPECT_ROWS, inspect_text, limit_rows

        cut = limit_rows(self.to_dict(stream=True), INSPECT_ROWS if rows is None else rows)
        return inspect_text(printable_tree(cut), width)


def inspect(source: Any, *, depth: int = 1, pattern: Pattern | None = None) -> Inspection:
    """Entries grouped by name prefix to ``depth``, with subtotals that add up to the total.

    Args:
        source: anything :func:`count` takes.
        depth: prefix depth of the groups.
        pattern: optional glob / ``re:`` filter on names; totals then cover the filtered set.

    Returns:
        An :class:`Inspection`.

    Raises:
        MissingNameError: ``pattern`` matches no entry (the message suggests close patterns
            and lists the top-level names).

    Example:
        >>> import torch, paramscope
        >>> ins = paramscope.inspect(torch.nn.Sequential(torch.nn.Linear(4, 2)), depth=1)
        >>> [(g.prefix, g.params) for g in ins.groups]
        [('0', 10)]
    """
    m = to_manifest(source, "inspect")
    if pattern is not None:
        selected = m.select(pattern)
        if not len(selected):
            from .._names import no_match

            raise no_match(pattern, m, where=m.source or None)
        m = selected
    return Inspection(count(m), group(m, depth), depth, pattern)
