"""A DCP ``.metadata`` pickle, unpickled so that nothing in it runs or changes the process.

``torch.distributed.checkpoint`` keeps a checkpoint's layout in ``.metadata``: a pickle of
``Metadata`` (every tensor's global size, dtype and the chunks each rank wrote, and where each
chunk's bytes lie). Plain ``pickle.load`` runs whatever the file asks for, and even a pickle
that names only harmless classes can hurt: ``BUILD`` sets attributes on whatever object it is
given, so ``BUILD`` on the class ``pathlib.PurePosixPath`` with ``{"_str": "/x"}`` makes every
``Path`` of the process print as ``/x``, and ``BUILD`` on a torch dtype, an enum member or a
function's ``__dict__`` changes it for everyone. :class:`DcpUnpickler` therefore runs the
pickle machine (the standard library's pure-Python one) with every opcode that touches an
object replaced:

- ``GLOBAL`` / ``STACK_GLOBAL`` hand out no real class or function. A name of
  :data:`ALLOWED_GLOBALS` gives a :class:`_Global` token whose builder makes a *fresh* value:
  an empty DCP dataclass instance, an empty or filled builtin container, a ``torch.Size`` of
  ints, a layout or memory-format encoding looked up in a fixed table, a path as a plain
  ``str``. A torch dtype is handed out as itself (immutable, and nothing below touches it).
- ``REDUCE``, ``NEWOBJ``, ``NEWOBJ_EX``, ``OBJ`` and ``INST`` only call those builders; a DCP
  dataclass is made empty (no arguments), as DCP's own pickles make it.
- ``BUILD`` only gives fields to a DCP dataclass instance this load made and has not built
  yet (once), and only its known fields (``TensorProperties``: its 5-tuple state). A token,
  a dtype, an enum member, a layout, a container, a second ``BUILD``: refused.
- ``APPEND(S)``, ``SETITEM(S)``, ``ADDITEMS`` only fill plain lists, dicts and sets (all made
  by this load: nothing shared reaches the stack). Dict keys and set members must be flat
  (a scalar, a flat tuple, a built ``MetadataIndex``): hashing a deeply nested tuple recurses
  in C and would crash the process.
- Persistent ids, out-of-band buffers and unknown opcodes are refused.

The result is not yet checked: :mod:`._dcp_layout` checks its fields and chunk layout.
"""

from __future__ import annotations

import dataclasses
import ntpath
import pickle
import posixpath
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch.distributed.checkpoint import filesystem as _fs
from torch.distributed.checkpoint import metadata as _md

from .._errors import FormatError, UnsafePickleError

__all__ = ["ALLOWED_GLOBALS", "DcpUnpickler", "describe", "unpickle"]

_Builder = Callable[["DcpUnpickler", tuple[Any, ...], dict[str, Any]], Any]

#: The DCP dataclasses a ``.metadata`` may hold → their field names.
_DATACLASSES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls))
    for cls in (
        _md.Metadata,
        _md.MetadataIndex,
        _md.StorageMeta,
        _md.TensorStorageMetadata,
        _md.BytesStorageMetadata,
        _md.ChunkStorageMetadata,
        _md.TensorProperties,
        _fs._StorageInfo,
    )
}
_ENC = _md._MEM_FORMAT_ENCODING
#: ``TensorProperties`` pickles its memory format as this encoding (see its ``__setstate__``).
_MEMORY_FORMATS: dict[Any, torch.memory_format] = {
    _ENC.TORCH_CONTIGUOUS_FORMAT: torch.contiguous_format,
    _ENC.TORCH_CHANNELS_LAST: torch.channels_last,
    _ENC.TORCH_PRESERVE_FORMAT: torch.preserve_format,
}
_ENCODINGS: dict[int, Any] = {m.value: m for m in _ENC}
#: What ``torch.serialization._get_layout`` would return, as a fixed table (that function keeps
#: a mutable cache; this module never calls it).
_LAYOUTS: dict[str, torch.layout] = {
    str(v): v for v in vars(torch).values() if isinstance(v, torch.layout)
}
_SCALARS = (str, bytes, int, float, bool, type(None))
_INT64 = (-(2**63), 2**63)


