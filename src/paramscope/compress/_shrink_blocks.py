"""Physical shrinking of whole attention heads (grouped-query groups kept whole) and whole layers.

:func:`shrink_heads` and :func:`shrink_layers` change a model in place (``paramscope.shrink``
deep-copies it first) and fill a :class:`~paramscope.compress._shrink_report.ShrinkReport`.

Heads. An attention module is handled when its layout is one of:

- ``llama``: paramscope's zoo ``LlamaAttention`` (``q_proj`` / ``k_proj`` / ``v_proj`` /
  ``o_proj`` Linears and the attributes ``num_heads``, ``num_kv_heads``, ``head_dim`` that its
  forward reads for its ``view(b, t, heads, head_dim)`` reshapes);
- ``hf-llama``: transformers' ``LlamaAttention`` and the classes that copy it (the same four
  Linears, ``head_dim`` and ``num_key_value_groups``; the forward reshapes to
  ``(*input_shape, -1, self.head_dim)``, so the head counts follow the weights); also without
  ``num_key_value_groups`` when q, k and v are as wide (transformers' ``ViTAttention``,
  ``DeiTAttention``: ``num_attention_heads`` follows);
- ``gpt2``: transformers' ``GPT2Attention`` and its copies (ImageGPT, Decision Transformer):
  ``c_attn`` a ``Conv1D`` with ``weight`` ``(hidden, 3 * inner)`` packing q | k | v (k | v, with
  a ``q_attn``, in cross-attention), ``c_proj`` a ``Conv1D`` ``(inner, hidden)``; the forward
  splits at ``split_size`` and reshapes to ``(..., -1, head_dim)``, and ``Conv1D`` reads
  ``nf``: ``split_size``, ``num_heads``, ``c_attn.nf`` and ``c_proj.nx`` follow;
- ``bert``: transformers' ``BertAttention`` and its copies (RoBERTa, ELECTRA, XLM-R, CamemBERT,
  Data2VecText, YOLOS ...): the container is the unit's owner, its ``self`` (or ``attention``)
  child holds ``query`` / ``key`` / ``value`` Linears and ``output.dense`` reads the heads;
  ``num_attention_heads`` and ``all_head_size`` follow. A self-attention with parameters besides
  query / key / value (relative positions, separate biases) or buffers is refused.
- ``mha``: ``nn.MultiheadAttention`` with one packed ``in_proj_weight``. Its forward cannot take
  an inner width other than ``embed_dim``, so it is replaced by a
  :class:`HeadPrunedMultiheadAttention`: the same parameter names (``in_proj_weight``,
  ``in_proj_bias``, ``out_proj``), the same call signature and results, fewer heads.

The layout is recognised by the module's children and attributes and by reading its forward's
source (these forwards unpack ``x.shape``, which ``torch.fx`` cannot trace). One unit is a
key/value head with the ``num_heads / num_kv_heads`` query heads that read it (one head
without GQA): its ``q`` and ``k`` / ``v`` rows and its ``o`` input columns go together. Any
other module that looks like attention (``Attention`` in its class name, or a head-count
attribute) is refused with the reason.

Configs. Llama-layout configs with a ``head_dim`` get the new counts when every module ends with
the same ones. GPT-2 / BERT / ViT configs derive the head size from ``hidden_size /
num_attention_heads``, so they keep their counts, and transformers 5.x has no
``config.pruned_heads`` / ``prune_heads`` for ``from_pretrained`` to rebuild a pruned model: each
report group lists its ``kept_units``; shrinking a model built from the config to them and then
loading the weights rebuilds it.

Layers. A stack is an ``nn.ModuleList`` / ``nn.Sequential`` of at least two blocks of one class
whose parameters and buffers have the same names and shapes. It is used when the forward runs
its blocks in order, each once, with an output the shape of its input: checked by hooks on
``example_inputs`` when given, else by reading the owner's forward (``for … in self.<list>``,
or the stack is an ``nn.Sequential`` the owner calls). Whole blocks are removed; the kept
blocks are renumbered, ``layer_idx`` attributes follow, and config objects whose layer count
(``num_hidden_layers``, ``num_layers``, ``n_layer``, ``n_layers``) equals the stack's length
are updated (``layer_types`` too). Finding stacks and removing blocks is :mod:`._stacks`'s,
shared with ``subnet`` and ``student``.

Importance. ``"l1"`` / ``"l2"``: the norm of a head unit's weight slices; for a block, the
relative change ``||f(x) - x|| / ||x||`` it makes on ``example_inputs`` (in that norm), else
the norm of its parameters. A callable is called ``f(name, index, tensors) -> float`` with the
attention module's (or the stack's) name, the unit's index and a dict of its tensors (the
weight slices of the head unit by member name, or the block's parameters). ``amount`` removes
``floor(amount * units)`` units of each selected group, smallest first, always keeping one;
``target_params`` removes units globally, in the order of their importance divided by the
mean importance of their group, until the model has at most that many parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, TargetError
from .._names import Pattern, compile_pattern
from .._outputs import call_model
from ._stacks import (
    call_importance,
    configs,
    find_stacks,
    observe_blocks,
    param_count,
    remove_blocks,
    runs_in_order,
    set_config,
    source_text,
    tensor_norm,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ._shrink_report import ShrinkReport

__all__ = ["shrink_heads", "shrink_layers"]

Importance = str | Callable[[str, int, dict[str, Any]], float]

#: Attributes that hold a head count: a module that has one looks like attention.
_HEAD_ATTRS = ("num_heads", "n_head", "n_heads", "num_attention_heads")


# ---------------------------------------------------------------------------------- shared
def _check_args(op: str, amount: float | None, target_params: int | None, importance: Any) -> None:
    if (amount is None) == (target_params is None):
        raise ArgumentError(
            f"{op}: amount={amount!r}, target_params={target_params!r}: expected exactly one "
            "of them; pass amount=0.25 or target_params=N"
        )
    if amount is not None and (
        isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 <= amount < 1
    ):
        raise ArgumentError(f"{op}: amount={amount!r}: expected a number with 0 <= amount < 1")
    if target_params is not None and (
        isinstance(target_params, bool) or not isinstance(target_params, int) or target_params < 0
    ):
        raise ArgumentError(
            f"{op}: target_params={target_params!r}: expected a parameter count >= 0"
        )
    if not callable(importance) and importance not in ("l1", "l2"):
        raise ArgumentError(
            f"{op}: importance={importance!r}: expected 'l1', 'l2' or a callable "
            "f(name, index, tensors) -> float"
        )


def _runs(op: str, model: nn.Module, example_inputs: Any) -> None:
    """The shrunk model runs on the example inputs, or TargetError."""
    import torch

    if example_inputs is None:
        return
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            call_model(model, example_inputs)
    except Exception as exc:  # a bug of ours: never hand back a model that does not run
        raise TargetError(
            f"{op}: the shrunk {type(model).__name__} no longer runs on the example inputs "
            f"({type(exc).__name__}: {exc}); nothing can be removed this way"
        ) from exc
    finally:
        for m, training in modes:
            m.training = training


@dataclass
class _Group:
    """One shrinkable group (an attention module or a stack) and its units."""

    name: str
    module: Any
    kind: str
    total: int
    unit_params: list[int]
    scores: list[float] = field(default_factory=list)
    eligible: list[int] = field(default_factory=list)
    remove: set[int] = field(default_factory=set)


def _choose(
    groups: list[_Group],
    amount: float | None,
    target_params: int | None,
    current: int,
    report: ShrinkReport,
) -> None:
    """Fill ``remove`` of every group: per group by ``amount``, or globally to a target."""
    if amount is not None:
        for g in groups:
            k = min(math.floor(amount * g.total + 1e-9), g.total - 1, len(g.eligible))
            order = sorted(g.eligible, key=lambda i: (g.scores[i], i))
            g.remove = set(order[:k])
        return
    assert target_params is not None
    ranked: list[tuple[float, int, int, _Group]] = []
    for gi, g in enumerate(groups):
        mean = sum(g.scores[i] for i in g.eligible) / len(g.eligible) if g.eligible else 0.0
        for i in g.eligible:
            ranked.append((g.scores[i] / mean if mean > 0 else 0.0, gi, i, g))
    ranked.sort(key=lambda r: (r[0], r[1], r[2]))
    left = current
    for _, _, i, g in ranked:
        if left <= target_params:
            break
        if g.total - len(g.remove) <= 1:
            continue
        g.remove.add(i)
        left -= g.unit_params[i]
    if left > target_params:
        report.notes.append(
            f"target_params={target_params:,} not reached: {left:,} parameters left with one "
            f"unit kept in every group"
        )


# ---------------------------------------------------------------------------------- heads
@dataclass
class _Slice:
    """A parameter that loses rows or columns with the units: ``owner.attr`` along ``dim``,
    unit ``u`` owning ``index[u]``."""

    member: str
    owner: Any
    attr: str
    dim: int
    index: list[list[int]]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _linear_ok(mod: Any) -> bool:
    from torch import nn

    return type(mod) is nn.Linear


def _llama_slices(name: str, mod: Any, n_heads: int, n_kv: int, hd: int) -> list[_Slice]:
    g = n_heads // n_kv
    q_idx = [list(range(u * g * hd, (u + 1) * g * hd)) for u in range(n_kv)]
    kv_idx = [list(range(u * hd, (u + 1) * hd)) for u in range(n_kv)]
    out: list[_Slice] = []
    for proj, idx in (("q_proj", q_idx), ("k_proj", kv_idx), ("v_proj", kv_idx)):
        lin = getattr(mod, proj)
        out.append(_Slice(_join(name, f"{proj}.weight"), lin, "weight", 0, idx))
        if lin.bias is not None:
            out.append(_Slice(_join(name, f"{proj}.bias"), lin, "bias", 0, idx))
    out.append(_Slice(_join(name, "o_proj.weight"), mod.o_proj, "weight", 1, q_idx))
    return out


def _packed_slices(name: str, mod: Any, n_heads: int, hd: int) -> list[_Slice]:
    inner = n_heads * hd
    rows = [
        [part * inner + j for part in range(3) for j in range(u * hd, (u + 1) * hd)]
        for u in range(n_heads)
    ]
    cols = [list(range(u * hd, (u + 1) * hd)) for u in range(n_heads)]
    out = [_Slice(_join(name, "in_proj_weight"), mod, "in_proj_weight", 0, rows)]
    if mod.in_proj_bias is not None:
        out.append(_Slice(_join(name, "in_proj_bias"), mod, "in_proj_bias", 0, rows))
    out.append(_Slice(_join(name, "out_proj.weight"), mod.out_proj, "weight", 1, cols))
    return out


def _conv1d_ok(mod: Any) -> bool:
    """transformers' ``Conv1D`` (a Linear with a transposed ``weight`` of ``(nx, nf)``)."""
    return (
        type(mod).__name__ == "Conv1D"
        and isinstance(getattr(mod, "nf", None), int)
        and isinstance(getattr(mod, "nx", None), int)
        and getattr(mod, "bias", None) is not None
        and tuple(mod.weight.shape) == (mod.nx, mod.nf)
    )


