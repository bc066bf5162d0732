"""A live ``torch.nn.Module`` by object identity: owners, ties, and its :class:`Manifest`.

What the rooms above share about a module's tree lives here, one floor below them all:
counting counts a module's manifest, lifecycle ties and freezes on it, TARGET resolution
turns a built model into a manifest. Identity is object identity (never ``data_ptr``, which
is 0 for every tensor on the meta device), so everything here works on meta models.

:func:`scan_module` visits every path to every module (``_modules`` directly, so shared
instances are seen under each path) and every tensor registered on each module
(``_parameters`` and ``_buffers`` directly, so parameters on containers and in
``ParameterList`` / ``ParameterDict`` count). It never runs ``forward`` and never reads tensor
values except to count the nonzeros of pruned weights on a real device. The cases:

* **ties and shared modules** — a parameter or module reachable by several paths is counted
  once, under its first path; later paths are aliases (``shared with …``);
* **lazy modules** — ``UninitializedParameter`` / ``UninitializedBuffer`` are listed as
  uninitialised and left out of the counts (their shape is unknown until the first forward);
* **pruned modules** (``torch.nn.utils.prune``) — ``weight_orig`` is the logical parameter
  (its full count), ``weight_mask`` a buffer; the nonzero count of ``weight_orig × mask`` is
  reported apart;
* **packed / quantised weights** — modules whose weights live outside ``_parameters`` (torch's
  dynamically quantised ``Linear``) are counted by their logical shapes through
  :func:`register_packed`, a documented hook for other packed formats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._dtypes import DType
from ._enums import Format, Role, RoleSource
from ._manifest import Entry, Manifest
from ._names import missing

if TYPE_CHECKING:
    import torch

__all__ = [
    "ModuleScan",
    "PackedEntry",
    "find_ties",
    "owner",
    "register_packed",
    "scan_module",
]

PackedEntry = tuple[str, tuple[int, ...], DType]
"""``(local name, logical shape, dtype)`` of one packed weight."""

_PACKED: dict[str, Callable[[Any], list[PackedEntry]]] = {}


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_packed(cls: type | str, fn: Callable[[Any], list[PackedEntry]]) -> None:
    """Teach the counter a module type whose weights are packed outside ``_parameters``.

    ``fn(module)`` returns the module's logical tensors as ``(local name, shape, dtype)``;
    they are counted as frozen parameters tagged ``packed``. The class may be given by its
    qualified name (``"bitsandbytes.nn.modules.Linear4bit"``) so that no import is needed.

    Args:
        cls: the module class or its ``module.QualName``.
        fn: the function giving the logical tensors of an instance.

    Example:
        >>> from paramscope import DType
        >>> register_packed("mylib.PackedLinear",
        ...                 lambda m: [("weight", (m.out_features, m.in_features), DType.I8)])
    """
    _PACKED[cls if isinstance(cls, str) else _qualname(cls)] = fn


def _quantized_linear(m: Any) -> list[PackedEntry]:
    import torch

    out: list[PackedEntry] = [("weight", (m.out_features, m.in_features), DType.I8)]
    bias = None
    try:
        bias = m.bias()
    except (RuntimeError, AttributeError, NotImplementedError):
        bias = None
    if isinstance(bias, torch.Tensor):
        out.append(("bias", (m.out_features,), DType.F32))
    return out


for _name in (
    "torch.ao.nn.quantized.dynamic.modules.linear.Linear",
    "torch.ao.nn.quantized.modules.linear.Linear",
):
    register_packed(_name, _quantized_linear)


@dataclass
class ModuleScan:
    """What a walk over a module found.

    Attributes:
        entries: parameters and buffers (first paths stored, later paths as ties), packed
            logical weights included.
        kinds: module path → type name, for every path (``""`` is the root).
        shared: module path → the first path of the same instance, for later paths.
        uninitialized: names of lazy (uninitialised) parameters and buffers, not counted.
        pruned: pruned parameter name → ``{"params", "nonzero"}`` (nonzero ``None`` on meta).
        packed: names of packed entries counted by their logical shape.
        modules: module path → the module instance.
        origin: notes on how the model was built (a ``_paramscope_notes`` list the TARGET
            resolver attaches: which class, which dtype and where they came from).
    """

    entries: list[Entry] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    shared: dict[str, str] = field(default_factory=dict)
    uninitialized: list[str] = field(default_factory=list)
    pruned: dict[str, dict[str, int | None]] = field(default_factory=dict)
    packed: list[str] = field(default_factory=list)
    modules: dict[str, Any] = field(default_factory=dict)
    origin: list[str] = field(default_factory=list)

    def manifest(self) -> Manifest:
        """The entries as a :class:`Manifest` (format ``module``, exact roles), with notes.

        Returns:
            The manifest.
        """
        from ._moe import moe_config_of_module  # the model's own config gives its top-k

        root = self.modules.get("")
        return Manifest(
            self.entries,
            format=Format.MODULE,
            roles=RoleSource.EXACT,
            notes=self.notes(),
            moe=None if root is None else moe_config_of_module(root),
        )

    def notes(self) -> list[str]:
        """What the counts include or leave out, in words.

        Returns:
            One line per special case met.
        """
        notes = list(self.origin)
        if self.uninitialized:
            shown = ", ".join(self.uninitialized[:3]) + (
                " …" if len(self.uninitialized) > 3 else ""
            )
            notes.append(
                f"{len(self.uninitialized)} uninitialised lazy tensors ({shown}) are not counted: "
                "their shapes are known only after the first forward"
            )
        if self.pruned:
            notes.append(
                f"{len(self.pruned)} pruned tensors counted at their logical size (*_orig); "
                "their masks are buffers; nonzeros are listed apart"
            )
        if self.packed:
            notes.append(
                f"{len(self.packed)} packed (quantised) tensors counted by logical shape, "
                "not storage elements"
            )
        if self.shared:
            notes.append(
                f"{len(self.shared)} module paths share an instance with an earlier path "
                "and are counted once"
            )
        return notes


def _is_uninitialized(t: Any) -> bool:
    from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

    return isinstance(t, (UninitializedParameter, UninitializedBuffer))


def scan_module(model: torch.nn.Module) -> ModuleScan:
    """Walk every path of a module and record what :mod:`this module's docstring <paramscope>`
    describes.

    Args:
        model: any module, on any device (``meta`` included).

    Returns:
        A :class:`ModuleScan`.

    Example:
        >>> import torch
        >>> s = scan_module(torch.nn.Sequential(torch.nn.Linear(3, 2)))
        >>> [e.name for e in s.entries], s.kinds["0"]
        (['0.weight', '0.bias'], 'Linear')
    """
    scan = ModuleScan(origin=[str(n) for n in getattr(model, "_paramscope_notes", [])])
    first_module: dict[int, str] = {}
    first_tensor: dict[Any, str] = {}

    def visit(mod: Any, path: str) -> None:
        scan.kinds[path] = type(mod).__name__
        if id(mod) in first_module:
            scan.shared[path] = first_module[id(mod)]
        else:
            first_module[id(mod)] = path
            scan.modules[path] = mod
        pre = f"{path}." if path else ""
        _tensors(mod, pre, scan, first_tensor)
        for child_name, child in mod._modules.items():
            if child is not None:
                visit(child, pre + child_name)

    visit(model, "")
    return scan


def _tensors(mod: Any, pre: str, scan: ModuleScan, first: dict[Any, str]) -> None:
    packer = _PACKED.get(_qualname(type(mod)))
    if packer is not None:
        for local, shape, dtype in packer(mod):
            name = pre + local
            key = (id(mod), local)  # a shared packed module is counted once too
            tie = first.get(key)
            if tie is None:
                first[key] = name
                scan.packed.append(name)
            scan.entries.append(
                Entry(
                    name,
                    tuple(shape),
                    dtype,
                    role=Role.PARAM,
                    trainable=False,
                    tie=tie,
                    tags=("packed",),
                )
            )
    non_persistent = getattr(mod, "_non_persistent_buffers_set", set())
    for kind, table in ((Role.PARAM, mod._parameters), (Role.BUFFER, mod._buffers)):
        for local, t in table.items():
            if t is None:
                continue
            name = pre + local
            if _is_uninitialized(t):
                if id(t) not in first:
                    first[id(t)] = name
                    scan.uninitialized.append(name)
                continue
            tie = first.get(id(t))
            if tie is None:
                first[id(t)] = name
            extra: dict[str, Any] = {}
            if kind is Role.BUFFER and local in non_persistent:
                extra["persistent"] = False
            trainable = bool(t.requires_grad) if kind is Role.PARAM else False
            scan.entries.append(
                Entry(
                    name,
                    tuple(t.shape),
                    DType.from_torch(t.dtype),
                    role=kind,
                    trainable=trainable,
                    tie=tie,
                    extra=extra,
                )
            )
            if kind is Role.PARAM and local.endswith("_orig") and tie is None:
                mask = mod._buffers.get(local[: -len("_orig")] + "_mask")
                if mask is not None:
                    nz = None
                    if t.device.type != "meta":
                        import torch

                        with torch.no_grad():
                            nz = int(torch.count_nonzero(t * mask))
                    scan.pruned[name] = {"params": t.numel(), "nonzero": nz}


def owner(model: torch.nn.Module, name: str) -> tuple[Any, str]:
    """The module that registers ``name`` and the local attribute name.

    Args:
        model: the root module.
        name: a dotted parameter or buffer name.

    Returns:
        ``(module, local name)``.

    Raises:
        MissingNameError: no parameter or buffer of that name.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> owner(m, "0.weight")[1]
        'weight'
    """
    prefix, _, local = name.rpartition(".")
    try:
        mod = model.get_submodule(prefix) if prefix else model
    except AttributeError:
        mod = None
    if mod is None or (local not in mod._parameters and local not in mod._buffers):
        names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
        names += [n for n, _ in model.named_buffers(remove_duplicate=False)]
        raise missing(name, names, what="parameter or buffer")
    return mod, local


def find_ties(model: torch.nn.Module) -> list[list[str]]:
    """Groups of names that reach the same parameter or buffer object, first path first.

    Args:
        model: any module (meta included).

    Returns:
        One list per tie group.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(3, 3)
        >>> find_ties(torch.nn.Sequential(lin, lin))
        [['0.weight', '1.weight'], ['0.bias', '1.bias']]
    """
    groups: dict[int, list[str]] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        pre = f"{mod_name}." if mod_name else ""
        for table in (mod._parameters, mod._buffers):
            for local, t in table.items():
                if t is not None:
                    group = groups.setdefault(id(t), [])
                    if pre + local not in group:
                        group.append(pre + local)
    return [g for g in groups.values() if len(g) > 1]
