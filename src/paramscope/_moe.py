"""Mixture of experts: total and **active parameters per token**, from names, shapes and a config.

A token passes through everything dense (embeddings, attention, norms, routers, dense MLP
layers, the output head) and through the shared experts of each MoE layer, but only through
``top_k`` of its ``experts`` routed experts. So, per MoE layer::

    active = everything else + routed-expert params × top_k / experts

The routed experts are found by name, in every layout checkpoints use:

* one entry per expert: ``….experts.N.…`` (Mixtral ``block_sparse_moe.experts.3.w1.weight``,
  Qwen / DeepSeek ``mlp.experts.17.gate_proj.weight``) and old GGUF ``blk.N.ffn_gate.M.weight``;
* fused (stacked) experts holding all of a layer's experts in one tensor, the expert index
  outermost: ``….experts.gate_up_proj`` ``[E, 2·I, H]`` (transformers 5, gpt-oss, MXFP4
  ``…_blocks``), GGUF ``blk.N.ffn_gate_exps.weight`` (numpy order ``[E, I, H]``).

Shared experts (``shared_expert``, ``shared_experts``, GGUF ``*_shexp``) count in full, as
do routers and gates. ``top_k`` (and the expert count, when the names cannot tell it) comes
from a :class:`MoEConfig`: the model's ``config.json`` (``num_experts_per_tok``,
``num_experts_per_token``, ``experts_per_token``, ``moe_topk``, ``moe_top_k``), GGUF metadata
(``{arch}.expert_used_count``), or a module's ``model.config``. Without it the experts are
still reported, and a note says the active count cannot be computed; nothing is guessed.

The convention: ``active_params`` counts the input-embedding matrix (the published figures
do: Mixtral 8×7B, 12.9B active); ``active_params_without_embedding`` leaves the embedding
lookup out (one row per token is read, not the matrix), unless the matrix is tied to the
output head, which every token uses in full.

Quantised experts count their logical parameters (what the counter passes in).

This module is core: no torch, no numpy, no io.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ._manifest import Entry

__all__ = [
    "TOP_K_DEFAULTS",
    "MoE",
    "MoEConfig",
    "MoETally",
    "logical_shape",
    "moe_config_from_gguf",
    "moe_config_from_hf",
    "moe_config_of_module",
]

#: config.json keys giving the routed experts a token uses, in the order they are looked for.
TOP_K_KEYS = (
    "num_experts_per_tok",
    "num_experts_per_token",
    "experts_per_token",
    "moe_topk",
    "moe_top_k",
)
#: config.json keys giving the routed experts per MoE layer.
EXPERT_KEYS = (
    "num_local_experts",
    "n_routed_experts",
    "num_experts",
    "moe_num_experts",
    "num_routed_experts",
)
#: config.json keys giving the shared experts per MoE layer.
SHARED_KEYS = ("n_shared_experts", "num_shared_experts")
#: Sub-dicts a config may nest its language model's keys in (multimodal, DBRX).
_NESTED = ("text_config", "ffn_config")

#: ``num_experts_per_tok`` of transformers' config classes when config.json leaves it out
#: (checked against transformers by tests/test_moe.py); DeepSeek-V2's default is ``None``.
TOP_K_DEFAULTS: dict[str, int] = {
    "mixtral": 2,
    "qwen2_moe": 4,
    "qwen3_moe": 8,
    "deepseek_v3": 8,
    "gpt_oss": 4,
}
_CONFIG_CLASSES = {
    "mixtral": "MixtralConfig",
    "qwen2_moe": "Qwen2MoeConfig",
    "qwen3_moe": "Qwen3MoeConfig",
    "deepseek_v3": "DeepseekV3Config",
    "gpt_oss": "GptOssConfig",
}


@dataclass(frozen=True)
class MoEConfig:
    """What a config or file metadata says about a model's experts.

    Attributes:
        top_k: routed experts used per token, or ``None`` when not said.
        experts: routed experts per MoE layer, when said.
        shared: shared experts per MoE layer, when said.
        source: where it was read (``"config.json"``, ``"GGUF metadata"``, ``"model.config"``).
        top_k_from: the key ``top_k`` came from (``"num_experts_per_tok"``), or the words
            saying it is a config class's default.
        tied_embeddings: whether the input embedding is the output head too, when said.
        problem: why ``top_k`` could not be read, when it could not.
    """

    top_k: int | None
    experts: int | None = None
    shared: int | None = None
    source: str = "config.json"
    top_k_from: str | None = None
    tied_embeddings: bool | None = None
    problem: str | None = None


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    if isinstance(v, list) and v and all(isinstance(x, int) and x == v[0] for x in v):
        return int(v[0])  # a per-layer list with one value
    return None


def moe_config_from_hf(data: Mapping[str, Any], source: str = "config.json") -> MoEConfig | None:
    """The experts facts of a Hugging Face config (``config.json`` as a dict).

    Args:
        data: the parsed config.
        source: what to call it in notes.

    Returns:
        A :class:`MoEConfig`, or ``None`` when the config names no experts and no top-k.

    Example:
        >>> c = moe_config_from_hf({"model_type": "mixtral", "num_local_experts": 8,
        ...                         "num_experts_per_tok": 2})
        >>> c.top_k, c.experts, c.top_k_from
        (2, 8, 'num_experts_per_tok')
        >>> moe_config_from_hf({"model_type": "llama"}) is None
        True
    """
    scopes = [data] + [data[k] for k in _NESTED if isinstance(data.get(k), Mapping)]
    top_k = experts = shared = None
    top_key: str | None = None
    problem: str | None = None
    for scope in scopes:
        for key in TOP_K_KEYS:
            if top_key is None and scope.get(key) is not None:
                top_k = _int(scope[key])
                top_key = key
                if top_k is None or top_k < 1:
                    problem = f"{source} {key!r} is {scope[key]!r}, not a positive integer"
                    top_k = None
        for key in EXPERT_KEYS:
            if experts is None and _int(scope.get(key)) is not None:
                experts = _int(scope.get(key))
        for key in SHARED_KEYS:
            if shared is None and _int(scope.get(key)) is not None:
                shared = _int(scope.get(key))
    model_type = data.get("model_type")
    if shared is None and model_type == "qwen2_moe":
        shared = 1 if _int(data.get("shared_expert_intermediate_size", 1)) else 0
    if top_k is None and top_key is None and model_type in TOP_K_DEFAULTS:
        top_k = TOP_K_DEFAULTS[str(model_type)]
        top_key = (
            f"{_CONFIG_CLASSES[str(model_type)]}'s default (no num_experts_per_tok in {source})"
        )
    if top_key is None and experts is None:
        return None
    if top_k is None and problem is None:
        problem = f"{source} gives no top-k ({', '.join(TOP_K_KEYS)})"
    tied = data.get("tie_word_embeddings")
    return MoEConfig(
        top_k=top_k,
        experts=experts if experts and experts > 0 else None,
        shared=shared,
        source=source,
        top_k_from=top_key if top_k is not None else None,
        tied_embeddings=tied if isinstance(tied, bool) else None,
        problem=problem,
    )


def moe_config_from_gguf(metadata: Mapping[str, Any]) -> MoEConfig | None:
    """The experts facts of a GGUF file's metadata (``{arch}.expert_count``,
    ``{arch}.expert_used_count``, ``{arch}.expert_shared_count``).

    Args:
        metadata: the file's key → value metadata (values as read, or as strings).

    Returns:
        A :class:`MoEConfig` (source ``"GGUF metadata"``), or ``None`` when it names no experts.

    Example:
        >>> c = moe_config_from_gguf({"general.architecture": "llama",
        ...                           "llama.expert_count": 8, "llama.expert_used_count": 2})
        >>> c.top_k, c.experts, c.top_k_from
        (2, 8, 'llama.expert_used_count')
    """
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        return None
    experts = _int(metadata.get(f"{arch}.expert_count"))
    used_key = f"{arch}.expert_used_count"
    top_k = _int(metadata.get(used_key))
    shared = _int(metadata.get(f"{arch}.expert_shared_count"))
    if experts is None and top_k is None:
        return None
    return MoEConfig(
        top_k=top_k if top_k else None,
        experts=experts if experts else None,
        shared=shared,
        source="GGUF metadata",
        top_k_from=used_key if top_k else None,
        problem=None if top_k else f"GGUF metadata gives no {used_key}",
    )


def moe_config_of_module(model: Any) -> MoEConfig | None:
    """The experts facts of a model's attached config (``model.config``, transformers' style).

    Args:
        model: any object; only its ``config`` attribute is read (``to_dict()`` or a Mapping).

    Returns:
        A :class:`MoEConfig` (source ``"model.config"``), or ``None``.

    Example:
        >>> class M: config = {"num_local_experts": 4, "num_experts_per_tok": 1}
        >>> moe_config_of_module(M()).top_k
        1
    """
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        to_dict = getattr(cfg, "to_dict", None)
        try:
            cfg = to_dict() if callable(to_dict) else None
        except Exception:  # a foreign object's to_dict: no config then
            cfg = None
    if not isinstance(cfg, Mapping):
        return None
    return moe_config_from_hf(cfg, "model.config")


def logical_shape(e: Entry) -> tuple[int, ...]:
    """The shape an entry stands for (numpy order): a quantised layout's logical shape, else
    its stored shape.

    Args:
        e: the entry.

    Returns:
        The shape.

    Example:
        >>> from paramscope import DType, Entry
        >>> logical_shape(Entry("w", (2, 3), DType.F32))
        (2, 3)
    """
    extra = e.extra
    if extra:
        for key in ("quant_layout", "quant", "gguf"):
            rec = extra.get(key)
            if isinstance(rec, Mapping) and isinstance(rec.get("shape"), list):
                return tuple(int(d) for d in rec["shape"])
    return e.shape


# --- classifying entries ---------------------------------------------------------------------

#: One entry per expert: ``<block>experts.<N>.<rest>`` and old GGUF ``blk.L.ffn_up.<N>.weight``.
_PER_EXPERT = re.compile(r"^(?P<block>(?:.*\.)?experts)\.(?P<i>\d+)\.")
_GGUF_PER_EXPERT = re.compile(r"^(?P<block>blk\.\d+)\.ffn_(?:gate|up|down)\.(?P<i>\d+)\.")
#: All of a layer's experts in one tensor: ``<block>experts.<not a number>`` and GGUF ``*_exps``.
_FUSED = re.compile(r"^(?P<block>(?:.*\.)?experts)\.(?!\d+\.)")
_GGUF_FUSED = re.compile(r"^(?P<block>blk\.\d+)\.[^.]*_exps(?:\.|$)")
_SHARED = re.compile(r"(?:^|\.)(?:shared_experts?|[^.]*_shexp)(?:\.|$)")
#: Input embeddings (the lookup table).
_EMBED = re.compile(
    r"(?:^|\.)(?:embed_tokens|tok_embeddings|wte|word_embeddings|token_embd)\.weight$"
)


@dataclass
class _Block:
    fused: bool
    params: int = 0
    indices: set[int] = field(default_factory=set)
    lead: set[int] = field(default_factory=set)  # fused tensors' outermost dims


@dataclass(frozen=True)
class MoE:
    """The experts of a model and its active parameters per token.

    Attributes:
        experts: routed experts per MoE layer.
        top_k: routed experts used per token, ``None`` when unknown.
        shared_experts: shared experts per MoE layer when a config says, else ``None``.
        moe_layers: MoE layers (expert blocks) found.
        routed_params: parameters of all routed experts.
        shared_params: parameters of the shared experts (counted in full).
        embedding_params: parameters of the input embedding.
        active_params: parameters a token uses (everything dense, embedding included, +
            shared experts + ``top_k`` routed experts per layer), ``None`` when unknown.
        active_params_without_embedding: the same without the input-embedding lookup (equal
            to ``active_params`` when the embedding is tied to the output head).
        source: where ``top_k`` came from, in words.
        layout: how the experts are stored (``"per-expert entries"``, ``"fused experts"``).
    """

    experts: int | None
    top_k: int | None
    shared_experts: int | None
    moe_layers: int
    routed_params: int
    shared_params: int
    embedding_params: int
    active_params: int | None
    active_params_without_embedding: int | None
    source: str | None
    layout: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``count --json``'s ``moe``).

        Returns:
            The fields as a dict.
        """
        return {
            "experts": self.experts,
            "top_k": self.top_k,
            "shared_experts": self.shared_experts,
            "moe_layers": self.moe_layers,
            "routed_params": self.routed_params,
            "shared_params": self.shared_params,
            "embedding_params": self.embedding_params,
            "active_params": self.active_params,
            "active_params_without_embedding": self.active_params_without_embedding,
            "source": self.source,
            "layout": self.layout,
        }


