"""LoRA before training: the adapters a ``LoraConfig`` would add, counted from shapes alone.

:class:`LoraSpec` says what peft's ``LoraConfig`` says (``r``, ``lora_alpha``,
``target_modules``, ``lora_bias``); :func:`lora_manifest` adds the adapters to a model's
:class:`Manifest` as frozen base + trainable adapters, so that :func:`paramscope.count` and
:func:`paramscope.estimate_memory` need nothing else. Conventions are peft's
(``peft/tuners/lora/layer.py``), adapter ``default``:

* ``Linear(in, out)``: ``lora_A`` (r, in), ``lora_B`` (out, r): r·(in + out);
* transformers' ``Conv1D`` (GPT-2, weight stored (in, out), ``fan_in_fan_out``): the same;
* ``Embedding(num, dim)``: ``lora_embedding_A`` (r, num), ``lora_embedding_B`` (dim, r);
* ``ConvNd(in, out, k, groups=g)``: ``lora_A`` = ConvNd(in, r, k) (r·in·∏k),
  ``lora_B`` = ConvNd(r, out, 1, groups=g) (out·r/g);
* ``lora_bias=True`` adds ``lora_B``'s bias (out).

Target matching is peft's ``check_target_module_exists``: a list names module-name suffixes
(``q_proj`` matches ``model.layers.0.self_attn.q_proj``), a string is a regular expression
matched against the whole module name (``re.fullmatch``). A model's module types are read from
the model; a checkpoint or config has only shapes, so a 2-D weight is taken for a Linear (the
count is the same for an Embedding or a Conv1D) and a 3- to 5-D one for a Conv with
``groups=1`` (said in a note).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .._dtypes import DType, parse_dtype
from .._errors import ArgumentError
from .._manifest import Entry, Manifest

__all__ = [
    "LoraPlan",
    "LoraSpec",
    "adapter_folder_info",
    "adapter_info",
    "lora_manifest",
    "module_layers",
]

#: Module types peft's LoRA wraps (``peft.tuners.lora.model.LoraModel._create_new_module``).
_SUPPORTED = frozenset({"Linear", "Embedding", "Conv1D", "Conv1d", "Conv2d", "Conv3d"})


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA configuration to count before training (peft's ``LoraConfig`` terms).

    Args:
        r: the rank.
        alpha: ``lora_alpha`` (scaling ``alpha / r``; no effect on counts; ``None``: peft's
            default 8).
        targets: module-name suffixes (a list, as peft's ``target_modules``) or one regular
            expression matched against whole module names (a string).
        bias: ``lora_bias``: ``lora_B`` gets a bias.
        dtype: the adapters' dtype (peft keeps them in float32 by default, even on a 16-bit
            base: ``autocast_adapter_dtype=True``).

    Example:
        >>> LoraSpec.parse("r=16,alpha=32,targets=q_proj,v_proj")
        LoraSpec(r=16, alpha=32.0, targets=('q_proj', 'v_proj'), bias=False, dtype='F32')
    """

    r: int
    alpha: float | None = None
    targets: Sequence[str] | str = ("q_proj", "v_proj")
    bias: bool = False
    dtype: str = "F32"

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ArgumentError(f"LoraSpec: r={self.r!r}: expected a positive int, the rank")
        if not isinstance(self.targets, str):
            object.__setattr__(self, "targets", tuple(self.targets))
            if not self.targets:
                raise ArgumentError("LoraSpec: targets=(): expected module names or a regex")
        else:
            try:
                re.compile(self.targets)
            except re.error as e:
                raise ArgumentError(
                    f"LoraSpec: targets={self.targets!r}: not a regular expression ({e})"
                ) from None
        if self.alpha is not None:
            object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dtype", parse_dtype(self.dtype).value)

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """A spec from the CLI form ``r=16,alpha=32,targets=q_proj,v_proj``.

        ``targets=`` takes every following comma-separated item without ``=``; ``regex=``
        takes the rest of the text as one regular expression; ``bias=true`` and
        ``dtype=bf16`` are optional.

        Args:
            text: the option's value.

        Returns:
            The spec.

        Raises:
            ArgumentError: a key other than r, alpha, targets, regex, bias, dtype, or a bad
                value.

        Example:
            >>> LoraSpec.parse(r"r=4,regex=.*\\.(q|v)").targets
            '.*\\\\.(q|v)'
        """
        kw: dict[str, Any] = {}
        targets: list[str] = []
        rest = text
        key = None
        while rest:
            if rest.startswith("regex="):
                kw["targets"] = rest[len("regex=") :]
                break
            item, _, rest = rest.partition(",")
            item = item.strip()
            if "=" not in item:
                if key != "targets" or not item:
                    raise ArgumentError(
                        f"--lora {text!r}: item {item!r}: expected KEY=VALUE (r, alpha, "
                        "targets, regex, bias, dtype)"
                    )
                targets.append(item)
                continue
            key, _, value = item.partition("=")
            key = key.strip().lower()
            if key == "targets":
                targets.append(value.strip())
            elif key in ("r", "alpha", "bias", "dtype"):
                kw[key] = value.strip()
            else:
                raise ArgumentError(
                    f"--lora {text!r}: unknown key {key!r}: expected r, alpha, targets, "
                    "regex, bias, dtype"
                )
        if "r" not in kw:
            raise ArgumentError(f"--lora {text!r}: r=RANK is required")
        try:
            r = int(kw["r"])
            alpha = float(kw["alpha"]) if "alpha" in kw else None
        except ValueError:
            raise ArgumentError(f"--lora {text!r}: r and alpha must be numbers") from None
        bias = str(kw.get("bias", "false")).lower() in ("1", "true", "yes")
        if targets:
            kw["targets"] = tuple(t for t in targets if t)
        if "targets" not in kw:
            raise ArgumentError(f"--lora {text!r}: targets=NAME[,NAME...] or regex=RE required")
        return cls(r, alpha, kw["targets"], bias, kw.get("dtype", "F32"))

    def matches(self, key: str) -> bool:
        """Whether peft would target the module named ``key``.

        Args:
            key: a dotted module name.

        Returns:
            ``True`` for a full regex match (string targets), an equal name or a name ending
            in ``.TARGET`` (list targets).

        Example:
            >>> LoraSpec(4, targets=["q"]).matches("encoder.block.0.layer.0.SelfAttention.q")
            True
        """
        if isinstance(self.targets, str):
            return re.fullmatch(self.targets, key) is not None
        return key in self.targets or any(key.endswith(f".{t}") for t in self.targets)

    def describe(self) -> str:
        """One line: ``r=8, alpha=16, targets q, v``."""
        alpha = "default" if self.alpha is None else f"{self.alpha:g}"
        t = self.targets if isinstance(self.targets, str) else ", ".join(self.targets)
        kind = "regex" if isinstance(self.targets, str) else "targets"
        return f"r={self.r}, alpha={alpha}, {kind} {t}"