class _Global:
    """What ``find_class`` hands the pickle machine for a callable global: a name and a builder.

    The pickle never holds the real class or function, so no opcode can reach it. A token has
    no fields to set (``__slots__``) and :class:`DcpUnpickler` refuses every opcode on it but a
    call.

    Args:
        qualname: ``module.name`` as the pickle spells it.
        build: makes a fresh value from the call's positional and keyword arguments.

    Example:
        >>> ALLOWED_GLOBALS[("builtins", "list")]
        <builtins.list>
    """

    __slots__ = ("build", "qualname")

    def __init__(self, qualname: str, build: _Builder) -> None:
        self.qualname = qualname
        self.build = build

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


def _no_kwargs(u: DcpUnpickler, what: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise u.refuse(f"{what} called with keyword arguments")


def _dataclass(cls: type) -> _Builder:
    def build(u: DcpUnpickler, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args or kwargs:
            raise u.refuse(
                f"{cls.__name__} made with arguments (DCP's own metadata makes it empty, then "
                "gives it its fields with BUILD)"
            )
        obj = object.__new__(cls)
        u.made.append(obj)
        u.unbuilt[id(obj)] = obj
        return obj

    return build


def _iterable(u: DcpUnpickler, what: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The one optional argument of a container constructor: a plain container, or ``()``."""
    _no_kwargs(u, what, kwargs)
    if not args:
        return ()
    if len(args) != 1 or type(args[0]) not in (list, tuple, set, frozenset, torch.Size):
        raise u.refuse(f"{what} called with {_describe_args(args)}, expected one plain container")
    return args[0]


def _container(kind: type) -> _Builder:
    name = "OrderedDict" if kind is OrderedDict else kind.__name__

    def build(u: DcpUnpickler, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        items = _iterable(u, name, args, kwargs)
        if kind in (dict, OrderedDict):
            pairs = []
            for pair in items:
                if type(pair) not in (tuple, list) or len(pair) != 2:
                    raise u.refuse(f"{name} made from a {type(pair).__name__}, expected pairs")
                pairs.append((u.key(pair[0]), pair[1]))
            return kind(pairs)
        if kind in (set, frozenset):
            return kind(u.key(x) for x in items)
        return kind(items)

    return build


def _size(u: DcpUnpickler, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Size:
    dims = _iterable(u, "torch.Size", args, kwargs)
    for d in dims:
        if type(d) is not int or not _INT64[0] <= d < _INT64[1]:
            raise FormatError(u.path, f"torch.Size: expected 64-bit ints, found {describe(d)}")
    return torch.Size(dims)


def _layout(u: DcpUnpickler, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.layout:
    _no_kwargs(u, "_get_layout", kwargs)
    if len(args) != 1 or type(args[0]) is not str or args[0] not in _LAYOUTS:
        raise FormatError(
            u.path, f"layout: expected one of {sorted(_LAYOUTS)}, found {_describe_args(args)}"
        )
    return _LAYOUTS[args[0]]


def _encoding(u: DcpUnpickler, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _no_kwargs(u, "_MEM_FORMAT_ENCODING", kwargs)
    if len(args) != 1 or type(args[0]) is not int or args[0] not in _ENCODINGS:
        raise FormatError(
            u.path,
            f"memory-format encoding: expected one of {sorted(_ENCODINGS)}, "
            f"found {_describe_args(args)}",
        )
    return _ENCODINGS[args[0]]


def _path(join: Callable[..., str]) -> _Builder:
    def build(u: DcpUnpickler, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        _no_kwargs(u, "a path", kwargs)
        if not all(type(a) is str for a in args):
            raise FormatError(u.path, f"path: expected str parts, found {_describe_args(args)}")
        return join(*args) if args else "."

    return build


def _torch_dtypes() -> dict[tuple[str, str], Any]:
    return {
        ("torch", name): value
        for name, value in vars(torch).items()
        if isinstance(value, torch.dtype) and not name.startswith("_")
    }


def _tokens() -> dict[tuple[str, str], Any]:
    md = "torch.distributed.checkpoint.metadata"
    table: dict[tuple[str, str], _Builder] = {
        **{(md, cls.__name__): _dataclass(cls) for cls in _DATACLASSES if cls.__module__ == md},
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _dataclass(_fs._StorageInfo),
        (md, "_MEM_FORMAT_ENCODING"): _encoding,
        ("torch", "Size"): _size,
        ("torch.serialization", "_get_layout"): _layout,
        # StorageMeta.checkpoint_id: a path, kept as a plain str (no pathlib object at all)
        ("pathlib", "PosixPath"): _path(posixpath.join),
        ("pathlib", "PurePosixPath"): _path(posixpath.join),
        ("pathlib", "WindowsPath"): _path(ntpath.join),
        ("pathlib", "PureWindowsPath"): _path(ntpath.join),
        ("collections", "OrderedDict"): _container(OrderedDict),
        **{("builtins", k.__name__): _container(k) for k in (dict, list, tuple, set, frozenset)},
    }
    return {key: _Global(".".join(key), build) for key, build in table.items()}


#: Every global a DCP ``.metadata`` pickle may name, ``(module, name)`` → what the unpickler
#: hands out for it: a :class:`_Global` token (a builder of fresh values) or a torch dtype.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {**_tokens(), **_torch_dtypes()}


def describe(x: Any) -> str:
    """A bounded description of a value from the file (no ``repr`` of big or deep objects).

    Args:
        x: any value the unpickler made.

    Returns:
        Its ``repr`` for a scalar, dtype, layout or short ``torch.Size``, else its kind.

    Example:
        >>> describe(3), describe([1, 2])
        ('3', 'a list')
    """
    if type(x) in _SCALARS or type(x) in (torch.dtype, torch.layout):
        return f"{x!r:.60}"
    if type(x) is torch.Size and len(x) <= 8:
        return repr(tuple(x))
    return _describe(x)


def _describe(x: Any) -> str:
    if type(x) is _Global:
        return f"{x.qualname} itself"
    if type(x) in (torch.dtype, torch.layout):
        return f"{x} (a process-wide singleton)"
    if type(x) is _ENC:
        return f"_MEM_FORMAT_ENCODING.{x.name} (a process-wide singleton)"
    return f"a {type(x).__name__}"


def _describe_args(args: tuple[Any, ...]) -> str:
    return "(" + ", ".join(describe(a) for a in args[:4]) + (", ...)" if len(args) > 4 else ")")


class DcpUnpickler(pickle._Unpickler):
    """Unpickles a DCP ``.metadata`` so that nothing in it runs or changes the process.

    See the module docstring for what each opcode may do. The result still needs
    :func:`._dcp_layout.check_metadata` (field types, tiling) before use; :func:`unpickle`
    loads and fills dataclass defaults.

    Args:
        file: the open ``.metadata`` file (binary).
        path: the file's name, for messages.

    Example:
        >>> import io, pickle
        >>> DcpUnpickler(io.BytesIO(pickle.dumps([1, "a"])), "x").load()
        [1, 'a']
    """

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, path: str) -> None:
        super().__init__(file)
        self.path = path
        #: DCP dataclass instances this load made (kept alive, so their ids stay unique).
        self.made: list[Any] = []
        #: id → instance, for those not given their fields yet: the only BUILD targets.
        self.unbuilt: dict[int, Any] = {}
        self._built: set[int] = set()

    def refuse(self, what: str) -> UnsafePickleError:
        """The error for an opcode this unpickler does not allow.

        Args:
            what: what the pickle tried.

        Returns:
            An :class:`UnsafePickleError` naming the file (to raise).
        """
        return UnsafePickleError(
            self.path,
            f"refused: the DCP metadata does {what}; only DCP metadata objects the file itself "
            "creates may be given fields (paramscope never runs code from a file nor lets it "
            "change objects of the process)",
        )

    def find_class(self, module: str, name: str) -> Any:
        """A token (or dtype) for an allowed global; anything else is refused unimported.

        Args:
            module: the module the pickle names.
            name: the name in it.

        Returns:
            The :data:`ALLOWED_GLOBALS` entry.
        """
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(
                self.path,
                f"refused: the DCP metadata asks for {module}.{name}, which is not part of "
                "torch.distributed.checkpoint's metadata (paramscope never runs code from a "
                "file)",
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse: DCP metadata has no persistent ids.

        Args:
            pid: the id the pickle gives.

        Returns:
            Never.
        """
        raise UnsafePickleError(self.path, f"refused: unexpected persistent id {describe(pid)}")

    def key(self, k: Any) -> Any:
        """``k`` if it may be a dict key or set member: a flat, cheaply hashable value.

        Args:
            k: the would-be key.

        Returns:
            ``k``.
        """
        t = type(k)
        if t in _SCALARS or t in (torch.dtype, torch.layout, _ENC):
            return k
        if (t is tuple or t is torch.Size) and all(type(x) in _SCALARS for x in k):
            return k
        if t is _md.MetadataIndex and id(k) in self._built:  # fields checked by BUILD
            return k
        raise self.refuse(f"use {_describe(k)} as a dict key or set member")

    def _call(self, func: Any, args: Any, kwargs: Any, op: str) -> Any:
        if type(func) is not _Global:
            raise self.refuse(f"{op} on {_describe(func)}, which is no constructor it may call")
        if type(args) is not tuple or type(kwargs) is not dict:
            raise self.refuse(f"{op} of {func.qualname} with arguments that are not a tuple")
        return func.build(self, args, kwargs)

    # ------------------------------------------------------------------ calling
    def load_reduce(self) -> None:
        """``REDUCE``: a builder call."""
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args, {}, "REDUCE")

    def load_newobj(self) -> None:
        """``NEWOBJ``: a builder call."""
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args, {}, "NEWOBJ"))

    def load_newobj_ex(self) -> None:
        """``NEWOBJ_EX``: a builder call."""
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args, kwargs, "NEWOBJ_EX"))

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        """``OBJ`` / ``INST``: a builder call."""
        self.append(self._call(klass, tuple(args), {}, "OBJ/INST"))

    # ------------------------------------------------------------------ fields
    def load_build(self) -> None:
        """``BUILD``: fields for a DCP dataclass instance this load made, once."""
        state = self.stack.pop()
        inst = self.stack[-1]
        if self.unbuilt.pop(id(inst), None) is not inst:
            what = "a second BUILD on one object" if id(inst) in self._built else "BUILD"
            raise self.refuse(f"{what} on {_describe(inst)}")
        cls = type(inst)
        if cls is _md.TensorProperties:
            fields = self._properties(state)
        elif type(state) is dict:
            names = _DATACLASSES[cls]
            extra = [k for k in state if type(k) is not str or k not in names]
            if extra:
                raise self.refuse(
                    f"BUILD of {cls.__name__} with {describe(extra[0])}, not one of its fields "
                    f"{', '.join(names) or '(none)'}"
                )
            fields = state
        else:
            raise self.refuse(
                f"BUILD of {cls.__name__} with a {type(state).__name__} state, expected a dict "
                "of its fields"
            )
        if cls is _md.MetadataIndex:  # hashed as a storage_data key: its fields first
            _check_index(self.path, fields)
        for name, value in fields.items():
            object.__setattr__(inst, name, value)
        self._built.add(id(inst))

    def _properties(self, state: Any) -> dict[str, Any]:
        """``TensorProperties``' own state, ``(dtype, layout, requires_grad, enc, pin)``."""
        types = (torch.dtype, torch.layout, bool, _ENC, bool)
        if type(state) is not tuple or len(state) != 5:
            raise self.refuse(
                f"BUILD of TensorProperties with {describe(state)}, expected its 5-tuple state"
            )
        if not all(type(v) is t for v, t in zip(state, types, strict=True)):
            found = ", ".join(type(v).__name__ for v in state)
            raise FormatError(
                self.path,
                "TensorProperties: expected (dtype, layout, bool, _MEM_FORMAT_ENCODING, bool), "
                f"found ({found})",
            )
        dtype, layout, grad, enc, pin = state
        return {
            "dtype": dtype,
            "layout": layout,
            "requires_grad": grad,
            "memory_format": _MEMORY_FORMATS[enc],
            "pin_memory": pin,
        }

    # ------------------------------------------------------------------ containers
    def _target(self, kinds: tuple[type, ...], op: str) -> Any:
        obj = self.stack[-1]
        if type(obj) not in kinds:
            raise self.refuse(f"{op} on {_describe(obj)}")
        return obj

    def load_append(self) -> None:
        """``APPEND``: only onto a plain list."""
        value = self.stack.pop()
        self._target((list,), "APPEND").append(value)

    def load_appends(self) -> None:
        """``APPENDS``: only onto a plain list."""
        items = self.pop_mark()
        self._target((list,), "APPENDS").extend(items)

    def load_setitem(self) -> None:
        """``SETITEM``: only into a plain dict, with a flat key."""
        value = self.stack.pop()
        key = self.stack.pop()
        self._target((dict, OrderedDict), "SETITEM")[self.key(key)] = value

    def load_setitems(self) -> None:
        """``SETITEMS``: only into a plain dict, with flat keys."""
        items = self.pop_mark()
        target = self._target((dict, OrderedDict), "SETITEMS")
        if len(items) % 2:
            raise FormatError(self.path, "SETITEMS with an odd number of items")
        for i in range(0, len(items), 2):
            target[self.key(items[i])] = items[i + 1]

    def load_additems(self) -> None:
        """``ADDITEMS``: only into a plain set, with flat members."""
        items = self.pop_mark()
        target = self._target((set,), "ADDITEMS")
        for x in items:
            target.add(self.key(x))

    def load_dict(self) -> None:
        """``DICT``: flat keys."""
        items = self.pop_mark()
        if len(items) % 2:
            raise FormatError(self.path, "DICT with an odd number of items")
        self.append({self.key(items[i]): items[i + 1] for i in range(0, len(items), 2)})

    def load_frozenset(self) -> None:
        """``FROZENSET``: flat members."""
        self.append(frozenset(self.key(x) for x in self.pop_mark()))

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.ADDITEMS[0]] = load_additems
    dispatch[pickle.DICT[0]] = load_dict
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def finish(self, obj: Any) -> Any:
        """Give every made dataclass instance the defaults of the fields its state left out.

        Args:
            obj: what :meth:`load` returned.

        Returns:
            ``obj``. Required fields that are still missing are found by
            :func:`check_metadata`, which names the entry.
        """
        for inst in self.made:
            for f in dataclasses.fields(inst):
                if f.name in vars(inst):
                    continue
                if f.default is not dataclasses.MISSING:
                    object.__setattr__(inst, f.name, f.default)
                elif f.default_factory in (list, dict):  # type: ignore[comparison-overlap]
                    object.__setattr__(inst, f.name, f.default_factory())
        return obj