def _own_params_outside(mod: Any, allowed: tuple[str, ...]) -> list[str]:
    return sorted(n for n, _ in mod.named_parameters() if n.split(".")[0] not in allowed)


#: Config fields a forward must not read: the pruned module's widths no longer follow them.
_CONFIG_WIDTHS = ("config.hidden_size", "config.num_attention_heads", "config.n_head")


def _gpt2_slices(name: str, mod: Any, n_heads: int, hd: int, cross: bool) -> list[_Slice]:
    inner = n_heads * hd
    parts = 2 if cross else 3
    cols = [list(range(u * hd, (u + 1) * hd)) for u in range(n_heads)]
    packed = [[p * inner + j for p in range(parts) for j in cols[u]] for u in range(n_heads)]
    out = [
        _Slice(_join(name, "c_attn.weight"), mod.c_attn, "weight", 1, packed),
        _Slice(_join(name, "c_attn.bias"), mod.c_attn, "bias", 0, packed),
    ]
    if cross:
        out.append(_Slice(_join(name, "q_attn.weight"), mod.q_attn, "weight", 1, cols))
        out.append(_Slice(_join(name, "q_attn.bias"), mod.q_attn, "bias", 0, cols))
    out.append(_Slice(_join(name, "c_proj.weight"), mod.c_proj, "weight", 0, cols))
    return out


