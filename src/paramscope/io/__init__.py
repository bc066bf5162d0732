"""Reading and writing checkpoints: one dispatch, formats told apart by their bytes.

Every format offers the same verbs through this module: :func:`read_manifest` (headers only),
:func:`load` (values, lazily memory-mapped where the format allows) and :func:`save`. Every
format reads its bytes through one interface, :class:`~paramscope.io._source.ByteSource`, and
streaming operations read tensors one at a time through
:class:`~paramscope.io._reader.SourceReader` and write through
:func:`~paramscope.io._writer.write_stream`.

io stands on core only: it knows checkpoints, not models (a model TARGET is refused with the
"needs a checkpoint" error; :func:`paramscope.read_manifest` resolves those a floor above) and
not compression (``load(..., dequantize=True)`` applies the codecs registered in
:mod:`._codecs`).
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._enums import Format
from .._errors import (
    ArgumentError,
    ArgumentTypeError,
    FormatError,
    SourceNotFoundError,
    UnknownFormatError,
    WriteError,
)
from .._files import check_kind
from .._manifest import NO_EXTRA, Manifest
from .._names import Pattern, compile_pattern
from .._quantstore import aux_names, quant_record
from .._target_kind import model_target_error
from .._units import parse_size
from . import _safetensors
from ._source import ByteSource, as_file, opened

if TYPE_CHECKING:
    import torch

    from .._paramdict import EntryMeta, ParamDict

__all__ = ["detect_format", "load", "read_manifest", "resolve", "save"]

INDEX_NAMES = (
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
#: Files that make a folder an Orbax checkpoint (or one item of one).
ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt", "_sharding")
SINGLE_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pt", "consolidated.00.pth")


def resolve(path: str | os.PathLike[str]) -> tuple[Path, Format]:
    """Find what a path holds: a file of a known format, an index, or a checkpoint folder.

    Args:
        path: a file or folder.

    Returns:
        ``(the file to read, its format)``; for a folder, its index or single weights file.

    Raises:
        SourceNotFoundError: the path does not exist.
        UnknownFormatError: nothing readable is there.
        TargetError: the path is a model TARGET (``zoo:``, ``module:callable``, an HF
            ``config.json``), not a checkpoint.
    """
    from ._remote import RemotePath, as_path

    p = as_path(path)
    if isinstance(p, RemotePath):
        return _resolve_remote(p)
    err = model_target_error(path, "this operation")  # light: no torch, nothing built
    if err is not None:
        raise err
    if not p.exists():
        raise SourceNotFoundError(p)
    check_kind(p)  # a FIFO would block the first read, /dev/zero would never end
    if p.is_dir():
        return _pick(p, lambda name: (p / name).is_file(), lambda pat: list(p.glob(pat)))
    return p, detect_format(p)


def _pick(folder: Any, is_file: Any, glob: Any) -> tuple[Any, Format]:
    """The file to read in a checkpoint folder (local or remote), and its format."""
    if is_file(".metadata"):  # torch.distributed.checkpoint
        return folder, Format.DCP
    if any(is_file(n) for n in ORBAX_MARKERS):  # an Orbax checkpoint (or one of its items)
        return folder, Format.ORBAX
    for name in INDEX_NAMES:
        if is_file(name):
            return folder / name, Format.SHARDED
    indexes = sorted(x for x in glob("*.index.json") if x.is_file())
    if len(indexes) == 1:
        return indexes[0], Format.SHARDED
    for name in SINGLE_NAMES:
        if is_file(name):
            return folder / name, detect_format(folder / name)
    singles = sorted(x for x in glob("*.safetensors") if x.is_file())
    if len(singles) == 1:
        return singles[0], Format.SAFETENSORS
    ggufs = sorted(x for x in glob("*.gguf") if x.is_file())
    if ggufs and not singles and _one_gguf_model(ggufs):
        return ggufs[0], Format.GGUF
    raise UnknownFormatError(
        f"{folder}: expected a folder with an *.index.json or one weights file "
        f"(model.safetensors, pytorch_model.bin, one .gguf model), found {len(indexes)} "
        f"index files and {len(singles)} .safetensors files"
    )


#: Names that are files, not folders: a URL ending so is asked about, never listed.
_FILE_SUFFIXES = {".safetensors", ".json", ".bin", ".pt", ".pth", ".gguf", ".npz", ".npy"}


def _resolve_remote(p: Any) -> tuple[Any, Format]:
    """:func:`resolve` of a URL: a folder is listed once (one request), a file's format is
    told from its first bytes (kept by the source for the header read that follows)."""
    import fnmatch

    kids = None
    web = p.web  # nothing to list there
    if not web and p.suffix.lower() not in _FILE_SUFFIXES:  # a folder? one listing says
        kids = {k.name: k for k in p.glob("*")} or None
    if kids is None and not p.is_dir():  # one info request (none after a file's listing)
        if not p.exists():
            if web and not p.suffix:
                from ._remote import RemoteError

                raise RemoteError(
                    f"{p}: nothing there; a folder cannot be listed over http(s): give the "
                    "weights file's URL or its *.index.json's"
                )
            raise SourceNotFoundError(p)
        return p, detect_format(p)
    if kids is None:
        kids = {k.name: k for k in p.glob("*")}
    return _pick(
        p,
        lambda name: name in kids and kids[name].is_file(),
        lambda pat: [k for n, k in kids.items() if fnmatch.fnmatchcase(n, pat)],
    )


def _one_gguf_model(files: list[Path]) -> bool:
    """Whether a folder's ``.gguf`` files are one model: a single file, or the files of one
    split set (``NAME-0000k-of-0000N.gguf``, the first one first)."""
    if len(files) == 1:
        return True
    from ._gguf import _SPLIT

    found = [_SPLIT.match(f.name) for f in files]
    keys = {(m["stem"], m["count"]) if m else None for m in found}
    return None not in keys and len(keys) == 1


def detect_format(path: str | os.PathLike[str] | ByteSource) -> Format:
    """Tell a file's format from its first bytes (the suffix is only a tie-breaker).

    Args:
        path: the file (or a :class:`~paramscope.io._source.ByteSource` open on it).

    Returns:
        The :class:`Format`.

    Raises:
        UnknownFormatError: the bytes match no supported format.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> detect_format(save({"w": torch.ones(2)}, f"{d}/weights.bin"))  # named .bin
        <Format.SAFETENSORS: 'safetensors'>
        >>> torch.save({"w": torch.ones(2)}, f"{d}/weights.safetensors")  # named .safetensors
        >>> detect_format(f"{d}/weights.safetensors")
        <Format.TORCH: 'torch'>
    """
    with opened(path) as src:
        return _detect(src)


def _detect(src: ByteSource) -> Format:
    spath = src.name
    head = src.read_at(0, 16)
    size = src.size
    if head[:4] == b"PK\x03\x04" or (head[:4] == b"PK\x05\x06"):
        import zipfile

        try:
            with zipfile.ZipFile(as_file(src)) as z:
                names = z.namelist()
        except zipfile.BadZipFile as exc:
            raise UnknownFormatError(f"{spath}: broken zip archive: {exc}") from None
        if any(n.endswith("data.pkl") for n in names):
            return Format.TORCH
        if "model.weights.h5" in names:  # a Keras 3 .keras archive
            return Format.KERAS
        if names and all(n.endswith(".npy") for n in names):
            return Format.NUMPY
        if not names:
            return Format.NUMPY
        raise UnknownFormatError(
            f"{spath}: a zip archive that is neither a torch checkpoint (no data.pkl) nor an "
            ".npz (members are not all .npy)"
        )
    if head[:4] == b"GGUF":
        return Format.GGUF
    if head[:8] == b"\x89HDF\r\n\x1a\n":  # HDF5: Keras 3 .weights.h5
        return Format.KERAS
    low = spath.lower()
    if low.endswith(".onnx"):  # protobuf has no magic: the suffix, then the parser checks
        return Format.ONNX
    if low.endswith(".msgpack"):  # flax.serialization.to_bytes, likewise
        return Format.FLAX
    if head[:6] == b"\x93NUMPY":
        return Format.NUMPY
    # A safetensors header length whose low byte is 0x80 looks like a pickle's first byte:
    # a JSON object right after a length that fits the file decides for safetensors.
    if len(head) >= 9 and head[8:9] == b"{" and 8 + struct.unpack("<Q", head[:8])[0] <= size:
        return Format.SAFETENSORS
    if head[:1] == b"\x80":
        return Format.TORCH
    if len(head) >= 9 and head[8:9] == b"{":
        return Format.SAFETENSORS
    if len(head) >= 8 and head[8:9] in (b"", b" ") and struct.unpack("<Q", head[:8])[0] <= size:
        return Format.SAFETENSORS
    stripped = head.lstrip()
    # An *.index.json goes to the index reader, which says what is wrong with it.
    if spath.endswith(".index.json") or (stripped[:1] == b"{" and spath.endswith(".json")):
        return Format.SHARDED
    if spath.endswith(".safetensors"):
        return Format.SAFETENSORS  # let the strict parser say what is wrong
    if spath.endswith(".gguf"):
        return Format.GGUF  # the GGUF parser names the bad magic
    raise UnknownFormatError(
        f"{spath}: unknown format (expected safetensors, a torch .pt/.bin, .npz, GGUF, or "
        f"an *.index.json); first bytes {head[:8]!r}"
    )


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The :class:`Manifest` of a checkpoint, from headers only and without torch.

    Checkpoints only: the public :func:`paramscope.read_manifest` also takes model TARGETs
    (``zoo:NAME``, ``package.module:callable``, an HF ``config.json``) and resolves them a
    floor above io (:mod:`paramscope._targets`).

    Args:
        path: a safetensors file, an HF sharded folder or ``*.index.json``, a torch
            ``.pt``/``.bin`` (zip or legacy), an ``.npz``, a GGUF file (any file of a split
            set), or a DCP folder.

    Returns:
        The manifest; ``manifest.roles`` says whether roles were stored or inferred.

    Raises:
        SourceNotFoundError, UnknownFormatError, HeaderError, ShardIndexError,
        UnsafePickleError, FormatError: see their docs.
        TargetError: ``path`` is a model TARGET ("needs a checkpoint").

    Example:
        >>> import tempfile, torch
        >>> path = save({"wte.weight": torch.zeros(50, 8)}, f"{tempfile.mkdtemp()}/m.safetensors")
        >>> m = read_manifest(path)
        >>> m["wte.weight"].shape, m["wte.weight"].dtype, m.format
        ((50, 8), <DType.F32: 'F32'>, <Format.SAFETENSORS: 'safetensors'>)
    """
    from .._quantlayouts import annotate, may_be_quantized
    from ._quantconfig import find_quant_config, with_small_values

    file, fmt = resolve(path)
    m = read_resolved(file, fmt)
    config, notes = find_quant_config(file, fmt, m)
    if may_be_quantized(m, config):  # one pass over the names; else nothing more is read
        m = with_small_values(m)
    m = annotate(m, config, notes)
    from ._moeconfig import find_moe_config

    m.moe = find_moe_config(file, m)  # top-k for active params of a mixture of experts
    return m