@dataclass
class _Layer:
    kind: str
    groups: int = 1


@dataclass
class LoraPlan:
    """What :func:`lora_manifest` added.

    Attributes:
        modules: adapted module name → its base layer type (as read or inferred).
        adapter_params: elements of all adapters.
        adapter_bytes: their bytes in the adapters' dtype (the tensors of the
            ``adapter_model.safetensors`` peft would save).
        notes: how types were known.
    """

    spec: LoraSpec
    modules: dict[str, str] = field(default_factory=dict)
    adapter_params: int = 0
    adapter_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``count --json``'s ``lora`` entry).

        Returns:
            ``r, alpha, targets, bias, dtype, modules, adapter_params, adapter_bytes``.
        """
        s = self.spec
        return {
            "r": s.r,
            "alpha": s.alpha,
            "targets": s.targets if isinstance(s.targets, str) else list(s.targets),
            "bias": s.bias,
            "dtype": s.dtype,
            "modules": len(self.modules),
            "adapter_params": self.adapter_params,
            "adapter_bytes": self.adapter_bytes,
        }


def module_layers(model: Any) -> dict[str, _Layer]:
    """Module name → type name and ``groups`` for every module of a model.

    Args:
        model: a ``torch.nn.Module``.

    Returns:
        The map (the root is ``""``).
    """
    return {
        name: _Layer(type(mod).__name__, int(getattr(mod, "groups", 1) or 1))
        for name, mod in model.named_modules()
    }


def _shapes(kind: str, w: tuple[int, ...], r: int, groups: int) -> tuple[tuple[int, ...], ...]:
    """lora_A, lora_B shapes for a base weight of ``kind`` and shape ``w``."""
    if kind == "Conv1D":  # transformers' Conv1D: weight (in, out)
        return (r, w[0]), (w[1], r)
    if kind == "Embedding":  # lora_embedding_A (r, num), lora_embedding_B (dim, r)
        return (r, w[0]), (w[1], r)
    if len(w) >= 3:  # ConvNd: weight (out, in/groups, *k)
        if r % groups:
            raise ArgumentError(
                f"LoRA: r={r} on a Conv with groups={groups}: peft's lora_B is a Conv with "
                "the base layer's groups, so r must be a multiple of groups"
            )
        return (r, w[1] * groups, *w[2:]), (w[0], r // groups, *(1,) * (len(w) - 2))
    return (r, w[1]), (w[0], r)  # Linear: weight (out, in)


def lora_manifest(
    m: Manifest, spec: LoraSpec, layers: Mapping[str, _Layer] | None = None
) -> tuple[Manifest, LoraPlan]:
    """A manifest with the base frozen and the adapters of ``spec`` added, trainable.

    Adapter entries are named as in the ``adapter_model.safetensors`` peft writes, without its
    ``base_model.model.`` prefix: ``MODULE.lora_A.weight`` and ``MODULE.lora_B.weight``
    (``lora_embedding_A`` / ``lora_embedding_B`` for an Embedding).

    Args:
        m: the base model's manifest.
        spec: the LoRA configuration.
        layers: module types from the model itself (:func:`module_layers`); ``None``: read
            from weight shapes.

    Returns:
        The new manifest and the :class:`LoraPlan`.

    Raises:
        ArgumentError: no module matches the targets, or a matched module is one LoRA does
            not wrap.

    Example:
        >>> from paramscope import DType, Entry, Manifest
        >>> base = Manifest([Entry("attn.q.weight", (64, 32), DType.F16)])
        >>> new, plan = lora_manifest(base, LoraSpec(8, targets=["q"]))
        >>> plan.adapter_params, new["attn.q.weight"].trainable  # 8 * (32 + 64)
        (768, False)
    """
    weights: dict[str, Entry] = {}
    modules: set[str] = set()
    for e in m.values():
        parts = e.name.split(".")
        for i in range(1, len(parts)):
            modules.add(".".join(parts[:i]))
        if len(parts) > 1 and parts[-1] == "weight":
            weights[e.name[: -len(".weight")]] = e
    names = set(layers) - {""} if layers is not None else modules
    matched = sorted(n for n in names if spec.matches(n))
    if not matched:
        raise ArgumentError(
            f"LoRA: targets {spec.targets!r} match no module of "
            f"{m.source or 'the model'} (peft: 'Target modules not found in the base model'); "
            f"module names look like {sorted(weights)[:3]}"
        )
    dt: DType = parse_dtype(spec.dtype)
    plan = LoraPlan(spec)
    added: list[Entry] = []
    guessed = False
    for name in matched:
        layer = layers.get(name) if layers is not None else None
        w = weights.get(name)
        if layer is not None and layer.kind not in _SUPPORTED:
            raise ArgumentError(
                f"LoRA: target module {name!r} is a {layer.kind}: peft's LoRA wraps "
                f"{', '.join(sorted(_SUPPORTED))}; name its Linear children instead"
            )
        if w is None or len(w.shape) < 2 or len(w.shape) > 5:
            found = "no weight of its own" if w is None else f"a weight of shape {w.shape}"
            raise ArgumentError(
                f"LoRA: target module {name!r} has {found}: expected a Linear, Embedding, "
                "Conv1D or ConvNd weight (2 to 5 dimensions)"
            )
        shape = w.shape
        layout = w.extra.get("quant_layout") if w.extra else None
        if isinstance(layout, Mapping) and isinstance(layout.get("shape"), list):
            shape = tuple(int(d) for d in layout["shape"])
        if layer is None:
            guessed = True
            kind = "Linear" if len(shape) == 2 else f"Conv{len(shape) - 2}d"
            groups = 1
        else:
            kind, groups = layer.kind, layer.groups
        a, b = _shapes(kind, shape, spec.r, groups)
        stem = "lora_embedding_" if kind == "Embedding" else "lora_"
        suffix = "" if kind == "Embedding" else ".weight"
        new = [Entry(f"{name}.{stem}A{suffix}", a, dt), Entry(f"{name}.{stem}B{suffix}", b, dt)]
        if spec.bias and kind != "Embedding":
            new.append(Entry(f"{name}.lora_B.bias", (b[0],), dt))
        added += new
        plan.modules[name] = kind
    plan.adapter_params = sum(math.prod(e.shape) for e in added)
    plan.adapter_bytes = sum(e.nbytes for e in added)
    if guessed:
        plan.notes.append(
            "LoRA module types read from weight shapes: 2-D weights taken for Linear layers "
            "(an Embedding or GPT-2 Conv1D has the same count), 3- to 5-D for Conv with "
            "groups=1"
        )
    base = [e if not e.trainable else replace(e, trainable=False) for e in m.values()]
    out = Manifest(
        [*base, *added],
        format=m.format,
        source=m.source,
        roles=m.roles,
        metadata=m.metadata,
        files=m.files,
        notes=[*m.notes, *plan.notes],
        moe=m.moe,
    )
    return out, plan


def adapter_info(config: Mapping[str, Any]) -> dict[str, Any]:
    """What an ``adapter_config.json`` says, for a count's ``lora`` entry.

    Args:
        config: the parsed ``adapter_config.json`` peft's ``save_pretrained`` writes.

    Returns:
        ``peft_type, base_model, r, alpha, targets``.

    Example:
        >>> adapter_info({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
        ...               "target_modules": ["v", "q"], "base_model_name_or_path": "t5"})
        {'peft_type': 'LORA', 'base_model': 't5', 'r': 8, 'alpha': 16, 'targets': ['q', 'v']}
    """
    t = config.get("target_modules")
    return {
        "peft_type": config.get("peft_type"),
        "base_model": config.get("base_model_name_or_path"),
        "r": config.get("r"),
        "alpha": config.get("lora_alpha"),
        "targets": sorted(t) if isinstance(t, list) else t,
    }


def adapter_folder_info(path: str) -> dict[str, Any] | None:
    """:func:`adapter_info` of a peft adapter folder (or its ``adapter_model.safetensors`` /
    ``adapter_model.bin``), ``None`` for anything else.

    Args:
        path: the path counted.

    Returns:
        The info, or ``None`` when no ``adapter_config.json`` is there.

    Example:
        >>> adapter_folder_info("zoo:gpt2") is None
        True
    """
    import json
    import os

    if os.path.isdir(path):
        folder = path
    elif os.path.basename(path).startswith("adapter_model."):
        folder = os.path.dirname(path) or "."
    else:
        return None
    cfg = os.path.join(folder, "adapter_config.json")
    if not os.path.isfile(cfg):
        return None
    try:
        with open(cfg, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return adapter_info(data) if isinstance(data, dict) else None
