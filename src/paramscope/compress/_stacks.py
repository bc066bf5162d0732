"""Block stacks: the repeated blocks of a model, as shrink(unit="layers"), subnet, student see them.

A stack is an ``nn.ModuleList`` / ``nn.Sequential`` of at least two blocks of one class (each
with children of its own). :func:`find_stacks` keeps those whose blocks have the same
parameter and buffer names and shapes (:func:`block_signature`), outermost only. Whether the
owner runs the blocks one after another is read from its forward (:func:`runs_in_order`) or
seen by hooks on example inputs (:func:`observe_blocks`). Removing blocks
(:func:`remove_blocks`) renumbers the kept ones (:func:`renumbering`), makes their
``layer_idx`` / ``layer_id`` follow, and updates the config objects whose layer count was the
stack's length (:func:`set_layer_count`, :data:`LAYER_COUNT_KEYS`, :func:`set_config`).

:func:`tensor_norm` and :func:`call_importance` score units (blocks, heads) as ``shrink`` and
``subnet`` rank them. Torch is imported inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._errors import ArgumentError
from .._outputs import call_model, first_tensor

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ._shrink_report import ShrinkReport

__all__ = [
    "INDEX_ATTRS",
    "LAYER_COUNT_KEYS",
    "BlockStack",
    "block_signature",
    "call_importance",
    "configs",
    "find_stacks",
    "observe_blocks",
    "param_count",
    "reindex",
    "remove_blocks",
    "renumbering",
    "runs_in_order",
    "set_config",
    "set_layer_count",
    "source_text",
    "tensor_norm",
]

#: Config fields that count the layers of a stack.
LAYER_COUNT_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers")


class BlockStack(NamedTuple):
    """A stack of identical blocks: its dotted ``name`` (``""`` for the model itself), the
    ``stack`` module, and the ``owner`` module holding it as ``owner.<attr>`` (``None`` and
    ``""`` for the model itself)."""

    name: str
    stack: Any
    owner: Any
    attr: str


# ---------------------------------------------------------------------------------- finding
def param_count(model: nn.Module) -> int:
    """The model's parameters, tied ones counted once.

    Args:
        model: any module.

    Returns:
        ``sum(p.numel())`` over the distinct parameter objects.

    Example:
        >>> from torch import nn
        >>> lin = nn.Linear(3, 2)
        >>> param_count(nn.Sequential(lin, lin))
        8
    """
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def source_text(fn: Any) -> str:
    """The source of a function (unwrapped), or ``""`` when it cannot be read.

    Args:
        fn: a function or method (decorators are unwrapped).

    Returns:
        Its source text; ``""`` for builtins and code defined without a file.

    Example:
        >>> from torch import nn
        >>> "for module in self" in source_text(nn.Sequential.forward)
        True
        >>> source_text(len)
        ''
    """
    try:
        return inspect.getsource(inspect.unwrap(fn))
    except (OSError, TypeError):
        return ""


def block_signature(mod: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The names and shapes of a block's parameters and buffers (its state dict).

    Args:
        mod: a module.

    Returns:
        ``((name, shape), ...)`` in state-dict order; blocks of one stack are identical when
        their signatures are equal.

    Example:
        >>> from torch import nn
        >>> block_signature(nn.Linear(3, 2))
        (('weight', (2, 3)), ('bias', (2,)))
    """
    return tuple((n, tuple(t.shape)) for n, t in mod.state_dict(keep_vars=True).items())