def read_resolved(file: Path, fmt: Format) -> Manifest:
    """The manifest of one resolved checkpoint file as its reader makes it: no quantised
    layouts marked (:func:`read_manifest` marks them; shards are read with this).

    Args:
        file: the file (or folder, for DCP) :func:`resolve` found.
        fmt: its format.

    Returns:
        The reader's manifest.
    """
    if fmt is Format.SAFETENSORS:
        return _safetensors.read_manifest(file)
    if fmt is Format.SHARDED:
        from . import _sharded

        return _sharded.read_sharded_manifest(file)
    if fmt is Format.TORCH:
        from . import _torch

        return _torch.read_torch_manifest(file)
    if fmt is Format.DCP:
        from . import _dcp

        return _dcp.read_dcp_manifest(file)
    if fmt is Format.GGUF:
        from . import _gguf

        return _gguf.read_gguf_manifest(file)
    if fmt in _OTHERS:
        return _other(fmt, 1)(file)  # type: ignore[no-any-return]
    from . import _numpy

    return _numpy.read_npz_manifest(file)


def _meta_of(m: Manifest, name: str) -> EntryMeta:
    from .._paramdict import EntryMeta
    from .._quantlayouts import without_layout

    e = m[name]  # the derived layout record is the manifest's, not the tensor's
    return EntryMeta(e.role, e.trainable, e.tags, dict(without_layout(e.extra)))


