"""Keras 3 weights: ``.weights.h5`` files and ``.keras`` archives, read with h5py.

Keras 3 (``model.save_weights``, and ``model.save`` inside a ``.keras`` zip next to
``config.json`` and ``metadata.json``) writes one HDF5 group per saved object: the layers of
a ``Sequential`` / ``Functional`` model under ``layers/<snake_case class>[_N]``, a layer's
sub-layers under their attribute name (``query_dense``, ``cell``), and each object's own
variables as datasets ``vars/0``, ``vars/1``, ... (trainable variables first, then the
non-trainable ones) in a group whose ``name`` attribute is the layer's name. The file stores
no variable names, so paramscope names each variable

    ``<layer name>[.<sub-layer name>...].<variable name>``

the layer names being those of the ``name`` attributes along the path (the same chain as
Keras's ``variable.path`` without the top model's name: ``dense.kernel``,
``inner.head.bias``, ``multi_head_attention.query.kernel``, ``lstm.lstm_cell.kernel``), and the
variable name taken from the layer's class (``Dense``: kernel, bias; ``BatchNormalization``:
gamma, beta, moving_mean, moving_variance; ...: see :data:`VARIABLES`). The class comes from
``config.json`` in a ``.keras`` archive, else from the group name Keras derived from it; a
variable of a class not listed keeps its index (``<layer>.vars.<i>``, said in a note).

Trainable flags: a ``.keras`` archive's config records ``trainable`` per layer (a frozen layer
freezes all its variables); moving statistics are never trainable and are buffers. A bare
``.weights.h5`` records no flags: they are inferred (said in a note). An optimizer's state
(``optimizer/``) is not listed (said in a note).

An uncompressed, contiguous, little-endian dataset has a byte location (its offset in the
file, or in the archive when the ``.keras`` member is stored, as Keras writes it), so the
format streams; anything else is loaded whole through h5py. HDF5 carries no code; soft and
external links, external storage, virtual datasets and filters other than HDF5's built-in
ones are refused, so nothing outside the file is read. libhdf5 loops forever reading a string
from a malformed global heap collection, so the collections are checked first (in Python);
when one is malformed, no string attribute is read (group names stand for layer names, said
in a note; a legacy file, whose names are all strings, is refused).
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._dtypes import DType
from .._enums import Format, Role, RoleSource
from .._errors import FormatError, ParamscopeError, UnsupportedDTypeError
from .._manifest import Entry, FrozenDict, Location, Manifest, infer_role
from ._source import ByteSource, as_file, opened

if TYPE_CHECKING:
    import torch

__all__ = ["VARIABLES", "load_keras", "read_keras_manifest"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
WEIGHTS_MEMBER = "model.weights.h5"
MAX_JSON = 64 << 20  # config.json / metadata.json larger than this are refused
#: Bytes read ahead per read of the HDF5 file (each read of a remote source is a request).
READ_AHEAD = 1 << 16
MAX_DEPTH = 64  # groups nested deeper than this are refused (Keras nests a few levels)
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand beyond this: a larger claim is a lie
#: HDF5's built-in filters (deflate, shuffle, fletcher32, szip, nbit, scaleoffset): any other
#: id would make the library look for a plugin on disk, so it is refused.
BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6})

_B = ("kernel", None, True), ("bias", "use_bias", True)
#: Variable names of common Keras layers in the order ``save_own_variables`` stores them:
#: ``(name, config flag that must be true for it to exist or None, trainable by nature)``.
VARIABLES: dict[str, tuple[tuple[str, str | None, bool], ...]] = {
    "dense": _B,
    "einsum_dense": (("kernel", None, True), ("bias", "bias_axes", True)),
    **{f"conv{d}d": _B for d in (1, 2, 3)},
    **{f"conv{d}d_transpose": _B for d in (1, 2, 3)},
    **{
        f"depthwise_conv{d}d": (("depthwise_kernel", None, True), ("bias", "use_bias", True))
        for d in (1, 2)
    },
    **{
        f"separable_conv{d}d": (
            ("depthwise_kernel", None, True),
            ("pointwise_kernel", None, True),
            ("bias", "use_bias", True),
        )
        for d in (1, 2)
    },
    "batch_normalization": (
        ("gamma", "scale", True),
        ("beta", "center", True),
        ("moving_mean", None, False),
        ("moving_variance", None, False),
    ),
    "layer_normalization": (("gamma", "scale", True), ("beta", "center", True)),
    "group_normalization": (("gamma", "scale", True), ("beta", "center", True)),
    "embedding": (("embeddings", None, True),),
    **{
        cell: (
            ("kernel", None, True),
            ("recurrent_kernel", None, True),
            ("bias", "use_bias", True),
        )
        for cell in ("lstm_cell", "gru_cell", "simple_rnn_cell")
    },
    "p_re_lu": (("alpha", None, True),),
}
#: Sub-layers that Keras saves under an attribute name: the class by that name.
_ATTRIBUTE_CLASSES = {
    "query_dense": "einsum_dense",
    "key_dense": "einsum_dense",
    "value_dense": "einsum_dense",
    "output_dense": "einsum_dense",
}
_CELLS = {"lstm": "lstm_cell", "gru": "gru_cell", "simple_rnn": "simple_rnn_cell"}
_BUFFERS = frozenset({"moving_mean", "moving_variance"})
_SUFFIX = re.compile(r"_\d+$")
_H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, OverflowError)


def _snake(name: str) -> str:
    """Keras's ``naming.to_snake_case`` of a class name (``Conv2D`` → ``conv2d``)."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