def unpickle(file: Any, path: str) -> Any:
    """Unpickle a DCP ``.metadata`` with :class:`DcpUnpickler` (fields not yet checked).

    Args:
        file: the open file (binary).
        path: its name, for messages.

    Returns:
        What the pickle holds.

    Example:
        >>> import io, tempfile
        >>> from paramscope.io._dcp import save_dcp
        >>> folder = save_dcp({"w": torch.ones(2, 3)}, f"{tempfile.mkdtemp()}/ckpt")
        >>> with open(folder / ".metadata", "rb") as f:
        ...     md = unpickle(f, ".metadata")
        >>> type(md).__name__, md.state_dict_metadata["w"].size
        ('Metadata', torch.Size([2, 3]))
        >>> evil = b"cos\\nsystem\\n(S'echo hi'\\ntR."  # os.system('echo hi')
        >>> unpickle(io.BytesIO(evil), ".metadata")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        paramscope._errors.UnsafePickleError: ...os.system...
    """
    u = DcpUnpickler(file, path)
    return u.finish(u.load())


def _check_index(path: str, fields: dict[str, Any]) -> None:
    fqn = fields.get("fqn")
    offset = fields.get("offset")
    index = fields.get("index")
    if type(fqn) is not str:
        raise FormatError(path, f"MetadataIndex.fqn: expected str, found {describe(fqn)}")
    if offset is not None and type(offset) is not torch.Size:
        raise FormatError(
            path,
            f"MetadataIndex {fqn!r:.80}: offset: expected torch.Size, found {describe(offset)}",
        )
    if index is not None and type(index) is not int:
        raise FormatError(
            path, f"MetadataIndex {fqn!r:.80}: index: expected int, found {describe(index)}"
        )