def load(
    path: str | os.PathLike[str], *, select: Pattern | None = None, dequantize: bool = False
) -> ParamDict:
    """Load a checkpoint as a :class:`ParamDict`, lazily, only the selected entries.

    safetensors files (single or sharded) are memory-mapped copy-on-write: nothing is read
    from disk until a tensor is used, and changing a tensor never changes the file. Ties come
    back as the same tensor object; roles, trainable flags, tags and extra come back.

    Args:
        path: any source :func:`read_manifest` accepts.
        select: a glob / ``re:`` pattern (or list) of names to load; ``None`` loads all.
        dequantize: restore float tensors from quantised entries (their scales and zero
            points are read along with them and dropped from the result), through the codecs
            registered in :mod:`._codecs` (:func:`paramscope.load` registers paramscope's).

    Returns:
        The ParamDict (``.metadata`` holds the file's free metadata).

    Raises:
        Everything :func:`read_manifest` raises; ArgumentError for ``dequantize=True``
        with no codec registered.

    Example:
        >>> import tempfile, torch
        >>> sd = {"encoder.w": torch.ones(2), "encoder.b": torch.zeros(2), "head.w": torch.ones(3)}
        >>> pd = load(save(sd, f"{tempfile.mkdtemp()}/m.safetensors"), select="encoder.*")
        >>> sorted(pd), pd["encoder.w"].tolist()
        (['encoder.b', 'encoder.w'], [1.0, 1.0])
    """
    pd = _load(path, select)
    if dequantize:
        from ._codecs import dequantize as dequantize_

        pd = dequantize_(pd)
    return pd