@dataclass
class _Layer:
    """What config.json says about one layer."""

    cls: str
    trainable: bool
    flags: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Var:
    """One stored variable: where it is in the HDF5 file and what it is named."""

    h5: str
    name: str
    trainable: bool
    role: Role
    known: bool


@contextmanager
def _keras_h5(src: ByteSource, spath: str) -> Iterator[tuple[Any, int | None, int, dict[str, Any]]]:
    """``(open h5py file, offset of its byte 0 in the source or None, its size, info)``;
    ``info`` holds the archive's parsed ``config`` and ``metadata`` (absent for a bare
    ``.weights.h5``)."""
    import h5py

    head = src.read_at(0, 8)
    info: dict[str, Any] = {}
    base: int | None
    if head == HDF5_MAGIC:
        f: Any = as_file(src, READ_AHEAD)  # HDF5 reads its metadata in many small pieces
        base, size = 0, src.size
        info["raw"] = src.read_at
    elif head[:4] == b"PK\x03\x04":
        f, base, size = _member(src, spath, info)
    else:
        raise FormatError(
            spath, f"expected a Keras .weights.h5 (HDF5) or .keras (zip) file, found {head!r}"
        )
    info["size"] = size
    try:
        h5 = h5py.File(f, "r")
    except _H5_ERRORS as exc:
        raise FormatError(spath, f"not a readable HDF5 file: {_short(exc)}") from None
    try:
        yield h5, base, size, info
    finally:
        h5.close()


