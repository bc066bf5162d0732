"""The models a merge reads: checkpoints (streamed) and models in memory, behind one interface.

A :class:`MergeSource` says which names it holds (stored entries and aliases), each name's
shape and dtype, and reads one tensor at a time. A checkpoint is read with
:class:`~paramscope.io._reader.SourceReader` (one positioned read per tensor, into fresh
memory); a ``ParamDict``, a ``dict`` of tensors or an ``nn.Module`` (its ``state_dict``) are
read in place, and :meth:`MergeSource.read` copies their values before anything is changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._dtypes import DType
from .._errors import ArgumentTypeError

if TYPE_CHECKING:
    import torch

__all__ = ["MergeSource", "open_source"]


class MergeSource:
    """One model of a merge.

    Attributes:
        label: how the model is named in reports and errors (its path, or ``"source 2"``).
        shapes: name → shape of every name it holds (stored entries and aliases).
        dtypes: name → :class:`~paramscope.DType`.
        aliases: alias → the stored name it shares its values with.
        metadata: the file's free metadata (``{}`` for a model in memory).
        manifest: the checkpoint's :class:`~paramscope.Manifest` (its entries' roles, tags and
            quantisation records), ``None`` for a model in memory.
        notes: what the reader wants said (a legacy pickle loaded whole …).
    """

    def __init__(
        self,
        label: str,
        shapes: dict[str, tuple[int, ...]],
        dtypes: dict[str, DType],
        aliases: dict[str, str],
        *,
        reader: Any = None,
        values: Mapping[str, torch.Tensor] | None = None,
        metadata: Mapping[str, str] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.label = label
        self.shapes = shapes
        self.dtypes = dtypes
        self.aliases = aliases
        self.metadata = dict(metadata or {})
        self.notes = list(notes or [])
        self._reader = reader
        self.manifest = reader.manifest if reader is not None else None
        self._values = values
        self._entries = {e.name: e for e in reader.entries} if reader is not None else {}

    def __contains__(self, name: object) -> bool:
        return name in self.shapes

    def read(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The values of ``name`` in memory the caller owns (it may change them in place).

        Args:
            name: a name :attr:`shapes` holds.
            dtype: convert to this torch dtype (``None``: as stored).

        Returns:
            A CPU tensor of the name's shape.
        """
        target = self.aliases.get(name, name)
        if self._reader is not None:
            t = self._reader.read(self._entries[target])
            return t if dtype is None or t.dtype == dtype else t.to(dtype)
        assert self._values is not None
        t = self._values[target].detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if dtype is not None and t.dtype != dtype:
            return t.to(dtype)
        return t.clone()

    def close(self) -> None:
        """Close the checkpoint's files (nothing for a model in memory)."""
        if self._reader is not None:
            self._reader.close()


def open_source(obj: Any, label: str) -> MergeSource:
    """A :class:`MergeSource` for a checkpoint path, a ``ParamDict``, a dict or an ``nn.Module``.

    Args:
        obj: the model: a checkpoint path (any format paramscope reads: safetensors file, HF
            sharded folder or index, torch ``.pt``/``.bin``, ``.npz``, DCP), a
            :class:`~paramscope.ParamDict`, a ``dict`` of tensors or an ``nn.Module``.
        label: its name in reports when it is not a path.

    Returns:
        The source (close it when done).

    Raises:
        ArgumentTypeError: anything else.

    Example:
        >>> import torch
        >>> s = open_source({"w": torch.ones(2, 3)}, "source 1")
        >>> s.shapes, s.dtypes["w"].value
        ({'w': (2, 3)}, 'F32')
    """
    if isinstance(obj, (str, os.PathLike)):
        from ..io._reader import SourceReader

        reader = SourceReader(obj)
        m = reader.manifest
        shapes = {e.name: tuple(e.shape) for e in reader.entries}
        dtypes = {e.name: e.dtype for e in reader.entries}
        aliases = {a: t for a, t in reader.aliases.items() if t in shapes}
        for a, t in aliases.items():
            shapes[a], dtypes[a] = shapes[t], dtypes[t]
        return MergeSource(
            os.fspath(obj),
            shapes,
            dtypes,
            aliases,
            reader=reader,
            metadata=m.metadata,
            notes=list(reader.notes),
        )
    values: Mapping[str, Any]
    module = _module_state(obj)
    if module is not None:
        values = module
    elif isinstance(obj, Mapping):
        values = obj
    else:
        raise ArgumentTypeError(
            f"merge: {label}: expected a checkpoint path, a ParamDict, a dict of tensors or an "
            f"nn.Module, got {type(obj).__name__}"
        )
    import torch

    from .._paramdict import ParamDict

    shapes, dtypes, aliases = {}, {}, {}
    first_of: dict[int, str] = {}
    for name in values:
        t = values[name]
        if not isinstance(t, torch.Tensor):
            raise ArgumentTypeError(
                f"merge: {label}: entry {name!r} is a {type(t).__name__}, not a tensor"
            )
        shapes[name] = tuple(t.shape)
        dtypes[name] = DType.from_torch(t.dtype)
        target = obj.alias_of(name) if isinstance(obj, ParamDict) else None
        if target is None and not isinstance(obj, ParamDict):
            target = first_of.setdefault(id(t), name)
            target = None if target == name else target
        if target is not None:
            aliases[name] = target
    return MergeSource(label, shapes, dtypes, aliases, values=values)


def _module_state(obj: Any) -> dict[str, Any] | None:
    """An ``nn.Module``'s state dict (ties kept as one tensor object), else ``None``."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict(keep_vars=True))
    return None