def _load(path: str | os.PathLike[str], select: Pattern | None) -> ParamDict:
    from .._paramdict import ParamDict

    file, fmt = resolve(path)
    match = compile_pattern(select) if select is not None else (lambda _n: True)
    if fmt in (Format.SAFETENSORS, Format.SHARDED):
        m = read_manifest(file)
        return _load_lazily(file, m, [n for n in m if match(n)])
    if fmt is Format.DCP:
        from . import _dcp

        return _dcp.load_dcp(file, select=select)
    if fmt is Format.GGUF:
        from . import _gguf_load

        return _gguf_load.load_gguf(read_manifest(file), match)
    from . import _torch

    m = read_manifest(file)
    pairs = _torch.load_torch(file) if fmt is Format.TORCH else _pairs(file, fmt)
    pd = ParamDict([(n, t) for n, t in pairs if match(n)], metadata=m.metadata)
    for n in pd:
        if n in m:
            pd._meta[n] = _meta_of(m, n)
    return pd


#: Other frameworks' formats: their module, manifest reader and whole loader.
_OTHERS = {
    Format.ONNX: ("_onnx", "read_onnx_manifest", "load_onnx"),
    Format.KERAS: ("_keras", "read_keras_manifest", "load_keras"),
    Format.FLAX: ("_flax", "read_msgpack_manifest", "load_msgpack"),
    Format.ORBAX: ("_flax", "read_orbax_manifest", "load_orbax"),
}


def _other(fmt: Format, which: int) -> Any:
    """The manifest reader (``which=1``) or the loader (``2``) of an :data:`_OTHERS` format."""
    import importlib

    spec = _OTHERS[fmt]
    return getattr(importlib.import_module(f"{__name__}.{spec[0]}"), spec[which])


def _pairs(file: Any, fmt: Format) -> Any:
    """``(name, tensor)`` of every stored entry of the formats read whole (not torch)."""
    if fmt in _OTHERS:
        return _other(fmt, 2)(file)
    from . import _numpy

    return _numpy.load_npz(file)


#: A valid entry name as :func:`paramscope.validate_name` sees it, in one match.
_NAME = re.compile(r"[^.\s]+(?:\.[^.\s]+)*")