def _classify_gpt2(cls: str, name: str, mod: Any) -> tuple[str, list[_Slice], int] | str:
    """transformers' ``GPT2Attention`` layout (also ImageGPT's, Decision Transformer's)."""
    n, hd, split = mod.num_heads, mod.head_dim, mod.split_size
    cross = bool(getattr(mod, "is_cross_attention", False)) or hasattr(mod, "q_attn")
    if cross and not _conv1d_ok(getattr(mod, "q_attn", None)):
        return f"{cls}: cross-attention without a Conv1D q_attn"
    src = source_text(type(mod).forward)
    if "self.split_size" not in src or "self.head_dim" not in src:
        return f"{cls}: its forward does not read split_size / head_dim"
    if any(c in src for c in _CONFIG_WIDTHS):
        return f"{cls}: its forward reads the config's widths"
    extra = _own_params_outside(mod, ("c_attn", "c_proj", "q_attn"))
    if extra:
        return f"{cls}: parameters outside c_attn / c_proj ({', '.join(extra)})"
    if (
        n <= 0
        or split != n * hd
        or mod.c_attn.nf != (2 if cross else 3) * split
        or mod.c_proj.nx != split
        or (cross and mod.q_attn.nf != split)
    ):
        return f"{cls}: c_attn / c_proj widths differ from num_heads={n}, head_dim={hd}"
    return "gpt2", _gpt2_slices(name, mod, n, hd, cross), n


def _bert_parts(mod: Any) -> tuple[str, Any, Any] | None:
    """``(attr, self_attention, output)`` of a BERT-layout container (``BertAttention``:
    ``self`` with query / key / value Linears, ``output.dense``), or ``None``."""
    out = mod._modules.get("output")
    if out is None or not _linear_ok(getattr(out, "dense", None)):
        return None
    for attr, child in mod._modules.items():
        if attr != "output" and child is not None and _bert_self_ok(child):
            return attr, child, out
    return None


def _bert_self_ok(mod: Any) -> bool:
    return all(_linear_ok(getattr(mod, p, None)) for p in ("query", "key", "value")) and all(
        isinstance(getattr(mod, a, None), int)
        for a in ("num_attention_heads", "attention_head_size", "all_head_size")
    )


def _classify_bert(
    cls: str, name: str, mod: Any, attr: str, inner: Any, out: Any
) -> tuple[str, list[_Slice], int] | str:
    """transformers' ``BertAttention`` layout (RoBERTa, ELECTRA, XLM-R ... copy it)."""
    icls = type(inner).__name__
    n, hd = inner.num_attention_heads, inner.attention_head_size
    src = source_text(type(inner).forward)
    if "self.attention_head_size" not in src:
        return f"{icls}: its forward does not read attention_head_size"
    if any(c in src for c in _CONFIG_WIDTHS):
        return f"{icls}: its forward reads the config's widths"
    outer = source_text(type(mod).forward)
    if f"self.{attr}(" not in outer or "self.output(" not in outer:
        return f"{cls}: its forward does not call self.{attr} and self.output"
    extra = _own_params_outside(inner, ("query", "key", "value"))
    if extra:
        return f"{icls}: parameters outside query / key / value ({', '.join(extra)})"
    if any(True for _ in inner.buffers()):
        return f"{icls}: it has buffers (position tables?) that may depend on the heads"
    q, k, v, dense = inner.query, inner.key, inner.value, out.dense
    if (
        n <= 0
        or inner.all_head_size != n * hd
        or not q.out_features == k.out_features == v.out_features == n * hd
        or dense.in_features != n * hd
    ):
        return (
            f"{icls}: query / key / value / output.dense widths differ from "
            f"num_attention_heads={n}, attention_head_size={hd}"
        )
    rows = [list(range(u * hd, (u + 1) * hd)) for u in range(n)]
    slices: list[_Slice] = []
    for proj in ("query", "key", "value"):
        lin = getattr(inner, proj)
        slices.append(_Slice(_join(name, f"{attr}.{proj}.weight"), lin, "weight", 0, rows))
        if lin.bias is not None:
            slices.append(_Slice(_join(name, f"{attr}.{proj}.bias"), lin, "bias", 0, rows))
    slices.append(_Slice(_join(name, "output.dense.weight"), dense, "weight", 1, rows))
    return "bert", slices, n