def find_stacks(model: nn.Module) -> tuple[list[BlockStack], list[tuple[str, str]]]:
    """Every stack of identical blocks in the model (outermost only), and the refused ones.

    Args:
        model: the model to search.

    Returns:
        ``(stacks, refused)``: a :class:`BlockStack` for every ``nn.ModuleList`` /
        ``nn.Sequential`` of two or more blocks of one class with equal
        :func:`block_signature`; and ``(name, reason)`` for each stack of one block class
        whose blocks differ in their parameters. Lists of leaf layers (a pipeline such as
        ``Sequential(Linear, ReLU)``) are neither.

    Example:
        >>> from torch import nn
        >>> enc = nn.TransformerEncoder(
        ...     nn.TransformerEncoderLayer(8, 2), 3, enable_nested_tensor=False)
        >>> found, refused = find_stacks(enc)
        >>> [(s.name, len(s.stack), s.owner is enc, s.attr) for s in found], refused
        ([('layers', 3, True, 'layers')], [])
    """
    from torch import nn

    found: list[BlockStack] = []
    refused: list[tuple[str, str]] = []
    owners: dict[int, tuple[Any, str]] = {}
    for _, parent in model.named_modules():
        for attr, child in parent._modules.items():
            if child is not None:
                owners.setdefault(id(child), (parent, attr))
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList | nn.Sequential) or len(mod) < 2:
            continue
        if any(name.startswith(f.name + ".") or not f.name for f in found):
            continue
        blocks = list(mod)
        if len({type(b) for b in blocks}) != 1 or not any(True for _ in blocks[0].children()):
            continue  # layers of a pipeline, not a stack of blocks
        sigs = [block_signature(b) for b in blocks]
        if any(s != sigs[0] for s in sigs):
            odd = next(i for i, s in enumerate(sigs) if s != sigs[0])
            refused.append(
                (
                    name,
                    f"{name or 'the stack'}.{odd} has other parameters than "
                    f"{name or 'the stack'}.0; only identical blocks can go",
                )
            )
            continue
        owner, attr = owners.get(id(mod), (None, ""))
        found.append(BlockStack(name, mod, owner, attr))
    return found, refused


def runs_in_order(owner: Any, attr: str, stack: Any) -> bool:
    """Whether the owner's forward visibly runs the stack's blocks in order (read from its
    source: ``for … in self.<attr>``, or ``self.<attr>(…)`` of an ``nn.Sequential``).

    Args:
        owner: the module holding the stack (``None``: the stack is the model).
        attr: the stack's attribute name on ``owner``.
        stack: the ``nn.ModuleList`` / ``nn.Sequential``.

    Returns:
        ``True`` when the forward runs the blocks one after another; ``False`` when that
        cannot be read (then hooks on example inputs, :func:`observe_blocks`, can tell).

    Example:
        >>> from torch import nn
        >>> enc = nn.TransformerEncoder(
        ...     nn.TransformerEncoderLayer(8, 2), 2, enable_nested_tensor=False)
        >>> runs_in_order(enc, "layers", enc.layers)
        True
        >>> runs_in_order(None, "", nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)]))
        False
    """
    from torch import nn

    if owner is None:
        return isinstance(stack, nn.Sequential)
    if isinstance(owner, nn.Sequential):
        return True
    src = source_text(type(owner).forward)
    a = re.escape(attr)
    if re.search(rf"for\s+[^\n]+\s+in\s+[^\n]*self\.{a}\b", src):
        return True
    return isinstance(stack, nn.Sequential) and re.search(rf"self\.{a}\(", src) is not None