def _load_lazily(file: Path, m: Manifest, wanted: list[str]) -> ParamDict:
    """The ParamDict of ``wanted`` names of a safetensors (or sharded) checkpoint; a
    quantised entry comes with its scales and zero points (added at the end).

    Its values are a :class:`~paramscope.io._lazytensors.LazyTensors`: an entry's tensor is
    made (viewing a copy-on-write mmap) when first read, so loading 1.4 M entries costs the
    header's rows and a few dict slots each, not 1.4 M tensors. Entries without paramscope
    metadata share one :class:`EntryMeta` per (role, trainable, tags). Torch shards of a
    sharded checkpoint are read whole, as before.
    """
    from .._names import ensure_new, validate_name
    from .._paramdict import EntryMeta, ParamDict
    from ._lazytensors import LazyTensors

    pd = ParamDict(metadata=m.metadata)
    values = LazyTensors()
    pd._values = values
    order, metas = pd._order, pd._meta
    files: dict[str, Any] = {}  # file → its number in values, or its tensors (torch shard)
    shared: dict[tuple[Any, ...], EntryMeta] = {}
    early = False  # an alias came before its target: tied at the end
    asked = len(wanted)
    seen: set[str] | None = None
    for i, n in enumerate(wanted):  # grows: scales and zero points of quantised entries
        e = m[n]
        record = quant_record(e.extra) if i < asked and e.extra else None
        if record is not None:
            seen = set(wanted) if seen is None else seen
            for a in aux_names(record):
                if a in m and a not in seen:
                    wanted.append(a)
                    seen.add(a)
        if e.tie is not None and e.tie in order:
            pd.tie(n, e.tie)
        else:
            stored = e.tie or n
            loc = e.location if e.tie is None else m[stored].location
            if loc is None:  # pragma: no cover - stored entries always have a location
                raise FormatError(file, f"entry {stored!r} has no stored bytes")
            if _NAME.fullmatch(n) is None:
                validate_name(n)  # raises, naming the bad segment
            if n in order:  # pragma: no cover - a manifest's names are unique
                ensure_new(n, order)
            src = files.get(loc.file)
            if src is None:
                src = files[loc.file] = _file_values(values, loc.file, m, wanted)
            if isinstance(src, int):
                values.put(n, src, stored)
            else:
                dict.__setitem__(values, n, src[stored])
            order[n] = None
            early = early or e.tie is not None
        if e.extra:
            metas[n] = _meta_of(m, n)
        else:
            key = (e.role, e.trainable, e.tags)
            meta = shared.get(key)
            if meta is None:
                meta = shared[key] = EntryMeta(e.role, e.trainable, e.tags, NO_EXTRA)
            metas[n] = meta
    if early:
        _retie(pd, m)
    return pd


def _file_values(values: Any, fpath: str, m: Manifest, wanted: list[str]) -> Any:
    """A file's number in ``values`` (safetensors), or the wanted tensors of a torch shard."""
    if _sharded_is_torch(fpath):
        from . import _torch

        keep = set()
        for n in wanted:
            e = m[n]
            loc = m[e.tie or n].location
            if loc is not None and loc.file == fpath:
                keep.add(e.tie or n)
        return {k: v for k, v in _torch.load_torch(fpath) if k in keep}
    return values.add_file(_safetensors.parse_header(fpath))


def _sharded_is_torch(fpath: str) -> bool:
    return detect_format(fpath) is Format.TORCH


def _retie(pd: ParamDict, m: Manifest) -> None:
    """Aliases whose target came later in the file order are tied now."""
    for n in list(pd):
        tie = m[n].tie
        if tie is not None and tie in pd and pd.alias_of(n) is None:
            meta = pd.meta(n)
            pd.tie(n, tie)
            pd._meta[n] = meta