def _classify_attention(name: str, mod: Any) -> tuple[str, list[_Slice], int] | str | None:
    """``(kind, slices, units)`` for a handled attention module, a refusal reason for one that
    looks like attention, ``None`` for anything else."""
    from torch import nn

    cls = type(mod).__name__
    projs = ("q_proj", "k_proj", "v_proj", "o_proj")
    has_projs = all(_linear_ok(getattr(mod, p, None)) for p in projs)
    if isinstance(mod, nn.MultiheadAttention | _mha_class()):
        if isinstance(mod, nn.MultiheadAttention):
            if not mod._qkv_same_embed_dim:
                return "nn.MultiheadAttention with kdim/vdim != embed_dim (separate q/k/v weights)"
            if mod.bias_k is not None or mod.add_zero_attn:
                return "nn.MultiheadAttention with add_bias_kv or add_zero_attn"
        if not _linear_ok(mod.out_proj) and not isinstance(mod.out_proj, nn.Linear):
            return f"out_proj is a {type(mod.out_proj).__name__}, not a Linear"
        return "mha", _packed_slices(name, mod, mod.num_heads, mod.head_dim), mod.num_heads
    if has_projs and all(
        isinstance(getattr(mod, a, None), int) for a in ("num_heads", "num_kv_heads", "head_dim")
    ):
        src = source_text(type(mod).forward)
        if "self.num_heads" not in src or "self.num_kv_heads" not in src:
            return f"{cls}: its forward does not read num_heads / num_kv_heads"
        n, kv, hd = mod.num_heads, mod.num_kv_heads, mod.head_dim
        if (
            kv <= 0
            or n % kv
            or mod.q_proj.out_features != n * hd
            or mod.k_proj.out_features != kv * hd
            or mod.o_proj.in_features != n * hd
        ):
            return (
                f"{cls}: q/k/o widths differ from num_heads={n}, num_kv_heads={kv}, head_dim={hd}"
            )
        return "llama", _llama_slices(name, mod, n, kv, hd), kv
    if all(_conv1d_ok(getattr(mod, c, None)) for c in ("c_attn", "c_proj")) and all(
        isinstance(getattr(mod, a, None), int) for a in ("num_heads", "head_dim", "split_size")
    ):
        return _classify_gpt2(cls, name, mod)
    bert = _bert_parts(mod)
    if bert is not None:
        return _classify_bert(cls, name, mod, *bert)
    groups = getattr(mod, "num_key_value_groups", None)
    no_gqa = groups is None and isinstance(getattr(mod, "num_attention_heads", None), int)
    if (
        has_projs
        and isinstance(getattr(mod, "head_dim", None), int)
        and (isinstance(groups, int) or no_gqa)
    ):
        src = source_text(type(mod).forward)
        if "-1, self.head_dim" not in src:
            return f"{cls}: its forward does not reshape to (..., -1, self.head_dim)"
        if no_gqa and any(True for _ in mod.buffers()):
            return f"{cls}: it has buffers that may depend on the heads"
        own = {n for n, _ in mod.named_parameters()}
        extra = [n for n in own if n.split(".")[0] not in projs]
        hd, g = mod.head_dim, (1 if groups is None else groups)
        bad = [n for n in extra if tuple(mod.get_parameter(n).shape) != (hd,)]
        if bad:
            return f"{cls}: parameters outside q/k/v/o_proj ({', '.join(sorted(bad))})"
        q_out, kv_out = mod.q_proj.out_features, mod.k_proj.out_features
        if (
            g <= 0
            or kv_out % hd
            or q_out != kv_out * g
            or mod.o_proj.in_features != q_out
            or mod.v_proj.out_features != kv_out
        ):
            return f"{cls}: q/k/v/o widths do not match head_dim={hd}, groups={g}"
        kv = kv_out // hd
        return "hf-llama", _llama_slices(name, mod, kv * g, kv, hd), kv
    looks = "attention" in cls.lower() or any(
        isinstance(getattr(mod, a, None), int) for a in _HEAD_ATTRS
    )
    has_weights = any(True for _ in mod.parameters())
    if looks and has_weights:
        return (
            f"no head handler for {cls}: heads are removed from Llama-layout attention "
            "(q/k/v/o_proj of paramscope's zoo or transformers, ViT's too), transformers' "
            "GPT-2 (c_attn/c_proj Conv1D) and BERT (query/key/value + output.dense) "
            "attention, and nn.MultiheadAttention only"
        )
    return None


def _find_attention(
    model: nn.Module,
) -> tuple[list[tuple[str, Any, str, list[_Slice], int]], list[tuple[str, str]]]:
    handled: list[tuple[str, Any, str, list[_Slice], int]] = []
    refused: list[tuple[str, str]] = []
    inside: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        got = _classify_attention(name, mod)
        if got is None:
            continue
        if isinstance(got, tuple):
            handled.append((name, mod, got[0], got[1], got[2]))
            inside.append(name)
        else:
            refused.append((name, got))
            if _bert_parts(mod) is not None:  # its reason names the inner module's fault
                inside.append(name)
    # a refused container (BertAttention) of a handled or refused module says nothing more
    names = [n for n, *_ in handled] + [n for n, _ in refused]
    refused = [
        (n, r)
        for n, r in refused
        if not any(o != n and (o.startswith(n + ".") or not n) for o in names)
    ]
    return handled, refused


def _tied_elsewhere(model: nn.Module, slices: list[_Slice]) -> str | None:
    count: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        count[id(p)] = count.get(id(p), 0) + 1
    for s in slices:
        p = getattr(s.owner, s.attr)
        if count.get(id(p), 0) > 1:
            return f"{s.member} is tied to another parameter; removing heads would untie it"
        if p.device.type == "meta":
            return f"{s.member} is on the meta device and has no values; load the weights first"
    return None


