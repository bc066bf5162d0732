"""JAX pytrees (Flax ``params``, Flax NNX state, Haiku dicts, Equinox modules) as ParamDicts.

A pytree's array leaves become entries named by their paths (``sep``-joined: dict keys,
sequence indices, attribute names). Plain nested dicts, lists and tuples are walked
directly, without importing jax; an NNX ``State`` is first made a pure dict
(``State.to_pure_dict()``); anything else (an Equinox module filtered with
``eqx.filter(model, eqx.is_array)``, a flax ``struct``, an optax state) is flattened with
``jax.tree_util.tree_flatten_with_path``. Leaves that are not arrays (``None`` from
``eqx.filter``, Python numbers, strings) are left out.

Values become CPU torch tensors through numpy; ml_dtypes types (``bfloat16``, the float8
kinds) are reinterpreted bit for bit as the torch dtype of the same name. The same array
object at two paths is one tie (the first path stores it) and is counted once.

:func:`to_pytree` gives back nested dicts (lists and tuples where the ParamDict came from
:func:`from_pytree`: its container structure is kept in ``pd.metadata``) of **numpy**
arrays (bfloat16 as ``ml_dtypes.bfloat16``), or, with ``like=tree``, a tree of the same
type as ``tree`` (an Equinox module, an NNX ``State`` …) whose leaves are converted to
the kind of ``tree``'s leaves (jax arrays for jax arrays).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._dtypes import DType
from ._enums import Format, Role, RoleSource
from ._errors import InvalidNameError, UnsupportedDTypeError
from ._manifest import Entry, Manifest, infer_role

if TYPE_CHECKING:
    import torch

    from ._paramdict import ParamDict

__all__ = [
    "PYTREE_KEY",
    "flatten_pytree",
    "from_pytree",
    "is_pytree",
    "pytree_manifest",
    "to_pytree",
]

#: ``ParamDict.metadata`` key holding the container structure :func:`from_pytree` saw.
PYTREE_KEY = "paramscope.pytree"

# ml_dtypes / numpy dtype names with no numpy type string, and their torch dtype names
_ML_DTYPES: dict[str, tuple[DType, str, str]] = {
    # numpy name: (paramscope dtype, torch dtype name, same-width integer view)
    "bfloat16": (DType.BF16, "bfloat16", "int16"),
    "float8_e4m3fn": (DType.F8_E4M3, "float8_e4m3fn", "uint8"),
    "float8_e5m2": (DType.F8_E5M2, "float8_e5m2", "uint8"),
    "float8_e4m3fnuz": (DType.F8_E4M3FNUZ, "float8_e4m3fnuz", "uint8"),
    "float8_e5m2fnuz": (DType.F8_E5M2FNUZ, "float8_e5m2fnuz", "uint8"),
    "float8_e8m0fnu": (DType.F8_E8M0, "float8_e8m0fnu", "uint8"),
}
_TORCH_TO_ML = {v[1]: k for k, v in _ML_DTYPES.items()}


def dtype_of(np_dtype: Any, where: str = "pytree leaf") -> DType:
    """The :class:`DType` of a numpy (or ml_dtypes) dtype.

    Args:
        np_dtype: a ``numpy.dtype`` (or anything with ``.name`` and ``.str``).
        where: what the leaf is, for the error.

    Returns:
        The matching DType.

    Raises:
        UnsupportedDTypeError: a dtype safetensors cannot hold.

    Example:
        >>> import numpy as np
        >>> dtype_of(np.dtype("float16"))
        <DType.F16: 'F16'>
    """
    name = str(getattr(np_dtype, "name", np_dtype))
    if name in _ML_DTYPES:
        return _ML_DTYPES[name][0]
    try:
        return DType.from_numpy(np_dtype.str)
    except (UnsupportedDTypeError, AttributeError):
        raise UnsupportedDTypeError(
            f"{where}: dtype {name}: expected bool, (u)int8-64, float16/32/64, bfloat16, "
            "float8 or complex64"
        ) from None


#: Flax variable collections that hold state, not trained parameters (``batch_stats``:
#: BatchNorm's running statistics; ``cache``: decoding caches).
STATE_COLLECTIONS = frozenset({"batch_stats", "cache"})


def role_of(name: str, dtype: DType, shape: tuple[int, ...], sep: str = ".") -> Role:
    """:func:`~paramscope._manifest.infer_role`, and a buffer for a leaf under a Flax state
    collection (``batch_stats.*``, ``cache.*``: the first segment of a variables dict).

    Args:
        name: the entry's name.
        dtype: its dtype.
        shape: its shape.
        sep: the separator of ``name``.

    Returns:
        The role.

    Example:
        >>> role_of("batch_stats.BatchNorm_0.mean", DType.F32, (8,)).value
        'buffer'
    """
    if name.partition(sep)[0] in STATE_COLLECTIONS:
        return Role.BUFFER
    return infer_role(name, dtype, shape)


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__array__")


def _plain(tree: Any) -> Any:
    """An NNX ``State`` as its pure dict (``nnx.to_pure_dict``); anything else as is."""
    if type(tree).__module__.startswith("flax.nnx"):
        from flax import nnx

        if hasattr(nnx, "to_pure_dict"):
            return nnx.to_pure_dict(tree)
    to_pure = getattr(tree, "to_pure_dict", None)
    return to_pure() if callable(to_pure) else tree


def _is_plain(tree: Any) -> bool:
    """Whether ``tree`` is nested dicts / lists / tuples of arrays (or leaves left out)."""
    if isinstance(tree, Mapping):
        return all(_is_plain(v) for v in tree.values())
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):  # not a namedtuple
        return all(_is_plain(v) for v in tree)
    # a leaf: an array, or a value left out; anything else is a pytree node for jax
    return _leaf_ok(tree)


def _leaf_ok(x: Any) -> bool:
    """An array, or a plain value a parameter tree may hold (left out)."""
    return x is None or _is_array(x) or isinstance(x, (bool, int, float, complex, str, bytes))


def is_pytree(obj: Any) -> bool:
    """Whether ``obj`` is a parameter pytree :func:`from_pytree` reads rather than a dict of
    torch tensors: it holds at least one non-torch array leaf (numpy, jax), or it is an NNX
    ``State`` or an Equinox module.

    Args:
        obj: anything.

    Returns:
        True for a pytree of arrays.

    Example:
        >>> import numpy as np
        >>> is_pytree({"dense": {"kernel": np.zeros((2, 3))}}), is_pytree(42)
        (True, False)
    """
    if callable(getattr(obj, "to_pure_dict", None)):
        return True
    if type(obj).__module__.startswith("equinox") or any(
        c.__module__.startswith("equinox") for c in type(obj).__mro__
    ):
        return True
    if not isinstance(obj, (Mapping, list, tuple)):
        return False
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
        elif _is_array(node) and not type(node).__module__.startswith("torch"):
            return True
    return False


def _key_text(k: Any) -> str:
    """A path element of ``jax.tree_util`` as a name segment."""
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def flatten_pytree(tree: Any, sep: str = ".") -> tuple[list[tuple[str, Any]], Any]:
    """The array leaves of a pytree with their names, and its container structure.

    Args:
        tree: nested dicts / lists / tuples of arrays, an NNX ``State``, or any jax pytree.
        sep: the separator joining path segments.

    Returns:
        ``([(name, leaf), ...], structure)``: leaves in tree order; ``structure`` is a
        JSON-able skeleton (``{"dict": {...}}``, ``{"list": [...]}``, ``{"tuple": [...]}``,
        a leaf's name, ``None`` for a leaf left out) for plain trees, ``None`` for trees
        flattened by jax.

    Raises:
        InvalidNameError: two leaves get the same name, or a key is empty or holds ``sep``.

    Example:
        >>> import numpy as np
        >>> pairs, _ = flatten_pytree({"layers": [{"w": np.zeros(2)}], "b": np.ones(1)})
        >>> [n for n, _ in pairs]
        ['layers.0.w', 'b']
    """
    tree = _plain(tree)
    out: list[tuple[str, Any]] = []
    if _is_plain(tree):

        def walk(node: Any, path: tuple[str, ...]) -> Any:
            if isinstance(node, Mapping):
                return {
                    "dict": {str(k): walk(v, (*path, _segment(k, sep))) for k, v in node.items()}
                }
            if isinstance(node, (list, tuple)):
                kind = "tuple" if isinstance(node, tuple) else "list"
                return {kind: [walk(v, (*path, str(i))) for i, v in enumerate(node)]}
            if not _is_array(node):
                return None
            name = sep.join(path)
            out.append((name, node))
            return name

        structure = walk(tree, ())
    else:
        import jax

        structure = None
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if _is_array(leaf):
                out.append((sep.join(_segment(_key_text(k), sep) for k in path), leaf))
    seen: set[str] = set()
    for name, _ in out:
        if not name:
            raise InvalidNameError("pytree: a bare array is not a tree: wrap it in a dict")
        if name in seen:
            raise InvalidNameError(f"pytree: two leaves are both named {name!r}")
        seen.add(name)
    return out, structure


def _segment(key: Any, sep: str) -> str:
    text = str(key)
    if not text or sep in text:
        raise InvalidNameError(
            f"pytree key {key!r}: expected a non-empty key without the separator {sep!r}"
        )
    return text


def _to_torch(leaf: Any) -> torch.Tensor:
    """One array leaf as a CPU torch tensor, ml_dtypes types bit for bit."""
    import numpy as np
    import torch

    a = np.asarray(leaf)
    name = a.dtype.name
    if name in _ML_DTYPES:
        _, tname, view = _ML_DTYPES[name]
        a = np.ascontiguousarray(a).view(view)
        if not a.flags.writeable:
            a = a.copy()
        return torch.from_numpy(a).view(getattr(torch, tname))
    dtype_of(a.dtype)  # refuses what torch / safetensors cannot hold
    a = np.ascontiguousarray(a).reshape(a.shape)  # 0-d stays 0-d
    if not a.flags.writeable:
        a = a.copy()
    return torch.from_numpy(a)


def from_pytree(tree: Any, sep: str = ".") -> ParamDict:
    """A ParamDict of a pytree's array leaves, named by their paths.

    Args:
        tree: Flax ``params`` (nested dicts), ``nnx.state(model)``, a Haiku params dict,
            ``eqx.filter(model, eqx.is_array)``, or any jax pytree of arrays.
        sep: the separator joining path segments.

    Returns:
        A ParamDict of CPU tensors (copies); the same array object at several paths is one
        tie; ``metadata[PYTREE_KEY]`` keeps plain trees' structure for :func:`to_pytree`.

    Raises:
        InvalidNameError: two leaves with one name, an empty key, a key holding ``sep``.
        UnsupportedDTypeError: a leaf of a dtype torch cannot hold.

    Example:
        >>> import numpy as np
        >>> pd = from_pytree({"Dense_0": {"kernel": np.ones((3, 2), np.float32)}})
        >>> list(pd), tuple(pd["Dense_0.kernel"].shape)
        (['Dense_0.kernel'], (3, 2))
    """
    from ._paramdict import ParamDict

    pairs, structure = flatten_pytree(tree, sep)
    tensors: dict[int, Any] = {}
    named = []
    for name, leaf in pairs:
        key = id(leaf)
        if key not in tensors:
            tensors[key] = _to_torch(leaf)
        named.append((name, tensors[key]))
    meta = {PYTREE_KEY: json.dumps({"sep": sep, "tree": structure})} if structure else None
    return ParamDict(named, metadata=meta)


def _to_numpy(t: torch.Tensor) -> Any:
    import torch

    t = t.detach().cpu()
    tname = str(t.dtype).removeprefix("torch.")
    if tname in _TORCH_TO_ML:
        import ml_dtypes

        _, _, view = _ML_DTYPES[_TORCH_TO_ML[tname]]
        bits = t.contiguous().view(getattr(torch, view)).numpy()
        return bits.view(getattr(ml_dtypes, _TORCH_TO_ML[tname])).copy()
    return t.numpy().copy()


def to_pytree(pd: ParamDict, sep: str = ".", *, like: Any = None) -> Any:
    """A ParamDict as a pytree again (the inverse of :func:`from_pytree`).

    Args:
        pd: the ParamDict.
        sep: the separator its names were joined with.
        like: a tree of the wanted type and structure (an Equinox module, an NNX ``State``
            …); its array leaves are replaced by the entries of the same names, converted
            to its leaves' kind (jax arrays stay jax arrays). ``None``: plain containers.

    Returns:
        Without ``like``: nested dicts of numpy arrays (bfloat16 as ``ml_dtypes.bfloat16``),
        with the lists and tuples :func:`from_pytree` saw when ``pd`` came from it; tied
        names give the same array object. With ``like``: a tree like ``like``.

    Raises:
        InvalidNameError: an entry is also a prefix of another, or ``like`` has a leaf
            ``pd`` lacks.

    Example:
        >>> import numpy as np
        >>> tree = {"layers": [{"w": np.arange(3.0)}]}
        >>> back = to_pytree(from_pytree(tree))
        >>> type(back["layers"]).__name__, back["layers"][0]["w"].tolist()
        ('list', [0.0, 1.0, 2.0])
    """
    arrays: dict[int, Any] = {}

    def value(name: str) -> Any:
        t = pd[name]
        if id(t) not in arrays:
            arrays[id(t)] = _to_numpy(t)
        return arrays[id(t)]

    if like is not None:
        return _fill_like(like, pd, sep, value)
    raw = pd.metadata.get(PYTREE_KEY)
    if raw is not None:
        saved = json.loads(raw)
        if saved.get("sep") == sep and _names(saved["tree"]) == set(pd):
            return _build(saved["tree"], value)
    out: dict[str, Any] = {}
    for name in pd:
        node = out
        *parents, leaf = name.split(sep)
        for p in parents:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise InvalidNameError(f"to_pytree: entry {p!r} is also a prefix of {name!r}")
            node = nxt
        if leaf in node:
            raise InvalidNameError(f"to_pytree: entry {name!r} is also a prefix of others")
        node[leaf] = value(name)
    return out


def _names(structure: Any) -> set[str]:
    if isinstance(structure, str):
        return {structure}
    if isinstance(structure, dict):
        ((kind, inner),) = structure.items()
        kids = inner.values() if kind == "dict" else inner
        return set().union(*(_names(k) for k in kids)) if kids else set()
    return set()


def _build(structure: Any, value: Any) -> Any:
    if isinstance(structure, str):
        return value(structure)
    if structure is None:
        return None
    ((kind, inner),) = structure.items()
    if kind == "dict":
        return {k: _build(v, value) for k, v in inner.items() if v is not None}
    items = [_build(v, value) for v in inner]
    return tuple(items) if kind == "tuple" else items


def _fill_like(like: Any, pd: ParamDict, sep: str, value: Any) -> Any:
    import jax

    plain = _plain(like)
    pairs, _ = flatten_pytree(plain, sep)
    names = {id(leaf): name for name, leaf in pairs}
    missing_names = [n for n, _ in pairs if n not in pd]
    if missing_names:
        raise InvalidNameError(
            f"to_pytree: like= has leaves the ParamDict lacks: {', '.join(missing_names[:5])}"
        )

    def swap(leaf: Any) -> Any:
        name = names.get(id(leaf))
        if name is None:
            return leaf
        arr = value(name)
        if isinstance(leaf, jax.Array):
            return jax.numpy.asarray(arr)
        return arr

    if plain is not like:  # an NNX State: rebuild its pure dict, then put it back
        filled = jax.tree_util.tree_map(swap, plain)
        out = jax.tree_util.tree_map(lambda x: x, like)
        from flax import nnx

        if hasattr(nnx, "replace_by_pure_dict"):
            nnx.replace_by_pure_dict(out, filled)
        else:
            out.replace_by_pure_dict(filled)
        return out
    return jax.tree_util.tree_map(swap, like)


def pytree_manifest(tree: Any, sep: str = ".") -> Manifest:
    """A pytree's manifest from its leaves' shapes and dtypes, no value copied, no torch.

    Args:
        tree: as for :func:`from_pytree`.
        sep: the separator joining path segments.

    Returns:
        A :class:`Manifest` (roles inferred); the same array object at several paths is one
        stored entry and ties naming it.

    Example:
        >>> import numpy as np
        >>> w = np.zeros((4, 3), np.float32)
        >>> m = pytree_manifest({"wte": w, "head": w, "b": np.zeros(3)})
        >>> [(e.name, e.tie) for e in m.values()]
        [('wte', None), ('head', 'wte'), ('b', None)]
    """
    pairs, _ = flatten_pytree(tree, sep)
    first: dict[int, str] = {}
    entries = []
    for name, leaf in pairs:
        shape = tuple(int(d) for d in leaf.shape)
        dtype = dtype_of(leaf.dtype, f"pytree leaf {name!r}")
        role = role_of(name, dtype, shape, sep)
        tie = first.setdefault(id(leaf), name)
        entries.append(
            Entry(
                name,
                shape,
                dtype,
                role=role,
                trainable=role.value == "param",
                tie=None if tie == name else tie,
            )
        )
    return Manifest(entries, format=Format.PARAMDICT, source="pytree", roles=RoleSource.INFERRED)