def observe_blocks(
    model: nn.Module, stacks: Sequence[Any], inputs: Any, importance: str
) -> dict[int, tuple[list[int], list[float], list[bool]]]:
    """Run the model once (eval mode, no grad; modes restored) with hooks on the blocks.

    Args:
        model: the model.
        stacks: the stack modules to watch.
        inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        importance: ``"l1"`` measures changes in the L1 norm, anything else in L2.

    Returns:
        Per ``id(stack)``: ``(order, change, same)``: the block indices in the order they
        ran, each block's relative change ``||f(x) - x|| / ||x||`` (summed over calls), and
        whether each returned a tensor of its input's shape.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Identity(), nn.Linear(4, 4), nn.Linear(4, 2))
        >>> order, change, same = observe_blocks(net, [net], torch.ones(1, 4), "l2")[id(net)]
        >>> order, change[0], same
        ([0, 1, 2], 0.0, [True, True, False])
    """
    import torch

    calls: dict[int, tuple[list[int], list[float], list[bool]]] = {
        id(s): ([], [0.0] * len(s), [True] * len(s)) for s in stacks
    }
    hooks = []

    def hook(stack_id: int, i: int) -> Callable[..., None]:
        def fn(_m: Any, args: tuple, kwargs: dict, out: Any) -> None:
            x = first_tensor(list(args) + list(kwargs.values()))
            y = first_tensor(out)
            order, change, same = calls[stack_id]
            order.append(i)
            if x is None or y is None or x.shape != y.shape:
                same[i] = False
                return
            p = 1 if importance == "l1" else 2
            d = torch.linalg.vector_norm((y - x).double(), ord=p)
            nx = torch.linalg.vector_norm(x.double(), ord=p)
            change[i] += float(d / nx) if float(nx) else float(d)

        return fn

    for s in stacks:
        for i, b in enumerate(s):
            hooks.append(b.register_forward_hook(hook(id(s), i), with_kwargs=True))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            call_model(model, inputs)
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes:
            m.training = training
    return calls


# ---------------------------------------------------------------------------------- scoring
def tensor_norm(tensors: list[torch.Tensor], importance: str) -> float:
    """The joint norm of some tensors, in float64.

    Args:
        tensors: the tensors (a unit's weight slices, a block's parameters).
        importance: ``"l1"`` (sum of absolute values) or ``"l2"`` (anything else).

    Returns:
        The norm as a float.

    Example:
        >>> import torch
        >>> tensor_norm([torch.tensor([3.0]), torch.tensor([-4.0])], "l1")
        7.0
        >>> tensor_norm([torch.tensor([3.0]), torch.tensor([-4.0])], "l2")
        5.0
    """
    import torch

    if importance == "l1":
        return float(sum(float(t.detach().abs().sum(dtype=torch.float64)) for t in tensors))
    sq = sum(float(t.detach().double().pow(2).sum()) for t in tensors)
    return math.sqrt(sq)


def call_importance(fn: Callable[..., Any], name: str, index: int, tensors: dict) -> float:
    """A user's importance callable's score of one unit, as a float.

    Args:
        fn: called as ``fn(name, index, tensors)``.
        name: the group's name (a stack, an attention module).
        index: the unit's index in it.
        tensors: the unit's tensors by name.

    Returns:
        ``float(fn(name, index, tensors))``.

    Raises:
        ArgumentError: the callable returned something that is not a number.

    Example:
        >>> call_importance(lambda name, i, t: i * 2, "model.layers", 3, {})
        6.0
    """
    value = fn(name, index, tensors)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ArgumentError(
            f"importance: {name!r} unit {index}: expected the callable to return a number, "
            f"found {type(value).__name__}"
        ) from None


# ---------------------------------------------------------------------------------- configs
def configs(model: nn.Module) -> list[Any]:
    """The distinct ``config`` objects held by the model's modules (as ``module.config``).

    Args:
        model: the model.

    Returns:
        Each config object once, in module order.

    Example:
        >>> from types import SimpleNamespace
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> net.config = net[1].config = SimpleNamespace(num_layers=2)
        >>> configs(net)
        [namespace(num_layers=2)]
    """
    seen: dict[int, Any] = {}
    for _, mod in model.named_modules(remove_duplicate=False):
        c = mod.__dict__.get("config")
        if c is not None:
            seen.setdefault(id(c), c)
    return list(seen.values())