def _slice_param(owner: Any, attr: str, dim: int, keep: list[int]) -> None:
    import torch
    from torch import nn

    p = getattr(owner, attr)
    idx = torch.tensor(keep, dtype=torch.long, device=p.device)
    setattr(
        owner,
        attr,
        nn.Parameter(p.detach().index_select(dim, idx).clone(), requires_grad=p.requires_grad),
    )


def shrink_heads(
    model: nn.Module,
    amount: float | None = None,
    *,
    target_params: int | None = None,
    importance: Importance = "l1",
    select: Pattern | None = None,
    report: ShrinkReport,
    example_inputs: Any = None,
) -> nn.Module:
    """Remove whole attention heads (a key/value head with its query heads under GQA), in place.

    Args:
        model: the model to change (``paramscope.shrink`` passes a deep copy).
        amount: the fraction of each selected attention module's units to remove (rounded
            down, one always kept); or ``None`` with ``target_params``.
        target_params: remove units, least important first across modules, until the model
            has at most this many parameters.
        importance: ``"l1"`` / ``"l2"`` norm of a unit's q, k, v rows and o columns, or
            ``f(name, unit_index, tensors) -> float`` (``tensors``: member name → slice).
        select: glob / ``re:`` pattern(s) of attention module names; ``None``: all.
        report: filled with ``groups`` (each with the removed ``units`` and the
            ``kept_units``, numbered as the module's heads were), ``refused`` and ``notes``.
        example_inputs: when given, the shrunk model must run on them.

    Returns:
        ``model``, smaller.

    Raises:
        ArgumentError: bad ``amount`` / ``target_params`` / ``importance``, or ``select``
            matches no attention module.
        TargetError: the model has no attention module, or no longer runs.

    Example:
        >>> from torch import nn
        >>> from paramscope.compress._shrink_report import ShrinkReport
        >>> r = ShrinkReport("heads", 0.5, None, "l1")
        >>> m = shrink_heads(nn.MultiheadAttention(8, 4), 0.5, report=r)
        >>> m.num_heads, tuple(m.in_proj_weight.shape), r.groups[0]["params_removed"]
        (2, (12, 8), 140)
    """
    _check_args("shrink heads", amount, target_params, importance)
    handled, refused = _find_attention(model)
    if not handled and not refused:
        raise TargetError(
            f"shrink heads: {type(model).__name__} has no attention module; expected "
            "Llama-layout attention, transformers' GPT-2 / BERT attention or "
            "nn.MultiheadAttention"
        )
    match = compile_pattern(select) if select is not None else None
    if match is not None:
        handled = [h for h in handled if match(h[0])]
        refused = [r for r in refused if match(r[0])]
        if not handled and not refused:
            raise ArgumentError(
                f"shrink heads: select={select!r}: no attention module matches; expected one of "
                f"{', '.join(n for n, *_ in _find_attention(model)[0]) or '(none handled)'}"
            )
    for n, reason in refused:
        report.refused.append({"name": n, "reason": reason})
    groups: list[_Group] = []
    slices_of: dict[int, list[_Slice]] = {}
    for name, mod, kind, slices, units in handled:
        why = _tied_elsewhere(model, slices)
        if why is not None:
            report.refused.append({"name": name, "reason": why})
            continue
        unit_params = []
        scores = []
        for u in range(units):
            parts = {
                s.member: getattr(s.owner, s.attr)
                .detach()
                .index_select(s.dim, _long(s.index[u], getattr(s.owner, s.attr).device))
                for s in slices
            }
            unit_params.append(sum(t.numel() for t in parts.values()))
            if callable(importance):
                scores.append(call_importance(importance, name, u, parts))
            else:
                scores.append(tensor_norm(list(parts.values()), importance))
        g = _Group(name, mod, kind, units, unit_params, scores, list(range(units)))
        groups.append(g)
        slices_of[id(g)] = slices
    _choose(groups, amount, target_params, param_count(model), report)
    for g in groups:
        if g.remove:
            was_root = g.module is model
            _apply_heads(model, g, slices_of[id(g)], report)
            if was_root:
                model = g.module  # a root nn.MultiheadAttention is replaced as a whole
    _heads_config(model, groups, report)
    _runs("shrink heads", model, example_inputs)
    return model


def _long(index: list[int], device: Any) -> torch.Tensor:
    import torch

    return torch.tensor(index, dtype=torch.long, device=device)


