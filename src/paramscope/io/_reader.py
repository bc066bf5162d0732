"""Reading a checkpoint's stored tensors one at a time: bounded memory whatever its size.

Each stored tensor is read into fresh memory with one positioned read through a
:class:`~paramscope.io._source.ByteSource` (not a memory map, whose touched pages would count
against the process until it ends). Streaming operations (convert, diff, verify, count's value
pass, prune / quantize into a new file) read through :class:`SourceReader`, transform, write
(:func:`paramscope.io._writer.write_stream`) and free each tensor before the next one is read,
so their peak memory is about twice the largest tensor plus a constant. Sources whose tensors
have a byte location in the file (safetensors, sharded folders, torch zip checkpoints) stream;
legacy torch pickles and .npz archives are loaded whole first (said in a note).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._enums import Format
from .._errors import FormatError
from .._manifest import Entry, Manifest
from .._target_kind import model_target_error
from ._source import ByteSource, open_source

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_OPEN", "SourceReader"]

#: Source files a :class:`SourceReader` keeps open at once (entries are read file by file, so
#: a few suffice); a checkpoint of thousands of shards stays far below ``ulimit -n``.
MAX_OPEN = 16


class SourceReader:
    """Reads the stored tensors of a checkpoint one at a time, in file order.

    Args:
        path: any checkpoint source (not a model TARGET: it has no values).

    Raises:
        TargetError: ``path`` names a model (``zoo:``, ``module:callable``, a config).

    Example:
        >>> import tempfile, torch, paramscope
        >>> sd = {"w": torch.ones(2, 3), "b": torch.arange(3.0)}
        >>> path = paramscope.save(sd, f"{tempfile.mkdtemp()}/model.safetensors")
        >>> with SourceReader(path) as r:
        ...     for entry in r.entries:
        ...         print(entry.name, r.read(entry).sum().item())
        w 6.0
        b 3.0
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from . import read_manifest

        err = model_target_error(path, "reading tensor values")
        if err is not None:
            raise err
        self.path = os.fspath(path)
        self.manifest: Manifest = read_manifest(path)
        stored = [e for e in self.manifest.values() if e.tie is None]
        self.streaming = all(e.location is not None for e in stored)
        key: Callable[[Entry], Any] = (
            (lambda e: (e.location.file, e.location.offset))  # type: ignore[union-attr]
            if self.streaming
            else (lambda e: 0)
        )
        self.entries: list[Entry] = sorted(stored, key=key)  # GGUF: see _gguf_load
        self._gguf: dict[str, Any] = {}
        if self.manifest.format is Format.GGUF:  # block types come back as float32 values
            from ._gguf_load import logical_entries

            self.entries = logical_entries(self.entries, self._gguf)
        self.aliases = {e.name: e.tie for e in self.manifest.values() if e.tie is not None}
        self._files: OrderedDict[str, ByteSource] = OrderedDict()  # most recently used last
        self._whole: Any = None
        self.notes: list[str] = []
        if not self.streaming:
            self.notes.append(
                f"{self.manifest.format.value} source without byte locations: loaded whole, "
                "memory not bounded by the largest tensor"
            )

    def __enter__(self) -> SourceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the sources opened for reading."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._whole = None

    def _file(self, path: str) -> ByteSource:
        """The source ``path``, opened on first use; at most :data:`MAX_OPEN` stay open."""
        f = self._files.get(path)
        if f is not None:
            self._files.move_to_end(path)
            return f
        while len(self._files) >= MAX_OPEN:  # a source of thousands of shards: close the oldest
            self._files.popitem(last=False)[1].close()
        f = self._files[path] = open_source(path)
        return f

    @property
    def total_bytes(self) -> int:
        """Bytes of all stored tensors."""
        return sum(e.nbytes for e in self.entries)

    def read(self, e: Entry) -> torch.Tensor:
        """The tensor of one stored entry, in fresh memory the caller owns.

        Args:
            e: a stored entry of :attr:`entries`.

        Returns:
            The tensor (its storage dtype and shape; a GGUF block-typed tensor dequantised
            to float32 in its logical shape, as :attr:`entries` lists it).

        Raises:
            FormatError: the file ends before the entry's bytes.
        """
        import torch

        from ._lazytensors import torch_shape

        if not self.streaming:
            if self._whole is None:
                from . import load

                self._whole = load(self.path)
            return self._whole[e.name]
        loc = e.location
        assert loc is not None
        f = self._file(loc.file)
        if self.manifest.format is Format.GGUF:
            from ._gguf_load import read_entry

            return read_entry(f, e, self._gguf.get(e.name))
        buf = torch.empty(loc.length, dtype=torch.uint8)
        if loc.length:
            try:
                got = f.readinto_at(loc.offset, memoryview(buf.numpy()))
            except OSError as exc:  # EIO and the like name no file: name the source
                if exc.filename is None and exc.errno is not None:
                    raise OSError(exc.errno, exc.strerror, loc.file) from exc
                raise
            if got != loc.length:
                raise FormatError(
                    loc.file,
                    f"entry {e.name!r}: expected {loc.length} bytes at "
                    f"offset {loc.offset}, the file ends after {got}",
                )
        shape = torch_shape(e.dtype, e.shape, e.name)
        return buf.view(e.dtype.to_torch()).reshape(shape)