def save(
    source: ParamDict | Mapping[str, torch.Tensor] | torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    max_shard_size: int | str | None = None,
    metadata: Mapping[str, str] | None = None,
    fsync: bool = True,
    format: str = "safetensors",
) -> Path:
    """Save parameters as safetensors, atomically, with a content digest per entry.

    Ties are stored once, with an alias map in the metadata; roles, trainable flags, tags and
    extra go under ``__metadata__["paramscope"]`` as JSON. The file opens with
    ``safetensors.safe_open`` and Hugging Face loaders. With ``max_shard_size`` (``"5GB"``,
    decimal units as Hugging Face uses) ``path`` is a folder that receives
    ``model-0000k-of-0000N.safetensors`` shards and ``model.safetensors.index.json``: they are
    built aside and committed with the index as the commit point, so the folder reads as the
    previous checkpoint or the new one at every instant, and the folder's other files
    (``config.json``, tokenizer files, subfolders) are never touched (see
    :func:`paramscope.io._sharded.write_shards`; DCP: :func:`paramscope.io._dcp.save_dcp`).

    Args:
        source: a ParamDict, a plain dict of tensors, or a module (its ``from_module`` view).
        path: destination file, or folder when sharding.
        max_shard_size: shard size limit; ``None`` writes one file.
        metadata: extra free ``str → str`` metadata (merged over ``source.metadata``).
        fsync: flush every file (and its folder) to disk before returning, so the save
            survives a power loss. ``False`` is faster (no waiting for the disk); the
            rename into place is still atomic, so readers and a killed process never see a
            torn file, but an OS crash soon after may lose the new file.
        format: ``"safetensors"`` (default) or ``"dcp"`` (a torch.distributed.checkpoint
            folder, written in this one process; see :mod:`paramscope.io._dcp`).

    Returns:
        The path written (the index file when sharded).

    Raises:
        UnsupportedDTypeError: a tensor is on the meta device or has a dtype safetensors lacks.
        ArgumentTypeError: ``source`` is not a ParamDict, dict or module; ``metadata`` is not
            str → str, or an entry's extra metadata is not JSON-able.
        ArgumentError: an unknown ``format``, or an option that does not apply to it.
        WriteError: ``path`` is a folder (without ``max_shard_size``), a sharded ``path`` is
            a file or holds a DCP checkpoint.
        OSError: writing failed (a full disk); the message names the destination file, and
            the destination is left as it was.

    Example:
        >>> import tempfile, torch
        >>> from paramscope import ParamDict
        >>> pd = ParamDict({"a.w": torch.randn(30, 4), "b.w": torch.randn(30, 4)})
        >>> pd.tie("c.w", "a.w")
        >>> d = tempfile.mkdtemp()
        >>> save(pd, f"{d}/model.safetensors").name
        'model.safetensors'
        >>> index = save(pd, f"{d}/ckpt", max_shard_size="500B")  # 480 bytes per tensor
        >>> for name in sorted(p.name for p in index.parent.iterdir()):
        ...     print(name)
        model-00001-of-00002.safetensors
        model-00002-of-00002.safetensors
        model.safetensors.index.json
        >>> back = load(index)
        >>> back["c.w"] is back["a.w"], torch.equal(back["b.w"], pd["b.w"])
        (True, True)
    """
    from . import _sharded, _writer

    pd = _as_paramdict(source)
    if format == "dcp":
        from . import _dcp

        if max_shard_size is not None:
            raise ArgumentError(
                f"save: max_shard_size={max_shard_size!r} splits safetensors files; "
                "format='dcp' writes its own chunks: drop max_shard_size=, or use "
                "format='safetensors'"
            )
        pd.metadata.update(dict(metadata or {}))
        return Path(_dcp.save_dcp(pd, path))
    if format != "safetensors":
        raise ArgumentError(
            f"save: format={format!r}: expected 'safetensors' or 'dcp' (paramscope reads "
            ".pt/.bin/.npz but writes only these two)"
        )
    meta = {**pd.metadata, **dict(metadata or {})}
    bad = [k for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ArgumentTypeError(
            f"save: metadata[{bad[0]!r}] = {reprlib.repr(meta[bad[0]])}: safetensors metadata "
            "maps str to str; convert the key and the value to str (json.dumps for structures)"
        )
    if _safetensors.META_KEY in meta:
        raise ArgumentError(
            f"save: metadata key {_safetensors.META_KEY!r} is reserved for paramscope's own "
            "record; choose another key"
        )
    entries = [_writer.StoredEntry(n, pd[n], pd.meta(n).to_json()) for n in pd.stored()]
    aliases = {a: pd.alias_of(a) or "" for a in pd if pd.alias_of(a) is not None}
    alias_meta = {a: pd.meta(a).to_json() for a in aliases}
    _check_json(pd)
    if max_shard_size is not None:
        return _sharded.write_sharded(
            path,
            entries,
            max_size=parse_size(max_shard_size),
            aliases=aliases,
            alias_meta=alias_meta,
            metadata=meta,
            fsync=fsync,
        )
    from ._remote import as_path

    dest = as_path(path)
    if dest.is_dir():
        raise WriteError(
            f"save: {os.fspath(path)!r} is a folder; give a file name (e.g. "
            f"{os.path.join(os.fspath(path), 'model.safetensors')!r}), or max_shard_size= to "
            "write shards into it"
        )
    _writer.write_file(
        dest, entries, aliases=aliases, alias_meta=alias_meta, metadata=meta, fsync=fsync
    )
    return dest


def _check_json(pd: ParamDict) -> None:
    for n in pd:
        try:
            json.dumps(pd.meta(n).to_json())
        except (TypeError, ValueError) as exc:
            raise ArgumentTypeError(
                f"save: entry {n!r}: its extra metadata is not JSON-able ({exc}); keep "
                "numbers, strings, lists and dicts there"
            ) from None


def _as_paramdict(source: Any) -> ParamDict:
    from .._paramdict import ParamDict

    if isinstance(source, ParamDict):
        return source
    if isinstance(source, Mapping):
        return ParamDict(source)
    if hasattr(source, "named_parameters"):
        return ParamDict.from_module(source)
    raise ArgumentTypeError(
        "save: expected a ParamDict, a dict of tensors or an nn.Module, "
        f"found {type(source).__name__}"
    )