def _apply_heads(model: nn.Module, g: _Group, slices: list[_Slice], report: ShrinkReport) -> None:
    keep_units = [u for u in range(g.total) if u not in g.remove]
    members = []
    removed = 0
    for s in slices:
        keep = sorted(i for u in keep_units for i in s.index[u])  # packed q|k|v stays so
        gone = sorted(i for u in g.remove for i in s.index[u])
        before = getattr(s.owner, s.attr).numel()
        _slice_param(s.owner, s.attr, s.dim, keep)
        removed += before - getattr(s.owner, s.attr).numel()
        members.extend(f"{s.member}[{i}]" if s.dim == 0 else f"{s.member}[:, {i}]" for i in gone)
    mod = g.module
    if g.kind in ("llama", "hf-llama"):
        hd = mod.head_dim
        per_unit = len(slices[0].index[0]) // hd  # query heads per unit (GQA group size)
        heads_gone = len(g.remove) * per_unit
        mod.q_proj.out_features = mod.q_proj.weight.shape[0]
        mod.k_proj.out_features = mod.k_proj.weight.shape[0]
        mod.v_proj.out_features = mod.v_proj.weight.shape[0]
        mod.o_proj.in_features = mod.o_proj.weight.shape[1]
        counts = {
            "num_heads": mod.q_proj.out_features // hd,
            "num_attention_heads": mod.q_proj.out_features // hd,
            "num_kv_heads": mod.k_proj.out_features // hd,
            "num_key_value_heads": mod.k_proj.out_features // hd,
        }
        for attr, value in counts.items():
            if isinstance(mod.__dict__.get(attr), int):
                setattr(mod, attr, value)
    elif g.kind == "gpt2":
        heads_gone = len(g.remove)
        mod.c_attn.nf = mod.c_attn.weight.shape[1]
        mod.c_proj.nx = mod.c_proj.weight.shape[0]
        if getattr(mod, "q_attn", None) is not None:
            mod.q_attn.nf = mod.q_attn.weight.shape[1]
        mod.split_size = mod.c_proj.nx  # the forward splits q | k | v at split_size
        mod.num_heads = mod.split_size // mod.head_dim
    elif g.kind == "bert":
        heads_gone = len(g.remove)
        parts = _bert_parts(mod)
        assert parts is not None  # classified as bert: the layout has not changed
        _, inner, out = parts
        for proj in ("query", "key", "value"):
            lin = getattr(inner, proj)
            lin.out_features = lin.weight.shape[0]
        out.dense.in_features = out.dense.weight.shape[1]
        inner.all_head_size = inner.query.out_features
        inner.num_attention_heads = inner.all_head_size // inner.attention_head_size
    else:
        heads_gone = len(g.remove)
        _replace_mha(model, g, keep_units)
    report.groups.append(
        {
            "name": g.name,
            "kept": len(keep_units),
            "removed": len(g.remove),
            "total": g.total,
            "params_removed": removed,
            "buffers_removed": 0,
            "members": members,
            "units": sorted(g.remove),
            "kept_units": keep_units,
            "heads_removed": heads_gone,
        }
    )


def _replace_mha(model: nn.Module, g: _Group, keep_units: list[int]) -> None:
    """Swap an ``nn.MultiheadAttention`` for the pruned equivalent (already sliced params)."""
    old = g.module
    cls = _mha_class()
    if isinstance(old, cls):
        old.head_index = tuple(old.head_index[u] for u in keep_units)
        old.num_heads = len(keep_units)
        old.out_proj.in_features = old.out_proj.weight.shape[1]
        return
    new = cls.from_mha(old, keep_units)
    g.module = new
    if old is model:
        return
    for _, parent in model.named_modules(remove_duplicate=False):
        for attr, child in list(parent._modules.items()):
            if child is old:
                parent._modules[attr] = new


