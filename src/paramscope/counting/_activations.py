"""Activation memory and the KV cache: formulas from a transformer's config, and a measurement.

* **Training activations** (Korthikanti et al. 2022, "Reducing Activation Recomputation in
  Large Transformer Models", Table 2 and §4.3), bytes with 16-bit activations, per layer, for
  sequence ``s``, micro-batch ``b``, width ``h``, heads ``a``, tensor-parallel size ``t``:

  ====================================  ==========================
  no parallelism                        ``sbh(34 + 5as/h)``
  tensor parallel                       ``sbh(10 + 24/t + 5as/(ht))``
  tensor + sequence parallel            ``sbh/t · (34 + 5as/h)``
  tensor parallel + selective recompute ``sbh(10 + 24/t)``
  TP + SP + selective recompute         ``sbh · 34/t``
  full recompute                        ``2sbh`` (``/t`` with sequence parallelism)
  ====================================  ==========================

  Flash attention keeps no ``s × s`` matrix, so it drops the ``5as²b/t`` term just as
  selective recompute does. With ``p`` pipeline stages (1F1B schedule) the first stage holds
  ``L/p`` layers for ``p`` micro-batches in flight, ``L`` layers' worth in all (§4.2.3); it
  also holds the embedding dropout mask ``sbhp/t`` and the last stage the output layer norm,
  the logits' input and the fp32 cross-entropy logits ``4sbh/t · (1 + v/h)`` (§4.3).
* **KV cache**: keys and values of every attention layer, ``2 · kv_heads · head_dim`` values
  per token and layer (MHA: ``kv_heads = heads``; GQA: fewer; MQA: one); sliding-window
  layers hold at most ``window`` tokens; MLA (DeepSeek-V2/V3) caches the compressed latent
  ``kv_lora_rank + qk_rope_head_dim`` values per token and layer.
* **Measured**: :func:`measure_activations` runs forward and backward (on the meta device for a
  meta model: no memory) under a ``TorchDispatchMode`` that follows every tensor storage an op
  allocates until it is freed, and reports the peak and the module that holds the most.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._enums import StrEnum
from .._errors import ArgumentError, ParamscopeError
from .._moe import moe_config_from_hf

__all__ = [
    "KORTHIKANTI",
    "Recompute",
    "TransformerShape",
    "activation_bytes",
    "formula_gaps",
    "kv_cache_bytes",
    "measure_activations",
    "transformer_shape",
]

KORTHIKANTI = "Korthikanti et al. 2022, Reducing Activation Recomputation in Large Transformer "
KORTHIKANTI += "Models, Table 2 and §4.3"


class Recompute(StrEnum):
    """Activation recomputation (Korthikanti et al. 2022)."""

    NONE = "none"
    SELECTIVE = "selective"
    FULL = "full"


_ALIASES: dict[str, tuple[str, ...]] = {
    "layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden": ("hidden_size", "n_embd", "d_model", "dim"),
    "heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "vocab": ("vocab_size", "padded_vocab_size"),
    "ffn": ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"),
}


@dataclass(frozen=True)
class TransformerShape:
    """What the formulas need from a transformer's config (HF field names are read).

    Attributes:
        layers: decoder (or encoder) layers ``L``.
        hidden: width ``h``.
        heads: query heads ``a``.
        kv_heads: key/value heads (``heads`` for MHA, fewer for GQA, 1 for MQA).
        head_dim: width of one head.
        vocab: vocabulary ``v`` (0 when the config gives none).
        windows: per layer, the sliding window in tokens, ``None`` for full attention.
        mla: ``(kv_lora_rank, qk_rope_head_dim)`` for DeepSeek's multi-head latent attention.
        attention: ``"MHA"``, ``"GQA"``, ``"MQA"`` or ``"MLA"``.
        ffn: the MLP's intermediate width, ``None`` when the config gives none (GPT-2's
            ``n_inner: null`` means ``4h``).
        experts: ``(routed experts, experts per token)`` of a mixture of experts (either
            ``None`` when the config does not say), read as :func:`paramscope.count` reads
            them (:func:`paramscope._moe.moe_config_from_hf`); ``None`` for a dense model.
    """

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int = 0
    windows: tuple[int | None, ...] = ()
    mla: tuple[int, int] | None = None
    attention: str = "MHA"
    notes: list[str] = field(default_factory=list, compare=False)
    ffn: int | None = None
    experts: tuple[int | None, int | None] | None = None


def _config_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise ArgumentError(
        f"config: expected a mapping, a dataclass or a transformers config, found "
        f"{type(config).__name__}"
    )


def _get(d: dict[str, Any], what: str) -> int | None:
    for key in _ALIASES[what]:
        v = d.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def transformer_shape(config: Any) -> TransformerShape:
    """Read the shape of a transformer from its config.

    Args:
        config: a mapping with HF ``config.json`` keys, a zoo config dataclass or a
            transformers ``PretrainedConfig``. Read: ``num_hidden_layers``, ``hidden_size``,
            ``num_attention_heads`` (or GPT-2's ``n_layer``, ``n_embd``, ``n_head``),
            ``num_key_value_heads``, ``multi_query``, ``head_dim``, ``vocab_size``,
            ``sliding_window`` with ``use_sliding_window`` or ``layer_types``, and DeepSeek's
            ``kv_lora_rank`` / ``qk_rope_head_dim``.

    Returns:
        A :class:`TransformerShape`.

    Raises:
        ArgumentError: the config lacks the layers, width or heads.

    Example:
        >>> s = transformer_shape({"num_hidden_layers": 32, "hidden_size": 4096,
        ...                        "num_attention_heads": 32, "num_key_value_heads": 8})
        >>> s.attention, s.kv_heads, s.head_dim
        ('GQA', 8, 128)
    """
    d = _config_dict(config)
    moe = moe_config_from_hf(d)  # before text_config replaces d: it reads nested configs too
    if isinstance(d.get("text_config"), Mapping):  # multimodal: the language model
        d = {**d["text_config"]}
    got = {k: _get(d, k) for k in ("layers", "hidden", "heads")}
    missing = [_ALIASES[k][0] for k, v in got.items() if not v]
    if missing:
        raise ArgumentError(
            f"config: expected a transformer config with {', '.join(missing)}, found keys "
            f"{', '.join(sorted(d)[:12]) or 'none'}"
        )
    layers, hidden, heads = (int(got[k] or 0) for k in ("layers", "hidden", "heads"))
    kv = d.get("num_key_value_heads")
    if not isinstance(kv, int) or kv <= 0:
        kv = 1 if d.get("multi_query") else heads
    head_dim = d.get("head_dim")
    if not isinstance(head_dim, int) or head_dim <= 0:
        head_dim = hidden // heads
    window = d.get("sliding_window")
    windows: list[int | None] = [None] * layers
    notes: list[str] = []
    if isinstance(window, int) and window > 0 and d.get("use_sliding_window", True):
        types = d.get("layer_types")
        if isinstance(types, list) and len(types) == layers:
            windows = [window if t == "sliding_attention" else None for t in types]
        else:
            windows = [window] * layers
    mla = None
    rank, rope = d.get("kv_lora_rank"), d.get("qk_rope_head_dim")
    if isinstance(rank, int) and rank > 0 and isinstance(rope, int):
        mla = (rank, rope)
    kind = "MLA" if mla else "MQA" if kv == 1 and heads > 1 else "GQA" if kv < heads else "MHA"
    return TransformerShape(
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        vocab=_get(d, "vocab") or 0,
        windows=tuple(windows),
        mla=mla,
        attention=kind,
        notes=notes,
        ffn=_get(d, "ffn"),
        experts=None if moe is None or moe.experts == 1 else (moe.experts, moe.top_k),
    )


def formula_gaps(shape: TransformerShape) -> list[str]:
    """Where a transformer differs from the one Korthikanti et al.'s per-layer formula
    describes (GPT: multi-head attention, one MLP of width ``4h``), so that its activation
    figure is an estimate for this model.

    Args:
        shape: the transformer (:func:`transformer_shape`).

    Returns:
        One phrase per difference (empty when there is none the config shows).

    Example:
        >>> mixtral = transformer_shape({"num_hidden_layers": 32, "hidden_size": 4096,
        ...     "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
        ...     "num_local_experts": 8, "num_experts_per_tok": 2})
        >>> for gap in formula_gaps(mixtral):
        ...     print(gap)
        GQA: keys and values 1024 wide, not h = 4096
        MLP 14336 wide, not 4h = 16384
        a mixture of experts: top-2 of 8 experts per token, not one MLP
    """
    h = shape.hidden
    gaps = []
    if shape.attention != "MHA" or shape.heads * shape.head_dim != h:
        kv = shape.kv_heads * shape.head_dim
        gaps.append(
            f"{shape.attention}: keys and values {kv} wide, not h = {h}"
            if shape.attention in ("GQA", "MQA")
            else f"{shape.attention} attention, not multi-head attention of width h = {h}"
        )
    if shape.ffn is not None and shape.ffn != 4 * h:
        gaps.append(f"MLP {shape.ffn} wide, not 4h = {4 * h}")
    if shape.experts is not None:
        routed, top_k = shape.experts
        gaps.append(
            f"a mixture of experts: top-{top_k or '?'} of {routed or '?'} experts per token, "
            "not one MLP"
        )
    return gaps


def activation_bytes(
    shape: TransformerShape,
    *,
    batch: int = 1,
    seq: int,
    tp: int = 1,
    sp: bool = False,
    pp: int = 1,
    recompute: str | Recompute = Recompute.NONE,
    flash: bool = False,
) -> dict[str, Any]:
    """Training activation bytes per GPU by Korthikanti et al. 2022 (16-bit activations).

    Args:
        shape: the transformer (:func:`transformer_shape`).
        batch: micro-batch size ``b``.
        seq: sequence length ``s``.
        tp: tensor-parallel size ``t``; must divide the heads.
        sp: sequence parallelism (needs ``tp``; shards the ``10sbh`` of layer norms and
            dropouts too).
        pp: pipeline stages ``p``; must divide the layers. Reported for the first stage.
        recompute: ``none``, ``selective`` (recompute attention's ``s × s`` part) or ``full``
            (keep only each layer's input).
        flash: flash attention (no ``s × s`` matrix kept).

    Returns:
        ``per_layer``, ``layers`` (all layers held by one GPU), ``embedding``, ``output``,
        ``total`` in bytes, and ``formula`` (the per-layer formula used, in words).

    Raises:
        ArgumentError: ``tp`` does not divide the heads, ``pp`` does not divide the layers,
            a non-positive size or an unknown ``recompute``.

    Example:
        >>> gpt3 = TransformerShape(layers=96, hidden=12288, heads=96, kv_heads=96,
        ...                         head_dim=128)
        >>> activation_bytes(gpt3, seq=2048)["per_layer"]  # 2.869 GB
        2868903936
    """
    for name, v in (("batch", batch), ("seq", seq), ("tp", tp), ("pp", pp)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ArgumentError(f"activations: {name}={v!r}: expected a positive int")
    try:
        rc = Recompute(str(recompute).lower())
    except ValueError:
        raise ArgumentError(
            f"activations: recompute={recompute!r}: expected 'none', 'selective' or 'full'"
        ) from None
    if shape.heads % tp:
        raise ArgumentError(
            f"activations: tensor parallel tp={tp} does not divide the {shape.heads} attention "
            f"heads; choose a divisor of {shape.heads}"
        )
    if shape.layers % pp:
        raise ArgumentError(
            f"activations: pipeline stages pp={pp} do not divide the {shape.layers} layers; "
            f"choose a divisor of {shape.layers}"
        )
    s, b, h, a, t = seq, batch, shape.hidden, shape.heads, tp
    sbh = s * b * h
    t_sp = t if sp else 1
    if rc is Recompute.FULL:
        per_layer = 2 * sbh // t_sp
        formula = "2sbh" + ("/t" if sp else "") + " (full recompute: each layer's input)"
    else:
        keep_attn = not (rc is Recompute.SELECTIVE or flash)
        num = sbh * (10 * t + 24 * t_sp)  # sbh(10/t_sp + 24/t), over t·t_sp
        per_layer = num // (t * t_sp)
        if keep_attn:
            per_layer += 5 * a * s * s * b // t
        terms = ("10" if not sp else "10/t") + " + " + ("24" if t == 1 else "24/t")
        if keep_attn:
            terms += " + 5as/h" + ("t" if t > 1 else "")
        why = "selective recompute" if rc is Recompute.SELECTIVE else "flash attention"
        formula = f"sbh({terms})" + ("" if keep_attn else f" ({why}: no 5as²b term)")
    held_layers = (shape.layers // pp) * pp  # 1F1B: L/p layers × p micro-batches in flight
    embedding = sbh * pp // t_sp  # embedding dropout mask, 1 byte, p micro-batches
    output = 4 * sbh * (h + shape.vocab) // (h * t_sp)  # 4sbh/t · (1 + v/h)
    layers_bytes = per_layer * held_layers
    return {
        "per_layer": per_layer,
        "layers": layers_bytes,
        "embedding": embedding,
        "output": output,
        "total": layers_bytes + embedding + output,
        "formula": formula,
    }


def kv_cache_bytes(
    shape: TransformerShape, *, context: int, batch: int = 1, bytes_per_value: int = 2
) -> dict[str, int]:
    """KV cache bytes for ``batch`` sequences of ``context`` tokens.

    Args:
        shape: the transformer (:func:`transformer_shape`).
        context: tokens per sequence.
        batch: sequences.
        bytes_per_value: bytes of one cached value (2 for fp16/bf16).

    Returns:
        ``per_token`` (a token in every layer, before any window bounds it),
        ``per_sequence`` (``context`` tokens, windows applied) and ``total`` (× ``batch``).

    Example:
        >>> llama2 = TransformerShape(layers=32, hidden=4096, heads=32, kv_heads=32,
        ...                           head_dim=128, windows=(None,) * 32)
        >>> kv_cache_bytes(llama2, context=4096)["per_token"]
        524288
    """
    if shape.mla is not None:
        per_layer_token = (shape.mla[0] + shape.mla[1]) * bytes_per_value
    else:
        per_layer_token = 2 * shape.kv_heads * shape.head_dim * bytes_per_value
    windows = shape.windows or (None,) * shape.layers
    per_seq = sum(per_layer_token * (context if w is None else min(context, w)) for w in windows)
    return {
        "per_token": per_layer_token * shape.layers,
        "per_sequence": per_seq,
        "total": per_seq * batch,
    }


def fit_context(
    shape: TransformerShape, free: int, *, batch: int = 1, bytes_per_value: int = 2
) -> int | None:
    """The longest context whose KV cache for ``batch`` sequences fits in ``free`` bytes.

    Args:
        shape: the transformer.
        free: bytes left next to the weights.
        batch: sequences.
        bytes_per_value: bytes of one cached value.

    Returns:
        Tokens (0 when not even one fits), or ``None`` when every layer has a sliding window
        whose full cache fits: any context does.

    Example:
        >>> s = TransformerShape(layers=1, hidden=8, heads=2, kv_heads=2, head_dim=4)
        >>> fit_context(s, 160)  # 2·2·4·2 = 32 bytes a token
        5
    """
    if free <= 0:
        return 0

    def cost(n: int) -> int:
        return kv_cache_bytes(shape, context=n, batch=batch, bytes_per_value=bytes_per_value)[
            "total"
        ]

    windows = shape.windows or (None,) * shape.layers
    if windows and all(w is not None for w in windows):
        widest = max(w for w in windows if w is not None)
        if cost(widest) <= free:
            return None
    lo, hi = 0, 1
    while cost(hi) <= free:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= free else (lo, mid)
    return lo


def measure_activations(
    module: Any,
    inputs: Any,
    *,
    backward: bool = True,
    kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure activation memory: run forward (and backward) and follow every tensor storage
    the ops allocate until it is freed.

    A meta model with meta inputs runs with no memory at all (what the meta device computes
    is shapes, and every storage still has its size). Parameters and the inputs exist
    before the run and are not counted; gradients are allocated in backward and are.

    Args:
        module: a ``torch.nn.Module``.
        inputs: a tensor, or a tuple of positional tensors.
        backward: also run backward on the sum of the (first) output.
        kwargs: keyword inputs of the forward (``{"use_cache": True}``).

    Returns:
        ``saved`` (bytes alive at the end of forward: what autograd keeps for backward, plus
        the output), ``peak`` (highest live bytes over forward and backward), ``peak_phase``
        (``forward`` or ``backward``), ``by_module`` (bytes alive at the end of forward,
        per module that allocated them) and ``top_module`` (the one holding the most).

    Example:
        >>> import torch
        >>> with torch.device("meta"):
        ...     m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
        ...     r = measure_activations(m, torch.zeros(4, 8))
        >>> r["saved"]  # the ReLU output 4·16·4, kept for backward; Linear keeps its input
        256
    """
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    state: dict[str, Any] = {"live": 0, "peak": 0, "phase": "forward", "peak_phase": "forward"}
    owner: dict[int, tuple[str, int]] = {}
    stack: list[str] = []
    seen: set[int] = set()

    def free(key: int) -> None:
        _name, n = owner.pop(key, ("", 0))
        seen.discard(key)
        state["live"] -= n

    class _Track(TorchDispatchMode):
        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if not isinstance(t, torch.Tensor):
                    continue
                st = t.untyped_storage()
                key = id(st)
                if key in seen or st._cdata in existing:
                    continue
                try:
                    weakref.finalize(st, free, key)
                except TypeError:
                    continue
                n = st.nbytes()
                seen.add(key)
                owner[key] = (stack[-1] if stack else "", n)
                state["live"] += n
                if state["live"] > state["peak"]:
                    state["peak"], state["peak_phase"] = state["live"], state["phase"]
            return out

    names = {id(m): n for n, m in module.named_modules()}
    hooks = []
    for sub in module.modules():
        name = names[id(sub)] or type(sub).__name__
        hooks.append(sub.register_forward_pre_hook(_push(stack, name)))
        hooks.append(sub.register_forward_hook(_pop(stack)))
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    kw = dict(kwargs or {})
    before = [*module.parameters(), *module.buffers(), *tree_leaves(args), *tree_leaves(kw)]
    existing = {t.untyped_storage()._cdata for t in before if isinstance(t, torch.Tensor)}
    try:
        with _Track():
            out = module(*args, **kw)
            first = out if isinstance(out, torch.Tensor) else _first_tensor(out)
            by_module: dict[str, int] = {}
            for name, n in owner.values():
                by_module[name] = by_module.get(name, 0) + n
            saved = state["live"]
            state["phase"] = "backward"
            if backward and first is not None and first.requires_grad:
                first.sum().backward()
    finally:
        for hk in hooks:
            hk.remove()
    top = max(by_module.items(), key=lambda kv: kv[1]) if by_module else ("", 0)
    return {
        "saved": saved,
        "peak": state["peak"],
        "peak_phase": state["peak_phase"],
        "by_module": dict(sorted(by_module.items(), key=lambda kv: -kv[1])),
        "top_module": top[0],
    }


def _push(stack: list[str], name: str) -> Any:
    def hook(*_: Any) -> None:
        stack.append(name)

    return hook


def _pop(stack: list[str]) -> Any:
    def hook(*_: Any) -> None:
        if stack:
            stack.pop()

    return hook


def _first_tensor(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


_LEFT_OUT = (
    "framework workspace (cuBLAS, cuDNN, attention kernels), allocator fragmentation and the "
    "CUDA context"
)


def config_of(source: Any, manifest: Any = None) -> Any:
    """The transformer config behind a source, or ``None``: a module's ``config``, or the
    ``config.json`` named by the source or lying in its folder.

    Args:
        source: what :func:`estimate_memory` was given.
        manifest: its manifest (its ``source`` is tried too).

    Returns:
        A config object or dict, or ``None``.

    Example:
        >>> config_of(object()) is None
        True
    """
    import json
    import os
    from pathlib import Path

    cfg = getattr(source, "config", None)
    if cfg is not None and not isinstance(cfg, (str, os.PathLike)):
        return cfg
    for where in (source, getattr(manifest, "source", None)):
        if isinstance(where, str) and where.startswith("zoo:"):
            from .._targets import resolve_target

            return getattr(resolve_target(where), "config", None)
        if not isinstance(where, (str, os.PathLike)):
            continue
        p = Path(where)
        for cand in (p, p / "config.json", p.parent / "config.json"):
            if cand.name == "config.json" and cand.is_file():
                try:
                    data = json.loads(cand.read_text())
                except (OSError, ValueError):
                    return None
                return data if isinstance(data, dict) else None
    return None


def memory_terms(
    source: Any,
    manifest: Any,
    *,
    resident: int,
    run_bits: int | None,
    training: bool,
    config: Any,
    batch: int,
    seq: int | None,
    tp: int,
    sp: bool,
    pp: int,
    recompute: str | Recompute,
    flash: bool,
    context: int | None,
    fit: int | str | None,
) -> dict[str, Any]:
    """The activation and KV-cache terms of :func:`estimate_memory`.

    Args:
        source: the estimate's source.
        manifest: its manifest.
        resident: bytes of weights and buffers on one GPU (what ``fit`` must leave room for).
        run_bits: the run dtype's bits, ``None`` when weights run as stored.
        training: training (activations) or inference (KV cache).
        config: an explicit config (else found from the source).
        batch, seq, tp, sp, pp, recompute, flash: see :func:`activation_bytes`.
        context: tokens per sequence for the KV cache.
        fit: a memory budget (``"80GB"`` or bytes): find the longest context, or with
            ``context`` the largest batch, whose cache fits next to the weights.

    Returns:
        ``activations`` and ``kv_cache`` bytes, ``details`` (formula, per-layer and per-token
        figures, the fit) and ``notes``.

    Example:
        >>> memory_terms(None, None, resident=0, run_bits=None, training=False, config=None,
        ...              batch=1, seq=None, tp=1, sp=False, pp=1, recompute="none",
        ...              flash=False, context=None, fit=None)["kv_cache"]
        0
    """
    from .._units import parse_size

    out: dict[str, Any] = {"activations": 0, "kv_cache": 0, "details": {}, "notes": []}
    wants_act = training and seq is not None
    wants_kv = not training and (context is not None or fit is not None)
    parallel = tp != 1 or sp or pp != 1 or str(recompute).lower() != "none" or flash
    if not training and (seq is not None or parallel):
        raise ArgumentError(
            "estimate_memory: seq/tp/sp/pp/recompute/flash are training activation options; "
            "add training=True (--train), or use context (--context) for inference"
        )
    if training and (context is not None or fit is not None):
        raise ArgumentError(
            "estimate_memory: context/fit size the inference KV cache; drop training "
            "(--train), or use seq (--seq) for training activations"
        )
    if training and parallel and seq is None:
        raise ArgumentError(
            "estimate_memory: tp/sp/pp/recompute/flash shape the training activations: give "
            "seq (--seq) too"
        )
    if sp and tp == 1:
        raise ArgumentError("estimate_memory: sp=True (sequence parallel) needs tp > 1, found tp=1")
    if not (wants_act or wants_kv):
        return out
    cfg = config if config is not None else config_of(source, manifest)
    if cfg is None:
        raise ArgumentError(
            f"estimate_memory: {'activations' if wants_act else 'the KV cache'} needs the "
            "transformer's config: expected a zoo: or config.json target, a module with a "
            "config, or config=; found none for this source"
        )
    shape = transformer_shape(cfg)
    if wants_act:
        assert seq is not None
        act = activation_bytes(
            shape, batch=batch, seq=seq, tp=tp, sp=sp, pp=pp, recompute=recompute, flash=flash
        )
        out["activations"] = act["total"]
        gaps = formula_gaps(shape)
        out["details"]["activations"] = {**act, "source": KORTHIKANTI, "estimate_because": gaps}
        out["notes"].append(
            f"activations: a formula, {KORTHIKANTI}: per layer {act['formula']}, 16-bit "
            f"activations, s={seq} b={batch} h={shape.hidden} a={shape.heads} "
            f"L={shape.layers} t={tp}{' with sequence parallel' if sp else ''}"
            f"{f', first of {pp} pipeline stages' if pp > 1 else ''}; plus embedding dropout "
            "sbhp/t and output 4sbh/t·(1 + v/h)"
            + (
                "; tp/pp divide the activations only: weights and states per GPU follow "
                "zero_stage and num_gpus"
                if tp > 1 or pp > 1
                else ""
            )
        )
        if gaps:
            out["notes"].append(
                "activations are an estimate for this model: the formula describes GPT "
                "(multi-head attention, one 4h-wide MLP, GELU) and this model has "
                + "; ".join(gaps)
                + " (the MLP's gating is not read from the config); --measured runs the model "
                "on meta and measures its activations"
            )
        return out
    d = _config_dict(cfg)
    nbytes, why = 2, "16-bit (the config gives no dtype)"
    if run_bits:
        nbytes, why = max(run_bits // 8, 1), "the run dtype"
    else:
        from .._dtypes import parse_dtype

        for key in ("dtype", "torch_dtype"):
            v = d.get(key)
            if isinstance(v, str):
                try:
                    dt = parse_dtype(v.replace("torch.", ""))
                except ParamscopeError:
                    continue
                nbytes, why = max(dt.bits // 8, 1), f"the config's {key} {v}"
                break
    ctx = context if context is not None else 0
    kv = kv_cache_bytes(shape, context=ctx, batch=batch, bytes_per_value=nbytes)
    info: dict[str, Any] = {
        "attention": shape.attention,
        "per_token": kv["per_token"],
        "per_sequence": kv["per_sequence"],
        "context": context,
        "batch": batch,
        "bytes_per_value": nbytes,
    }
    what = (
        f"(kv_lora_rank {shape.mla[0]} + qk_rope_head_dim {shape.mla[1]}) × {shape.layers} layers"
        if shape.mla
        else f"2 × {shape.kv_heads} KV heads × {shape.head_dim} × {shape.layers} layers"
    )
    out["notes"].append(
        f"kv_cache: exact for the config's shape ({shape.attention}): {what} × {nbytes} bytes "
        f"({why}) = {kv['per_token']:,} bytes a token"
    )
    windowed = sorted({w for w in shape.windows if w is not None})
    if windowed:
        out["notes"].append(
            f"kv_cache: {sum(w is not None for w in shape.windows)} of {shape.layers} layers "
            f"use a sliding window of {', '.join(map(str, windowed))} tokens and hold no more"
        )
    if shape.mla:
        out["notes"].append(
            "kv_cache: MLA caches the compressed latent (DeepSeek-V2 §2.1.2, what its "
            "inference code and vLLM hold); transformers' implementation caches the "
            "decompressed keys and values, which is larger"
        )
    if fit is not None:
        budget = parse_size(fit)
        free = budget - resident
        if free <= 0:  # nothing fits: say so, rather than "batch 0 fits" / "0 tokens fit"
            out["notes"].append(
                f"fit: nothing fits in {budget:,} bytes: the weights and buffers alone take "
                f"{resident:,} bytes (at their stored size unless a dtype is given; a smaller "
                "--dtype, a quantised checkpoint or more GPUs would help)"
            )
        if context is None:
            best = fit_context(shape, free, batch=batch, bytes_per_value=nbytes)
            info["fit"] = {"budget": budget, "free": max(free, 0), "context": best}
            ctx = best if best is not None else max(windowed)
            if free > 0:
                out["notes"].append(
                    f"fit: {'any context' if best is None else f'{best:,} tokens'} × batch "
                    f"{batch} fit in {budget:,} bytes next to {resident:,} bytes of weights "
                    "and buffers (at their stored size unless a dtype is given)"
                )
        else:
            per_seq = kv["per_sequence"]
            best_b = max(free, 0) // per_seq if per_seq else 0
            info["fit"] = {"budget": budget, "free": max(free, 0), "batch": best_b}
            batch = best_b
            if free > 0:
                out["notes"].append(
                    f"fit: batch {best_b:,} of {context:,} tokens fits in {budget:,} bytes "
                    f"next to {resident:,} bytes of weights and buffers"
                )
        kv = kv_cache_bytes(shape, context=ctx, batch=batch, bytes_per_value=nbytes)
        info.update(context=ctx, batch=batch, per_sequence=kv["per_sequence"])
    out["kv_cache"] = kv["total"]
    out["details"]["kv_cache"] = info
    return out


def terms_note(has_act: bool, has_kv: bool) -> dict[str, Any]:
    """Which terms of a memory estimate are exact, which a formula, which left out.

    Args:
        has_act: activations were estimated.
        has_kv: the KV cache was estimated.

    Returns:
        ``{"exact": [...], "formula": {...}, "left_out": [...]}``.

    Example:
        >>> terms_note(False, True)["exact"][-1]
        'kv_cache'
    """
    exact = ["weights", "buffers", "gradients", "optimizer_states", "master_weights"]
    if has_kv:
        exact.append("kv_cache")
    left = [_LEFT_OUT]
    if not has_act:
        left.insert(0, "activations")
    return {
        "exact": exact,
        "formula": {"activations": KORTHIKANTI} if has_act else {},
        "left_out": left,
    }