def set_config(
    model: nn.Module, values: dict[str, Any], want: Callable[[Any], bool], report: ShrinkReport
) -> None:
    """Set ``values`` on every distinct ``config`` object of the model that ``want``s them
    (in place; a frozen dataclass is replaced on every module holding it).

    Args:
        model: the model whose modules hold the configs.
        values: field → new value; fields a config lacks are left out for it.
        want: which configs to change.
        report: gets a note per config changed (or refusing a frozen ``replace``).

    Returns:
        ``None``.

    Example:
        >>> from types import SimpleNamespace
        >>> from torch import nn
        >>> from paramscope.compress._shrink_report import ShrinkReport
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> net.config = SimpleNamespace(num_layers=4)
        >>> r = ShrinkReport("layers", 0.5, None, "l1")
        >>> set_config(net, {"num_layers": 2, "n_layer": 2}, lambda c: True, r)
        >>> net.config.num_layers, r.notes
        (2, ['config SimpleNamespace updated: num_layers=2'])
    """
    seen: dict[int, Any] = {}
    for _, mod in model.named_modules(remove_duplicate=False):
        c = mod.__dict__.get("config")
        if c is not None and id(c) not in seen and want(c):
            seen[id(c)] = c
    for old in seen.values():
        fields = {k: v for k, v in values.items() if hasattr(old, k)}
        params = getattr(type(old), "__dataclass_params__", None)
        if dataclasses.is_dataclass(old) and params is not None and params.frozen:
            try:
                new = dataclasses.replace(old, **fields)
            except Exception as exc:  # a config that validates itself and says no
                report.notes.append(f"config {type(old).__name__} not updated: {exc}")
                continue
            for _, mod in model.named_modules(remove_duplicate=False):
                if mod.__dict__.get("config") is old:
                    mod.config = new
        else:
            for k, v in fields.items():
                setattr(old, k, v)
        report.notes.append(
            f"config {type(old).__name__} updated: "
            + ", ".join(f"{k}={v}" for k, v in fields.items())
        )


def set_layer_count(
    model: nn.Module, old_len: int, new_len: int, removed: list[int], report: ShrinkReport
) -> None:
    """Update the configs whose layer count (:data:`LAYER_COUNT_KEYS`) is ``old_len``: those
    fields become ``new_len`` and a ``layer_types`` of ``old_len`` entries loses the removed.

    Args:
        model: the model whose modules hold the configs.
        old_len: the stack's length before the removal.
        new_len: its length after.
        removed: the removed block indices.
        report: gets a note per config changed.

    Returns:
        ``None``.

    Example:
        >>> from types import SimpleNamespace
        >>> from torch import nn
        >>> from paramscope.compress._shrink_report import ShrinkReport
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> net.config = SimpleNamespace(n_layer=3, layer_types=["a", "b", "c"])
        >>> set_layer_count(net, 3, 2, [1], ShrinkReport("layers", None, 1, "l1"))
        >>> net.config
        namespace(n_layer=2, layer_types=['a', 'c'])
    """

    def counts(c: Any) -> bool:
        return any(getattr(c, k, None) == old_len for k in LAYER_COUNT_KEYS)

    seen: dict[int, Any] = {}
    for _, mod in model.named_modules(remove_duplicate=False):
        c = mod.__dict__.get("config")
        if c is not None and counts(c):
            seen.setdefault(id(c), c)
    for c in seen.values():
        values: dict[str, Any] = {
            k: new_len for k in LAYER_COUNT_KEYS if getattr(c, k, None) == old_len
        }
        types = getattr(c, "layer_types", None)
        if isinstance(types, list | tuple) and len(types) == old_len:
            values["layer_types"] = type(types)(t for i, t in enumerate(types) if i not in removed)
        set_config(model, values, lambda x, c=c: x is c, report)