def _heads_config(model: nn.Module, groups: list[_Group], report: ShrinkReport) -> None:
    """Keep ``config.num_attention_heads`` / ``num_key_value_heads`` true when every Llama
    attention module ends with the same counts; say so otherwise."""
    changed = [g for g in groups if g.remove]
    llama = [h[1] for h in _find_attention(model)[0] if h[2] in ("llama", "hf-llama")]
    if any(g.kind == "mha" for g in changed):
        report.notes.append(
            "nn.MultiheadAttention modules with heads removed were replaced by "
            "paramscope.compress._shrink_blocks.HeadPrunedMultiheadAttention (same parameter "
            "names and call; inner width num_heads * head_dim < embed_dim); a config's head "
            "count no longer describes them"
        )
    hf = sorted({type(g.module).__name__ for g in changed if g.kind in ("gpt2", "bert")})
    if hf:
        report.notes.append(
            f"config.num_attention_heads was left as it was: {', '.join(hf)} derive the head "
            "size from hidden_size / num_attention_heads, so no config count describes the "
            "pruned modules, and transformers (5.x) has no config.pruned_heads to rebuild them "
            "in from_pretrained; the heads kept per module are groups[i]['kept_units']: "
            "rebuild by shrinking a model built from the config with those heads, then load "
            "the weights"
        )
    if not any(g.kind in ("llama", "hf-llama") for g in changed):
        return
    counts = {
        (m.q_proj.out_features // m.head_dim, m.k_proj.out_features // m.head_dim, m.head_dim)
        for m in llama
    }
    if len(counts) != 1:
        report.notes.append(
            "attention modules now differ in their head counts; config.num_attention_heads / "
            "num_key_value_heads were left as they were and describe none of them exactly"
        )
        return
    ((nh, kv, hd),) = counts

    def derived(c: Any) -> bool:
        """A config without ``head_dim`` derives it as hidden_size // num_attention_heads:
        a smaller head count there would change the head size on a rebuild."""
        return getattr(c, "head_dim", None) is None and getattr(c, "hidden_size", None) != nh * hd

    set_config(
        model,
        {"num_attention_heads": nh, "num_key_value_heads": kv, "head_dim": hd},
        lambda c: hasattr(c, "num_attention_heads") and not derived(c),
        report,
    )
    if any(derived(c) for c in configs(model) if hasattr(c, "num_attention_heads")):
        report.notes.append(
            f"config.num_attention_heads was left as it was: the config has no head_dim and "
            f"derives it from hidden_size / num_attention_heads: setting {nh} would change "
            f"the head size {hd}; the heads kept per module are groups[i]['kept_units']"
        )


# ---------------------------------------------------------------------------------- MHA
_MHA: list[type] = []


def _mha_class() -> type:
    """:class:`HeadPrunedMultiheadAttention`, defined on first use (torch loads then)."""
    if _MHA:
        return _MHA[0]
    import torch
    import torch.nn.functional as F
    from torch import nn

    class HeadPrunedMultiheadAttention(nn.Module):
        """``nn.MultiheadAttention`` (packed q/k/v) with fewer heads than ``embed_dim`` needs.

        Parameters keep ``nn.MultiheadAttention``'s names: ``in_proj_weight``
        ``(3 * num_heads * head_dim, embed_dim)``, ``in_proj_bias``, ``out_proj``
        (``num_heads * head_dim`` → ``embed_dim``). ``head_index`` holds the original heads
        kept (a per-head ``attn_mask`` of ``(N * original_heads, L, S)`` is narrowed to them).
        The call and the results are ``nn.MultiheadAttention``'s.
        """

        def __init__(
            self,
            embed_dim: int,
            num_heads: int,
            head_dim: int,
            *,
            bias: bool = True,
            dropout: float = 0.0,
            batch_first: bool = False,
            head_index: tuple[int, ...] | None = None,
            original_heads: int | None = None,
        ) -> None:
            super().__init__()
            inner = num_heads * head_dim
            self.embed_dim, self.kdim, self.vdim = embed_dim, embed_dim, embed_dim
            self.num_heads, self.head_dim = num_heads, head_dim
            self.dropout, self.batch_first = dropout, batch_first
            self._qkv_same_embed_dim = True
            self.bias_k = self.bias_v = None
            self.add_zero_attn = False
            self.head_index = head_index or tuple(range(num_heads))
            self.original_heads = original_heads or num_heads
            self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim))
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner)) if bias else None
            self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

        @classmethod
        def from_mha(cls, old: Any, keep: list[int]) -> Any:
            """The equivalent of ``old`` (its parameters already sliced to heads ``keep``)."""
            with torch.device("meta"):  # shapes only: the sliced parameters go in below
                new = cls(
                    old.embed_dim,
                    len(keep),
                    old.head_dim,
                    bias=old.in_proj_bias is not None,
                    dropout=old.dropout,
                    batch_first=old.batch_first,
                    head_index=tuple(keep),
                    original_heads=old.num_heads,
                )
            new.in_proj_weight = old.in_proj_weight
            new.in_proj_bias = old.in_proj_bias
            new.out_proj.weight = old.out_proj.weight
            new.out_proj.bias = old.out_proj.bias
            new.train(old.training)
            return new

        def forward(
            self,
            query: torch.Tensor,
            key: torch.Tensor,
            value: torch.Tensor,
            key_padding_mask: torch.Tensor | None = None,
            need_weights: bool = True,
            attn_mask: torch.Tensor | None = None,
            average_attn_weights: bool = True,
            is_causal: bool = False,
        ) -> tuple[torch.Tensor, torch.Tensor | None]:
            """``nn.MultiheadAttention.forward``."""
            unbatched = query.dim() == 2
            if unbatched:
                query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
                if key_padding_mask is not None:
                    key_padding_mask = key_padding_mask.unsqueeze(0)
            elif self.batch_first:
                query, key, value = (t.transpose(0, 1) for t in (query, key, value))
            seq, n, _ = query.shape  # (L, N, E) from here
            src = key.shape[0]
            h, hd = self.num_heads, self.head_dim
            inner = h * hd
            w, b = self.in_proj_weight, self.in_proj_bias
            bq, bk, bv = (None, None, None) if b is None else b.split(inner)
            wq, wk, wv = w.split(inner)

            def heads(
                x: torch.Tensor, wt: torch.Tensor, bt: torch.Tensor | None, length: int
            ) -> torch.Tensor:
                return F.linear(x, wt, bt).reshape(length, n, h, hd).permute(1, 2, 0, 3)

            q, k, v = heads(query, wq, bq, seq), heads(key, wk, bk, src), heads(value, wv, bv, src)
            scores = (q @ k.transpose(-2, -1)) * hd**-0.5  # (N, H, L, S)
            mask = torch.zeros((), dtype=scores.dtype, device=scores.device)
            if attn_mask is None and is_causal:
                attn_mask = torch.ones(seq, src, dtype=torch.bool, device=q.device).triu(1)
            if attn_mask is not None:
                am = attn_mask
                if am.dim() == 3:
                    am = am.reshape(n, self.original_heads, seq, src)[:, list(self.head_index)]
                mask = mask + _additive(am, scores.dtype)
            if key_padding_mask is not None:
                mask = mask + _additive(key_padding_mask, scores.dtype)[:, None, None, :]
            probs = torch.softmax(scores + mask, dim=-1)
            if self.training and self.dropout > 0:
                probs = F.dropout(probs, p=self.dropout)
            y = (probs @ v).permute(2, 0, 1, 3).reshape(seq, n, inner)
            out = self.out_proj(y)
            if unbatched:
                out = out.squeeze(1)
            elif self.batch_first:
                out = out.transpose(0, 1)
            if not need_weights:
                return out, None
            weights = probs.mean(1) if average_attn_weights else probs
            return out, weights.squeeze(0) if unbatched else weights

    def _additive(m: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if m.dtype == torch.bool:
            return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, -math.inf)
        return m.to(dtype)

    HeadPrunedMultiheadAttention.__module__ = __name__
    HeadPrunedMultiheadAttention.__qualname__ = "HeadPrunedMultiheadAttention"
    _MHA.append(HeadPrunedMultiheadAttention)
    return HeadPrunedMultiheadAttention


def __getattr__(name: str) -> Any:
    """``HeadPrunedMultiheadAttention`` on first use (so that pickles of shrunk models load)."""
    if name == "HeadPrunedMultiheadAttention":
        return _mha_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------- layers