class MoETally:
    """Counts routed and shared expert parameters as the counter walks the entries.

    Call :meth:`add` for every stored parameter with its logical count, then :meth:`result`.
    Costs one substring test per entry, and a regex only for names holding ``exp``.

    Example:
        >>> t = MoETally()
        >>> t.add("l.0.experts.gate_up_proj", (4, 6, 8), 192)
        >>> t.add("l.0.gate.weight", (4, 8), 32)
        >>> moe, notes = t.result(224, MoEConfig(top_k=1))
        >>> moe.active_params, moe.routed_params
        (80, 192)
    """

    def __init__(self) -> None:
        self._blocks: dict[str, _Block] = {}
        self.shared = 0
        self.embedding = 0
        self._embed_names: list[str] = []

    def add(self, name: str, shape: tuple[int, ...], n: int) -> None:
        """Record one stored parameter.

        Args:
            name: its name.
            shape: its logical shape (numpy order).
            n: its logical parameter count.
        """
        if ("embd" in name or "embed" in name or "wte" in name) and _EMBED.search(name):
            self.embedding += n
            self._embed_names.append(name)
            return
        if "exp" not in name:
            return
        if _SHARED.search(name):
            self.shared += n
            return
        mt = _PER_EXPERT.match(name) or _GGUF_PER_EXPERT.match(name)
        if mt is not None:
            b = self._blocks.setdefault(mt["block"], _Block(fused=False))
            b.indices.add(int(mt["i"]))
            b.params += n
            return
        mt = _FUSED.match(name) or _GGUF_FUSED.match(name)
        if mt is not None:
            b = self._blocks.setdefault(mt["block"], _Block(fused=True))
            b.params += n
            if len(shape) >= 3:
                b.lead.add(shape[0])

    @property
    def found(self) -> bool:
        """Whether any routed expert was seen."""
        return bool(self._blocks)

    def result(
        self,
        params: int,
        config: MoEConfig | None,
        tied_names: frozenset[str] = frozenset(),
    ) -> tuple[MoE | None, list[str]]:
        """The :class:`MoE` of what was added, and the notes to show.

        Args:
            params: the model's total parameters (ties once).
            config: what the config or file metadata says, if anything.
            tied_names: names that are part of a tie (an embedding tied to the head).

        Returns:
            ``(moe, notes)``; ``moe`` is ``None`` when no routed expert was found.
        """
        if not self._blocks:
            return None, []
        notes: list[str] = []
        top_k = config.top_k if config is not None else None
        cfg_experts = config.experts if config is not None else None
        routed = sum(b.params for b in self._blocks.values())
        counts: list[int] = []
        active_routed = Fraction(0)
        unknown: list[str] = []
        for block, b in self._blocks.items():
            if b.fused:
                e = cfg_experts
                if len(b.lead) == 1:
                    lead = next(iter(b.lead))
                    if e is not None and e != lead:
                        notes.append(
                            f"{block}: {config.source if config else ''} says {e} experts, "
                            f"the fused tensors hold {lead}; counted {lead}"
                        )
                    e = lead
                elif len(b.lead) > 1:
                    e = None
            else:
                e = len(b.indices)
                if cfg_experts is not None and cfg_experts != e:
                    notes.append(
                        f"{block}: {e} experts stored, {config.source if config else ''} says "
                        f"{cfg_experts}; counted the {e} stored"
                    )
            if e is None or e < 1:
                unknown.append(block)
                continue
            counts.append(e)
            if top_k is not None:
                active_routed += Fraction(b.params * min(top_k, e), e)
        experts = max(set(counts), key=counts.count) if counts else cfg_experts
        layout = (
            "fused experts"
            if all(b.fused for b in self._blocks.values())
            else "per-expert entries"
            if not any(b.fused for b in self._blocks.values())
            else "per-expert entries and fused experts"
        )
        tied = any(n in tied_names for n in self._embed_names) or (
            config is not None and config.tied_embeddings is True
        )
        embed_lookup = 0 if tied else self.embedding
        active: int | None = None
        source: str | None = None
        if top_k is None:
            why = (
                config.problem
                if config is not None and config.problem
                else ("no config.json (or GGUF metadata) gives the routed experts per token")
            )
            notes.append(
                f"mixture of experts: {len(self._blocks)} MoE layers, {routed:,} routed-expert "
                f"params; active parameters per token cannot be computed: {why}"
            )
        elif unknown:
            notes.append(
                f"mixture of experts: the expert count of {', '.join(unknown[:3])}"
                f"{' …' if len(unknown) > 3 else ''} is not known (fused tensors that are not "
                "3-D and no expert count in the config): active parameters not computed"
            )
        else:
            if active_routed.denominator != 1:
                notes.append(
                    "mixture of experts: the experts of a layer are not all the same size; "
                    "active routed params rounded down"
                )
            active = params - routed + int(active_routed)
            assert config is not None
            source = f"{config.source} {config.top_k_from}"
            per = f"top-{top_k} of {experts} routed experts" if experts else f"top-{top_k}"
            shared = f" + {self.shared:,} shared-expert params" if self.shared else ""
            notes.append(
                f"active params per token: everything dense (input embedding included){shared}"
                f" + {per} in each of {len(self._blocks)} MoE layers (top-k from {source}); "
                f"{active - embed_lookup:,} without the input-embedding lookup"
            )
            if config.top_k is not None and experts and config.top_k > experts:
                notes.append(f"top-k {config.top_k} exceeds the {experts} experts: used all")
        return (
            MoE(
                experts=experts,
                top_k=top_k,
                shared_experts=config.shared if config is not None else None,
                moe_layers=len(self._blocks),
                routed_params=routed,
                shared_params=self.shared,
                embedding_params=self.embedding,
                active_params=active,
                active_params_without_embedding=None if active is None else active - embed_lookup,
                source=source,
                layout=layout,
            ),
            notes,
        )