def _member(src: ByteSource, spath: str, info: dict[str, Any]) -> tuple[Any, int | None, int]:
    """The weights member of a ``.keras`` archive as a file object, and its data offset when
    stored (not deflated); the archive's config and metadata parsed into ``info``."""
    try:
        with zipfile.ZipFile(as_file(src)) as z:
            return _weights_member(z, src, spath, info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise FormatError(spath, f"not a readable .keras archive: {_short(exc)}") from None
    except zlib.error as exc:
        raise FormatError(spath, f"a deflated member does not inflate: {exc}") from None


def _weights_member(
    z: zipfile.ZipFile, src: ByteSource, spath: str, info: dict[str, Any]
) -> tuple[Any, int | None, int]:
    """:func:`_member` on the open archive."""
    names = {i.filename: i for i in z.infolist()}
    for key in ("config", "metadata"):
        i = names.get(f"{key}.json")
        if i is None:
            continue
        if i.file_size > MAX_JSON:
            raise FormatError(spath, f"{key}.json of {i.file_size} bytes is too large")
        try:
            info[key] = json.loads(z.read(i))
        except (ValueError, RecursionError) as exc:
            raise FormatError(spath, f"{key}.json is not JSON: {_short(exc)}") from None
    i = names.get(WEIGHTS_MEMBER)
    if i is None:
        raise FormatError(
            spath, f"a .keras archive without {WEIGHTS_MEMBER} (found {sorted(names)[:5]})"
        )
    if i.flag_bits & 1:
        raise FormatError(spath, f"{WEIGHTS_MEMBER} is encrypted")
    if i.compress_type == zipfile.ZIP_STORED:
        local = src.read_at(i.header_offset, 30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise FormatError(spath, f"{WEIGHTS_MEMBER}: no local zip header at its offset")
        start = (
            i.header_offset
            + 30
            + int.from_bytes(local[26:28], "little")
            + int.from_bytes(local[28:30], "little")
        )
        if i.compress_size != i.file_size or start + i.file_size > src.size:
            raise FormatError(
                spath,
                f"{WEIGHTS_MEMBER}: a stored member of {i.file_size} bytes at "
                f"{start} does not fit the {src.size}-byte archive",
            )
        window = as_file(src, READ_AHEAD, start=start, size=i.file_size)
        end = i.file_size
        info["raw"] = lambda at, n: src.read_at(start + at, max(0, min(n, end - at)))
        return window, start, i.file_size
    if i.compress_type != zipfile.ZIP_DEFLATED:
        raise FormatError(
            spath,
            f"{WEIGHTS_MEMBER}: compression method {i.compress_type}, expected stored or deflated",
        )
    if i.file_size > DEFLATE_MAX_RATIO * i.compress_size + 1024:
        raise FormatError(
            spath,
            f"{WEIGHTS_MEMBER} claims {i.file_size} bytes from {i.compress_size} "
            "deflated, more than deflate can expand",
        )
    data = z.read(i)
    info["raw"] = lambda at, n: data[at : at + n]
    return io.BytesIO(data), None, i.file_size


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _config_layers(config: Any) -> tuple[dict[tuple[str, ...], _Layer], bool]:
    """Layer name chain → what the config says; and the top model's trainable flag."""
    out: dict[tuple[str, ...], _Layer] = {}

    def walk(layers: Any, chain: tuple[str, ...], trainable: bool, depth: int) -> None:
        if not isinstance(layers, list) or depth > MAX_DEPTH:
            return
        for layer in layers:
            if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
                continue
            cfg = layer["config"]
            name, cls = cfg.get("name"), layer.get("class_name")
            if not isinstance(name, str) or not isinstance(cls, str):
                continue
            here = trainable and cfg.get("trainable", True) is not False
            out[(*chain, name)] = _Layer(_snake(cls), here, cfg)
            walk(cfg.get("layers"), (*chain, name), here, depth + 1)

    top = config.get("config") if isinstance(config, dict) else None
    if not isinstance(top, dict):
        return out, True
    trainable = top.get("trainable", True) is not False
    walk(top.get("layers"), (), trainable, 0)
    return out, trainable


def _var_names(cls: str | None, flags: dict[str, Any] | None, n: int) -> list[tuple[str, bool]]:
    """``(name, trainable by nature)`` of a layer's ``n`` variables, or ``[]`` when unknown."""
    spec = VARIABLES.get(cls or "")
    if spec is None:
        return []
    optional = sorted({flag for _, flag, _ in spec if flag is not None})
    found: set[tuple[tuple[str, bool], ...]] = set()
    for values in itertools.product((True, False), repeat=len(optional)):
        on = dict(zip(optional, values, strict=True))
        if flags is not None:  # what the config says wins
            on.update({k: bool(flags[k]) for k in optional if k in flags})
        names = tuple((v, t) for v, flag, t in spec if flag is None or on[flag])
        if len(names) == n:
            found.add(names)
    return list(found.pop()) if len(found) == 1 else []


def _walk(h5: Any, spath: str, info: dict[str, Any]) -> tuple[list[tuple[_Var, Any]], list[str]]:
    """Every stored variable (with its h5py dataset) and the notes to give."""
    import h5py

    strings = _heaps_ok(h5, info["raw"], info["size"])
    legacy = h5["model_weights"] if _hard(h5, "model_weights", spath) else h5
    if "layer_names" in legacy.attrs and "vars" not in h5 and "layers" not in h5:
        if not strings:
            raise FormatError(spath, "a malformed HDF5 global heap (where names are stored)")
        return _walk_legacy(h5, legacy, spath)
    config = info.get("config")
    layers, top_trainable = _config_layers(config) if config is not None else ({}, True)
    out: list[tuple[_Var, Any]] = []
    unknown: list[str] = []
    skipped = 0
    seen: set[int] = set()

    def check_links(group: Any, where: str) -> list[str]:
        keys = list(group.keys())
        for k in keys:
            link = group.get(k, getlink=True)
            if not isinstance(link, h5py.HardLink):
                kind = type(link).__name__
                raise FormatError(spath, f"{where}/{k} is a {kind}: expected only hard links")
        return keys

    def visit(group: Any, path: str, chain: tuple[str, ...], cls: str | None, depth: int) -> None:
        nonlocal skipped
        if depth > MAX_DEPTH:
            raise FormatError(spath, f"{path}: groups nested deeper than {MAX_DEPTH}")
        addr = h5py.h5o.get_info(group.id).addr
        if addr in seen:
            raise FormatError(spath, f"{path or '/'}: a group linked twice (a cycle)")
        seen.add(addr)
        keys = check_links(group, path)
        own = group["vars"] if "vars" in keys else None
        if own is not None and not isinstance(own, h5py.Group):
            raise FormatError(spath, f"{path}/vars: expected a group, found a dataset")
        name = own.attrs.get("name") if own is not None and strings else None
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        here = chain
        if depth > 0 and not _is_container(path):
            here = (*chain, name if isinstance(name, str) and name else path.rsplit("/", 1)[-1])
        if own is not None:
            vkeys = check_links(own, f"{path}/vars")
            order = sorted(vkeys, key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))
            dsets = []
            for k in order:
                ds = own[k]
                if not isinstance(ds, h5py.Dataset):
                    raise FormatError(spath, f"{path}/vars/{k}: expected a dataset, found a group")
                dsets.append((k, ds))
            if path == "optimizer" or path.startswith("optimizer/"):
                skipped += len(dsets)
            else:
                layer = layers.get(here)
                klass = layer.cls if layer is not None else cls
                names = _var_names(klass, layer.flags if layer is not None else None, len(dsets))
                frozen = not _trainable(layers, here, top_trainable)
                if not names and dsets:
                    unknown.append(".".join(here) or "/")
                for i, (k, ds) in enumerate(dsets):
                    h5path = f"{path}/vars/{k}".lstrip("/")
                    if names:
                        var, by_nature = names[i]
                        role = Role.BUFFER if var in _BUFFERS else Role.PARAM
                        v = _Var(h5path, ".".join((*here, var)), by_nature, role, True)
                    else:
                        v = _Var(h5path, ".".join((*here, "vars", k)), True, Role.PARAM, False)
                    if frozen:
                        v.trainable = False
                    out.append((v, ds))
        for k in keys:
            if k == "vars":
                continue
            child = group[k]
            sub = f"{path}/{k}" if path else k
            if isinstance(child, h5py.Dataset):
                raise FormatError(spath, f"{sub}: a dataset outside a vars group")
            visit(child, sub, here, _child_class(path, k, cls), depth + 1)

    visit(h5, "", (), None, 0)
    notes: list[str] = []
    if config is None:
        notes.append(
            "a bare .weights.h5 stores variables by index: names inferred from the Keras layer "
            "classes its group names give; trainable flags inferred (moving statistics are "
            "buffers, every other variable is trainable)"
        )
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        notes.append(
            f"variables of {len(unknown)} layers of classes paramscope does not know keep their "
            f"stored index (<layer>.vars.<i>): {shown}"
        )
    if not strings:
        notes.append("a malformed HDF5 global heap: layer names not read, group names used")
    if skipped:
        notes.append(f"the optimizer state ({skipped} variables under optimizer/) is not listed")
    return out, notes


def _heaps_ok(h5: Any, raw: Any, size: int) -> bool:
    """Whether every HDF5 global heap collection (``GCOL``: where variable-length strings
    such as the layer names live) outside the datasets' bytes is well formed.

    libhdf5 loops forever on a collection whose free-space object has size 0 (a one-bit
    flip does it), so strings are read only when this holds.
    """
    import h5py

    ranges: list[tuple[int, int]] = []

    def add(_name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            at = obj.id.get_offset()
            if at is not None:
                ranges.append((at, at + obj.id.get_storage_size()))

    h5.visititems(add)
    ranges.sort()
    pos, gaps = 0, []
    for a, b in ranges:
        if a > pos:
            gaps.append((pos, a))
        pos = max(pos, b)
    gaps.append((pos, size))
    for a, b in gaps:
        buf = raw(a, b - a)
        i = buf.find(b"GCOL")
        while i >= 0:
            if not _collection_ok(raw, a + i, size):
                return False
            i = buf.find(b"GCOL", i + 4)
    return True


def _collection_ok(raw: Any, at: int, size: int) -> bool:
    """One global heap collection at ``at``: header, then objects that each advance."""
    head = raw(at, 16)
    if len(head) < 16 or head[4] != 1:
        return False
    n = int.from_bytes(head[8:16], "little")
    if n < 16 or at + n > size:
        return False
    body = raw(at, n)
    p = 16
    while p + 16 <= n:
        idx = int.from_bytes(body[p : p + 2], "little")
        osize = int.from_bytes(body[p + 8 : p + 16], "little")
        need = osize if idx == 0 else 16 + ((osize + 7) & ~7)
        if need < 16 or p + need > n:
            return False
        p += need
    return True


def _hard(group: Any, key: str, spath: str) -> bool:
    """Whether ``group`` has a member ``key``; a link other than a hard link is refused."""
    import h5py

    link = group.get(key, getlink=True)
    if link is None:
        return False
    if not isinstance(link, h5py.HardLink):
        kind = type(link).__name__
        raise FormatError(spath, f"{group.name}/{key} is a {kind}: expected only hard links")
    return True


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _strings(value: Any, where: str, spath: str) -> list[str]:
    """An HDF5 attribute holding a list of names, as strings."""
    items = [_text(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    if not all(isinstance(v, str) for v in items):
        raise FormatError(spath, f"{where}: expected a list of names")
    return items  # type: ignore[return-value]


def _walk_legacy(h5: Any, root: Any, spath: str) -> tuple[list[tuple[_Var, Any]], list[str]]:
    """The variables of a legacy Keras HDF5 file (``model.save("m.h5")``, Keras 2's format),
    which stores each variable's name (``weight_names`` of each of ``layer_names``)."""
    import h5py

    model = None
    try:
        cfg = json.loads(_text(h5.attrs.get("model_config")) or "null")
        model = cfg["config"]["name"] if isinstance(cfg, dict) else None
    except (ValueError, KeyError, TypeError, RecursionError):
        pass
    out: list[tuple[_Var, Any]] = []
    for layer in _strings(root.attrs["layer_names"], "layer_names", spath):
        if not _hard(root, layer, spath):
            raise FormatError(spath, f"layer_names names {layer!r}, which the file lacks")
        group = root[layer]
        names = _strings(group.attrs.get("weight_names", []), f"{layer}: weight_names", spath)
        for wname in names:
            node = group
            for part in wname.split("/"):
                if not part or not _hard(node, part, spath) or isinstance(node, h5py.Dataset):
                    raise FormatError(spath, f"{layer}: weight {wname!r} is not in the file")
                node = node[part]
            if not isinstance(node, h5py.Dataset):
                raise FormatError(spath, f"{layer}: weight {wname!r} is a group")
            parts = re.sub(r":\d+$", "", wname).split("/")
            if len(parts) > 1 and parts[0] == model:
                parts = parts[1:]
            var = parts[-1]
            role = Role.BUFFER if var in _BUFFERS else Role.PARAM
            out.append(
                (
                    _Var(
                        f"{root.name}/{layer}/{wname}".lstrip("/"),
                        ".".join(parts),
                        True,
                        role,
                        False,
                    ),
                    node,
                )
            )
    note = (
        "a legacy Keras HDF5 file: names as stored (weight_names), trainable flags inferred "
        "(moving statistics are buffers, every other variable is trainable)"
    )
    return out, [note]


def _trainable(layers: dict[tuple[str, ...], _Layer], chain: tuple[str, ...], top: bool) -> bool:
    """The config's trainable flag of the nearest layer on ``chain`` it describes."""
    for n in range(len(chain), 0, -1):
        layer = layers.get(chain[:n])
        if layer is not None:
            return layer.trainable
    return top


def _is_container(path: str) -> bool:
    """Whether a group is one of Keras's lists (``layers``, ``container``), not a layer."""
    last = path.rsplit("/", 1)[-1]
    return last == "layers" or _SUFFIX.sub("", last) == "container"


def _child_class(path: str, key: str, cls: str | None) -> str | None:
    """The snake_case class of the object saved under ``path/key``, when it can be told."""
    if _is_container(path):  # Keras names list items by their class: dense, dense_1, ...
        return _SUFFIX.sub("", key)
    if key == "cell" and cls in _CELLS:
        return _CELLS[cls]
    if key in _ATTRIBUTE_CLASSES:
        return _ATTRIBUTE_CLASSES[key]
    return None


def _dtype(ds: Any, where: str, spath: str) -> tuple[DType, bool]:
    """The dtype of a dataset and whether its bytes are little-endian as stored."""
    dt = ds.dtype
    if dt.kind == "V" and dt.itemsize == 2 and ds.attrs.get("dtype") in ("bfloat16", b"bfloat16"):
        return DType.BF16, True
    little = dt.byteorder != ">"
    try:
        return DType.from_numpy(dt.newbyteorder("<").str if not little else dt.str), little
    except UnsupportedDTypeError:
        raise UnsupportedDTypeError(
            f"{spath}: {where}: HDF5 type {dt!s:.60}: expected a bool, int, uint or float type"
        ) from None


def _location(ds: Any, where: str, spath: str, base: int | None, size: int, nbytes: int) -> Any:
    """Where a dataset's raw bytes lie in the source, or ``None`` (read through h5py)."""
    import h5py

    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    if layout == getattr(h5py.h5d, "VIRTUAL", -1):
        raise FormatError(spath, f"{where}: a virtual dataset (reads other files): refused")
    if plist.get_external_count():
        raise FormatError(spath, f"{where}: stored in external files: refused")
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in BUILTIN_FILTERS:
            raise FormatError(spath, f"{where}: HDF5 filter {code} is not built in: refused")
    stored = ds.id.get_storage_size()
    if layout != h5py.h5d.CONTIGUOUS:
        if nbytes > DEFLATE_MAX_RATIO * stored + (1 << 20):
            raise FormatError(
                spath, f"{where}: {nbytes} bytes claimed from {stored} stored: refused"
            )
        return None
    offset = ds.id.get_offset()
    if nbytes and (offset is None or stored != nbytes):
        raise FormatError(
            spath, f"{where}: expected {nbytes} stored bytes, the file holds {stored}"
        )
    offset = offset or 0
    if offset + nbytes > size:
        raise FormatError(
            spath, f"{where}: {nbytes} bytes at offset {offset} lie beyond the {size}-byte file"
        )
    return None if base is None else base + offset


def _manifest(src: ByteSource, spath: str) -> tuple[Manifest, dict[str, str]]:
    """The manifest, and each entry's HDF5 path."""
    entries: list[tuple[tuple[int, int, int], Entry]] = []
    paths: dict[str, str] = {}
    with _keras_h5(src, spath) as (h5, base, size, info):
        try:
            found, notes = _walk(h5, spath, info)
            seen: set[str] = set()
            for n, (v, ds) in enumerate(found):
                name = v.name
                if name in seen:  # two layers of one name: the HDF5 path tells them apart
                    name = v.h5.replace("/", ".")
                    notes.append(f"{v.name!r} named twice: one is {name!r}")
                    if name in seen:
                        raise FormatError(spath, f"two variables are named {name!r}")
                seen.add(name)
                dtype, little = _dtype(ds, v.h5, spath)
                shape = tuple(int(d) for d in ds.shape)
                nbytes = dtype.nbytes(math.prod(shape))
                at = _location(ds, v.h5, spath, base, size, nbytes)
                loc = Location(spath, at, nbytes) if at is not None and little else None
                role = v.role
                if not v.known and role is not Role.BUFFER:
                    role = infer_role(name, dtype, shape)
                elif dtype not in _FLOATS:
                    role = Role.BUFFER
                trainable = v.trainable and role is Role.PARAM
                extra = FrozenDict(keras=v.h5)
                e = Entry(
                    name, shape, dtype, role=role, trainable=trainable, extra=extra, location=loc
                )
                entries.append(((0, at, n) if loc is not None else (1, 0, n), e))
                paths[name] = v.h5
        except ParamscopeError:
            raise
        except _H5_ERRORS as exc:
            raise FormatError(spath, f"unreadable HDF5 structure: {_short(exc)}") from None
    entries.sort(key=lambda t: t[0])  # file order: Keras writes the layers in model order
    metadata = {
        f"keras_{k}": str(v)
        for k, v in (info.get("metadata") or {}).items()
        if isinstance(k, str) and isinstance(v, (str, int, float))
    }
    exact = "config" in info and all(v.known for v, _ in found)
    m = Manifest(
        [e for _, e in entries],
        format=Format.KERAS,
        source=spath,
        roles=RoleSource.EXACT if exact else RoleSource.INFERRED,
        metadata=metadata,
        notes=notes,
    )
    return m, paths


_FLOATS = frozenset(d for d in DType if d.is_float)


def read_keras_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of a Keras 3 ``.weights.h5`` file or ``.keras`` archive.

    Names follow the rule of this module's docstring (``dense.kernel``,
    ``batch_normalization.moving_mean``); each entry's ``extra["keras"]`` is its HDF5 path
    (``layers/dense/vars/0``).

    Args:
        path: the file (local or remote).

    Returns:
        A :class:`Manifest` of format ``keras``; roles ``exact`` for an archive whose layers
        are all known, else ``inferred``.

    Raises:
        FormatError: not a Keras weights file, or one HDF5 / the zip cannot read, or one
            that refers to other files.

    Example:
        >>> import os, tempfile
        >>> os.environ.setdefault("KERAS_BACKEND", "torch")
        'torch'
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> path = f"{tempfile.mkdtemp()}/m.weights.h5"
        >>> model.save_weights(path)
        >>> m = read_keras_manifest(path)
        >>> [(n, e.shape) for n, e in m.items()]
        [('fc.kernel', (3, 2)), ('fc.bias', (2,))]
    """
    spath = os.fspath(path)
    with opened(spath) as src:
        return _manifest(src, spath)[0]


def load_keras(path: str | os.PathLike[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every variable :func:`read_keras_manifest` lists, in its order.

    Args:
        path: the file (local or remote).

    Yields:
        Names and tensors (bfloat16 variables as ``torch.bfloat16``).

    Raises:
        FormatError: as :func:`read_keras_manifest`, or a dataset h5py cannot read.

    Example:
        >>> import os, tempfile
        >>> os.environ.setdefault("KERAS_BACKEND", "torch")
        'torch'
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> path = f"{tempfile.mkdtemp()}/m.keras"
        >>> model.save(path)
        >>> {n: tuple(t.shape) for n, t in load_keras(path)}
        {'fc.kernel': (3, 2), 'fc.bias': (2,)}
    """
    import numpy as np
    import torch

    spath = os.fspath(path)
    with opened(spath) as src:
        m, paths = _manifest(src, spath)
        with _keras_h5(src, spath) as (h5, _, _, _):
            for e in m.values():
                where = paths[e.name]
                try:
                    arr = np.asarray(h5[where][()])
                except _H5_ERRORS as exc:
                    raise FormatError(
                        spath, f"{where}: h5py cannot read it: {_short(exc)}"
                    ) from None
                if tuple(arr.shape) != e.shape or arr.dtype.itemsize != e.dtype.nbytes(1):
                    raise FormatError(
                        spath,
                        f"{where}: expected {e.shape} of {e.dtype.value}, read "
                        f"{tuple(arr.shape)} of {arr.dtype}",
                    )
                if e.dtype is DType.BF16:
                    arr = np.ascontiguousarray(arr).view("<u2")
                    t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
                else:
                    arr = np.ascontiguousarray(arr.astype(e.dtype.to_numpy(), copy=False))
                    t = torch.from_numpy(arr.reshape(e.shape))
                yield e.name, t