def shrink_layers(
    model: nn.Module,
    amount: float | None = None,
    *,
    target_params: int | None = None,
    importance: Importance = "l1",
    select: Pattern | None = None,
    report: ShrinkReport,
    example_inputs: Any = None,
) -> nn.Module:
    """Remove whole blocks from stacks of identical residual blocks (depth pruning), in place.

    Args:
        model: the model to change (``paramscope.shrink`` passes a deep copy).
        amount: the fraction of each selected stack's blocks to remove (rounded down, one
            always kept); or ``None`` with ``target_params``.
        target_params: remove blocks, least important first across stacks, until the model
            has at most this many parameters.
        importance: ``"l1"`` / ``"l2"``: the block's relative change ``||f(x) - x|| / ||x||``
            on ``example_inputs`` in that norm, else the norm of its parameters (a note says
            which); or ``f(name, block_index, tensors) -> float`` (``tensors``: the block's
            parameters by name).
        select: glob / ``re:`` pattern(s) of stack names (``model.layers``) or block names
            (``model.layers.3``: only those may go); ``None``: every stack.
        report: filled with ``groups``, ``refused`` and ``notes``.
        example_inputs: inputs to measure the blocks on and check the shrunk model runs.

    Returns:
        ``model``, shallower.

    Raises:
        ArgumentError: bad ``amount`` / ``target_params`` / ``importance``, or ``select``
            matches no stack.
        TargetError: the model has no stack of identical blocks, or no longer runs.

    Example:
        >>> from torch import nn
        >>> from paramscope.compress._shrink_report import ShrinkReport
        >>> class Res(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = nn.Sequential(nn.Linear(4, 4))
        ...     def forward(self, x):
        ...         return x + self.fc(x)
        >>> r = ShrinkReport("layers", 0.5, None, "l2")
        >>> m = shrink_layers(nn.Sequential(Res(), Res(), Res(), Res()), 0.5, report=r)
        >>> len(m), r.groups[0]["params_removed"]
        (2, 40)
    """
    _check_args("shrink layers", amount, target_params, importance)
    stacks, refused = find_stacks(model)
    if not stacks and not refused:
        raise TargetError(
            f"shrink layers: {type(model).__name__} has no stack of identical blocks; expected "
            "an nn.ModuleList or nn.Sequential of at least two blocks of one class"
        )
    match = compile_pattern(select) if select is not None else None
    chosen: list[tuple[str, Any, Any, str, list[int]]] = []
    for name, s, owner, attr in stacks:
        if match is None or match(name):
            chosen.append((name, s, owner, attr, list(range(len(s)))))
        else:
            picked = [i for i in range(len(s)) if match(f"{name}.{i}" if name else str(i))]
            if picked:
                chosen.append((name, s, owner, attr, picked))
    refused = [r for r in refused if match is None or match(r[0])]
    if match is not None and not chosen and not refused:
        raise ArgumentError(
            f"shrink layers: select={select!r}: no stack or block matches; expected one of "
            f"{', '.join(n for n, *_ in stacks)}"
        )
    for n, reason in refused:
        report.refused.append({"name": n, "reason": reason})
    observed = None
    if example_inputs is not None and chosen:
        observed = observe_blocks(
            model,
            [c[1] for c in chosen],
            example_inputs,
            importance if isinstance(importance, str) else "l2",
        )
    groups: list[_Group] = []
    owned_outside = _owned_outside(model)
    for name, s, owner, attr, eligible in chosen:
        if observed is not None:
            order, _, same = observed[id(s)]
            if order != list(range(len(s))):
                report.refused.append(
                    {
                        "name": name,
                        "reason": (
                            f"on the example inputs its blocks ran in the order {order}, "
                            f"expected each once in order 0..{len(s) - 1}"
                        ),
                    }
                )
                continue
            if not all(same):
                odd = same.index(False)
                report.refused.append(
                    {
                        "name": name,
                        "reason": (
                            f"block {odd} returns no tensor of its input's shape on the example "
                            "inputs; removing it would change the next block's input"
                        ),
                    }
                )
                continue
        elif not runs_in_order(owner, attr, s):
            report.refused.append(
                {
                    "name": name,
                    "reason": (
                        f"the forward of {type(owner).__name__} does not visibly run "
                        f"'{attr}' block by block; pass example_inputs to check by running it"
                    ),
                }
            )
            continue
        unit_params = [
            sum(
                p.numel()
                for p in {id(p): p for p in b.parameters()}.values()
                if id(p) not in owned_outside[id(s)][i]
            )
            for i, b in enumerate(s)
        ]
        if callable(importance):
            scores = [
                call_importance(importance, name, i, dict(b.named_parameters()))
                for i, b in enumerate(s)
            ]
        elif observed is not None:
            scores = observed[id(s)][1]
        else:
            scores = [tensor_norm(list(b.parameters()), importance) for b in s]
        groups.append(_Group(name, s, "stack", len(s), unit_params, scores, eligible))
        if callable(importance):
            how = "the importance callable"
        elif observed is not None:
            how = f"the relative change ||f(x) - x|| / ||x|| ({importance}) on the example inputs"
        else:
            how = f"the {importance} norm of its parameters (no example inputs)"
        report.notes.append(f"{name}: blocks ranked by {how}")
    _choose(groups, amount, target_params, param_count(model), report)
    for g in groups:
        if g.remove:
            remove_blocks(model, g.name, g.module, g.remove, report)
    _runs("shrink layers", model, example_inputs)
    return model


def _owned_outside(model: nn.Module) -> dict[int, list[set[int]]]:
    """Per stack id, per block: ids of its parameters that something outside the block holds."""
    from torch import nn

    holders: dict[int, set[str]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        holders.setdefault(id(p), set()).add(pname)
    result: dict[int, list[set[int]]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList | nn.Sequential):
            per: list[set[int]] = []
            for i, b in enumerate(mod):
                key = list(mod._modules)[i]
                prefix = f"{name}.{key}." if name else f"{key}."
                per.append(
                    {
                        id(p)
                        for p in b.parameters()
                        if any(not h.startswith(prefix) for h in holders[id(p)])
                    }
                )
            result[id(mod)] = per
    return result