# ---------------------------------------------------------------------------------- removing
def renumbering(keys: list[str]) -> Callable[[int], str] | None:
    """How the kept blocks of a stack are named after a removal.

    Args:
        keys: the stack's child names (``stack._modules``), in order.

    Returns:
        ``pos -> key`` when the keys are ``0, 1, …`` or ``prefix_0, prefix_1, …`` (renumbered
        from 0); ``None`` when they are other names (kept as they are).

    Example:
        >>> renumbering(["block_0", "block_1", "block_2"])(1)
        'block_1'
        >>> renumbering(["a", "b"]) is None
        True
    """
    m = [re.fullmatch(r"(.*?)(\d+)", k) for k in keys]
    if not all(m):
        return None
    prefixes = {x.group(1) for x in m if x}
    if len(prefixes) != 1 or [int(x.group(2)) for x in m if x] != list(range(len(keys))):
        return None
    prefix = prefixes.pop()
    return lambda i: f"{prefix}{i}"


#: the attributes a block (or a module in it) keeps its position in, e.g. transformers' layers
INDEX_ATTRS = ("layer_idx", "layer_id")


def reindex(block: Any, old: int, new: int) -> None:
    """A block moved from position ``old`` to ``new`` of its stack: its modules' index
    attributes (:data:`INDEX_ATTRS`) that held ``old`` now hold ``new``, as transformers'
    layers, which index their KV cache by it, expect.

    Args:
        block: the block.
        old: its position before.
        new: its position now.

    Returns:
        ``None``.

    Example:
        >>> from torch import nn
        >>> b = nn.Linear(2, 2)
        >>> b.layer_idx = 4
        >>> reindex(b, 4, 1)
        >>> b.layer_idx
        1
    """
    if old == new:
        return
    for m in block.modules():
        for attr in INDEX_ATTRS:
            if m.__dict__.get(attr) == old:
                setattr(m, attr, new)


def remove_blocks(
    model: nn.Module, name: str, stack: Any, remove: set[int], report: ShrinkReport
) -> None:
    """Remove whole blocks from a stack, in place: the kept ones are renumbered
    (:func:`renumbering`), their ``layer_idx`` / ``layer_id`` follow, and configs counting
    the stack's layers are updated (:func:`set_layer_count`).

    Args:
        model: the model holding the stack (for parameter counts and configs).
        name: the stack's dotted name (``""`` for the model itself).
        stack: the ``nn.ModuleList`` / ``nn.Sequential``.
        remove: the indices of the blocks to remove.
        report: gets a group (``name``, ``kept``, ``removed``, ``total``,
            ``params_removed``, ``buffers_removed``, ``members``, ``units``) and the notes.

    Returns:
        ``None``.

    Example:
        >>> from torch import nn
        >>> from paramscope.compress._shrink_report import ShrinkReport
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
        >>> r = ShrinkReport("layers", None, None, "l1")
        >>> remove_blocks(net, "", net, {1}, r)
        >>> len(net), r.groups[0]["params_removed"], r.groups[0]["members"]
        (2, 6, ['1.weight', '1.bias'])
    """
    keys = list(stack._modules)
    old_len = len(keys)
    before_p = param_count(model)
    before_b = sum(b.numel() for b in model.buffers())
    members = []
    for i in sorted(remove):
        prefix = f"{name}.{keys[i]}" if name else keys[i]
        members.extend(f"{prefix}.{n}" for n in stack._modules[keys[i]].state_dict())
    kept = [(k, stack._modules[k]) for i, k in enumerate(keys) if i not in remove]
    renumber = renumbering(keys)
    new: OrderedDict[str, Any] = OrderedDict()
    for pos, (k, b) in enumerate(kept):
        new[renumber(pos) if renumber else k] = b
        reindex(b, keys.index(k), pos)
    stack._modules = new
    after_p = param_count(model)
    after_b = sum(b.numel() for b in model.buffers())
    report.groups.append(
        {
            "name": name,
            "kept": len(kept),
            "removed": len(remove),
            "total": old_len,
            "params_removed": before_p - after_p,
            "buffers_removed": before_b - after_b,
            "members": members,
            "units": sorted(remove),
        }
    )
    set_layer_count(model, old_len, len(kept), sorted(remove), report)
