"""Planning and filling for :func:`paramscope.lifecycle._init.init`.

What to fill (one :class:`_Item` per stored tensor, with every name it is reached by), which
rule takes it (first match wins), a dry run of built-in schemes on the meta device so bad
arguments fail before any write, filling through a CPU scratch tensor from one seeded
generator, ``reset_parameters()`` on a forked and seeded global RNG for ``default``, and the
materialisation of meta models (``to_empty``, re-tying what it untied, module defaults for
buffers) and of meta ParamDict entries.

Example:
    >>> import torch
    >>> items = _module_items(torch.nn.Linear(2, 3))
    >>> [it.names for it in items]
    [['weight'], ['bias']]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import ParamscopeError
from ._init_rules import _err, _Rule

if TYPE_CHECKING:
    import torch

    from .._paramdict import ParamDict


# ------------------------------------------------------------------------------ targets


@dataclass
class _Item:
    names: list[str]
    tensor: Any
    owners: list[Any]  # the module directly owning each name (None for a ParamDict)
    buffer: bool = False
    rule: _Rule | None = None
    owner: Any = None  # the owner of the name the rule matched


def _module_items(model: torch.nn.Module) -> list[_Item]:
    items: dict[int, _Item] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        pre = f"{mod_name}." if mod_name else ""
        for leaf, p in mod._parameters.items():
            if p is None:
                continue
            item = items.get(id(p))
            if item is None:
                items[id(p)] = _Item([pre + leaf], p, [mod])
            elif pre + leaf not in item.names:
                item.names.append(pre + leaf)
                item.owners.append(mod)
    return list(items.values())


def _dict_items(pd: ParamDict) -> list[_Item]:
    from .._enums import Role

    items: dict[int, _Item] = {}
    for name in pd:
        t = pd[name]
        item = items.get(id(t))
        if item is None:
            items[id(t)] = _Item([name], t, [None], buffer=pd.meta(name).role is Role.BUFFER)
        else:
            item.names.append(name)
            item.owners.append(None)
    return list(items.values())


def _match(rule: _Rule, item: _Item) -> int:
    for k, name in enumerate(item.names):
        if item.buffer:
            if rule.exact == name:
                return k
        elif rule.kind == "pattern":
            if rule.match is not None and rule.match(name):
                return k
        elif rule.kind == "type":
            if rule.owner_matches(item.owners[k]):
                return k
        elif rule.predicate is not None and rule.predicate(name, item.tensor):
            return k
    return -1


def _plan(items: list[_Item], rules: list[_Rule], is_dict: bool) -> None:
    import torch

    for item in items:
        for rule in rules:
            k = _match(rule, item)
            if k < 0:
                continue
            item.rule, item.owner = rule, item.owners[k]
            rule.used = True
            name = item.names[0]
            if isinstance(item.tensor, torch.nn.parameter.UninitializedParameter):
                raise _err(
                    rule.index,
                    rule.text,
                    f"parameter {name!r} is lazy (uninitialised); run a forward pass first",
                )
            if rule.scheme.is_default:
                if is_dict:
                    raise _err(
                        rule.index,
                        rule.text,
                        f"'default' calls the owning module's reset_parameters(), but entry "
                        f"{name!r} is in a ParamDict, which has no modules; name an explicit "
                        "scheme such as 'normal(std=0.02)'",
                    )
                if not callable(getattr(item.owner, "reset_parameters", None)):
                    raise _err(
                        rule.index,
                        rule.text,
                        f"'default' needs reset_parameters() on the module owning {name!r}, but "
                        f"{type(item.owner).__name__} has none; name an explicit scheme",
                    )
            break


# ------------------------------------------------------------------------------ filling


def _scratch_dtype(dtype: torch.dtype) -> torch.dtype:
    import torch

    if dtype.is_floating_point and dtype.itemsize < 4:
        return torch.float32
    return dtype


def _dry_run(items: list[_Item]) -> None:
    """Run built-in schemes on meta tensors of each shape, so bad args fail before any write."""
    import torch

    seen: set[tuple[int, tuple[int, ...], torch.dtype]] = set()
    for item in items:
        rule = item.rule
        if rule is None or not rule.scheme.checkable or rule.scheme.is_default:
            continue
        shape = tuple(item.tensor.shape)
        dtype = _scratch_dtype(item.tensor.dtype)
        if (rule.index, shape, dtype) in seen:
            continue
        seen.add((rule.index, shape, dtype))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rule.scheme(torch.empty(shape, dtype=dtype, device="meta"), None)
        except Exception as exc:
            raise _err(
                rule.index,
                rule.text,
                f"cannot initialise {item.names[0]!r} of shape {shape}, dtype {item.tensor.dtype}:"
                f" {exc}",
            ) from None


def _fill(item: _Item, g: torch.Generator) -> None:
    import torch

    t, rule = item.tensor, item.rule
    assert rule is not None
    if t.numel() == 0:
        return
    dtype = _scratch_dtype(t.dtype)
    try:
        if t.device.type == "cpu" and dtype == t.dtype:
            rule.scheme(t, g)
        else:
            scratch = torch.empty(t.shape, dtype=dtype)
            rule.scheme(scratch, g)
            t.copy_(scratch)
    except ParamscopeError:
        raise
    except Exception as exc:
        raise _err(
            rule.index,
            rule.text,
            f"failed on {item.names[0]!r} of shape {tuple(t.shape)}: {type(exc).__name__}: {exc}",
        ) from exc


def _draw_seed(g: torch.Generator) -> int:
    import torch

    return int(torch.randint(0, 2**62, (1,), generator=g))


@contextmanager
def _seeded_global_rng(seed: int, tensors: Iterable[torch.Tensor]) -> Iterator[None]:
    """Fork the global RNGs of the CPU and of the devices ``tensors`` live on, seeded."""
    import torch

    devices: dict[str, set[int]] = {}
    for t in tensors:
        if t.device.type not in ("cpu", "meta"):
            devices.setdefault(t.device.type, set()).add(t.device.index or 0)
    with ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[]))
        torch.random.default_generator.manual_seed(seed)
        for dtype_name, idx in devices.items():
            stack.enter_context(torch.random.fork_rng(devices=sorted(idx), device_type=dtype_name))
            backend = getattr(torch, dtype_name, None)
            for i in sorted(idx):
                if backend is not None and hasattr(backend, "device"):
                    with backend.device(i):
                        backend.manual_seed(seed)
        yield


def _run_defaults(item: _Item, items: list[_Item], done: set[int], g: torch.Generator) -> None:
    """``reset_parameters()`` of the owner, once, restoring its params assigned elsewhere."""
    mod = item.owner
    if id(mod) in done:
        return
    done.add(id(mod))
    keep = {
        id(it.tensor)
        for it in items
        if it.rule is not None and it.rule.scheme.is_default and it.owner is mod
    }
    params = list(mod.parameters())
    saved = [(p, p.detach().clone()) for p in params if id(p) not in keep]
    seed = _draw_seed(g)
    try:
        with _seeded_global_rng(seed, params):
            mod.reset_parameters()
    except Exception as exc:
        rule = item.rule
        assert rule is not None
        raise _err(
            rule.index,
            rule.text,
            f"{type(mod).__name__}.reset_parameters() failed for {item.names[0]!r}: {exc}",
        ) from exc
    for p, value in saved:
        p.copy_(value)


# ------------------------------------------------------------------------------ materialising


def _materialize_module(model: torch.nn.Module) -> None:
    """``to_empty(device="cpu")``, then re-tie what it untied and zero every tensor."""
    places: dict[int, list[tuple[Any, str, str]]] = {}
    for mod in model.modules():
        for table in ("_parameters", "_buffers"):
            for leaf, t in getattr(mod, table).items():
                if t is not None:
                    spots = places.setdefault(id(t), [])
                    if (mod, table, leaf) not in spots:
                        spots.append((mod, table, leaf))
    model.to_empty(device="cpu")
    for spots in places.values():
        mod0, table0, leaf0 = spots[0]
        first = getattr(mod0, table0)[leaf0]
        for mod, table, leaf in spots[1:]:
            if getattr(mod, table)[leaf] is not first:
                getattr(mod, table)[leaf] = first
    seen: set[int] = set()
    for mod in model.modules():
        for table in ("_parameters", "_buffers"):
            for t in getattr(mod, table).values():
                if t is not None and id(t) not in seen and t.device.type != "meta":
                    seen.add(id(t))
                    t.zero_()


def _reset_materialized(model: torch.nn.Module, items: list[_Item], seed: int) -> list[str]:
    """Give a materialised model's buffers and rule-less params their module defaults.

    Returns:
        Names left at zero (no rule and no reset method on their module).
    """
    untouched = {id(it.tensor) for it in items if it.rule is None}
    zeroed: list[str] = []
    with _seeded_global_rng(seed, []):
        for mod_name, mod in model.named_modules():
            pre = f"{mod_name}." if mod_name else ""
            bufs = [pre + n for n, b in mod._buffers.items() if b is not None]
            bare = [
                pre + n for n, p in mod._parameters.items() if p is not None and id(p) in untouched
            ]
            has_rp = callable(getattr(mod, "reset_parameters", None))
            has_rs = callable(getattr(mod, "reset_running_stats", None))
            if has_rp and (bare or (bufs and not has_rs)):
                mod.reset_parameters()
                continue
            if bufs and has_rs:
                mod.reset_running_stats()  # type: ignore[operator]
            else:
                zeroed.extend(bufs)
            zeroed.extend(bare)
    return zeroed


def _materialize_dict(pd: ParamDict, items: list[_Item]) -> list[str]:
    import torch

    zeroed: list[str] = []
    for item in items:
        t = item.tensor
        if t.device.type != "meta":
            continue
        pd.update(item.names[0], torch.zeros(t.shape, dtype=t.dtype))
        item.tensor = pd[item.names[0]]
        if item.rule is None:
            zeroed.append(item.names[0])
    return zeroed
