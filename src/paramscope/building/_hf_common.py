"""Shared pieces of the analytic Hugging Face counters: reading a config.json dict with the
config class defaults, and writing entries in the order ``scan_module`` walks a model.

Nothing here imports torch or transformers. The family counters
(:mod:`._hf_decoders`, :mod:`._hf_moe`, :mod:`._hf_encoders`) raise :class:`Unsupported`
for anything they do not model exactly; :func:`paramscope.building._hf_analytic.analytic_manifest`
turns that into ``None`` so that the caller builds the model with transformers instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._dtypes import DType
from .._enums import Role
from .._manifest import Entry

__all__ = ["MISSING", "Cfg", "Entries", "Unsupported", "rope_length"]


class Unsupported(Exception):
    """A config or class the analytic counter does not model exactly (the caller falls back)."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Marks a config attribute that the transformers config object would not have at all."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Cfg:
    """A config.json dict read through the defaults of its transformers config class.

    A key present in the JSON wins (even when its value is ``null``); a key absent takes the
    class default; a key with neither is :data:`MISSING` (the attribute does not exist).

    Args:
        raw: the parsed config.json.
        defaults: the config class's field defaults that matter for shapes.

    Example:
        >>> cfg = Cfg({"hidden_size": 64}, {"hidden_size": 4096, "vocab_size": 32000})
        >>> cfg.int("hidden_size"), cfg.int("vocab_size")
        (64, 32000)
    """

    def __init__(self, raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        self.raw = raw
        self.defaults = defaults

    def get(self, key: str, *aliases: str) -> Any:
        """The value of ``key``: the first of ``aliases`` present in the JSON, else ``key``
        from the JSON, else its default, else :data:`MISSING`.

        Args:
            key: the config field name.
            aliases: ``attribute_map`` spellings that override the field when present.

        Returns:
            The raw value.
        """
        for name in (*aliases, key):
            if name in self.raw:
                return self.raw[name]
        return self.defaults.get(key, MISSING)

    def int(self, key: str, *aliases: str, minimum: int = 0) -> int:
        """An integer field, at least ``minimum``.

        Args:
            key: the field.
            aliases: overriding spellings (see :meth:`get`).
            minimum: the smallest accepted value.

        Returns:
            The value.

        Raises:
            Unsupported: when it is missing, not an integer, or too small.
        """
        value = self.get(key, *aliases)
        if not _is_int(value) or value < minimum:
            raise Unsupported(f"{key}={value!r}: expected an integer >= {minimum}")
        return int(value)

    def opt_int(self, key: str, *aliases: str, minimum: int = 0) -> int | None:
        """An integer field that may be ``null`` (or absent with no default).

        Args:
            key: the field.
            aliases: overriding spellings.
            minimum: the smallest accepted value.

        Returns:
            The value, or ``None``.

        Raises:
            Unsupported: when it is neither ``None`` nor an integer >= ``minimum``.
        """
        value = self.get(key, *aliases)
        if value is None or value is MISSING:
            return None
        if not _is_int(value) or value < minimum:
            raise Unsupported(f"{key}={value!r}: expected null or an integer >= {minimum}")
        return int(value)

    def bool(self, key: str) -> bool:
        """A boolean field (``null`` counts as false, as a truth test in the model code does).

        Args:
            key: the field.

        Returns:
            The value.

        Raises:
            Unsupported: when it is neither a bool nor ``null``.
        """
        value = self.get(key)
        if value is None or value is MISSING:
            return False
        if not isinstance(value, bool):
            raise Unsupported(f"{key}={value!r}: expected true or false")
        return value

    def int_list(self, key: str) -> list[int] | None:
        """A list of integers (``None`` when null or absent).

        Args:
            key: the field.

        Returns:
            The list or ``None``.

        Raises:
            Unsupported: for anything else.
        """
        value = self.get(key)
        if value is None or value is MISSING:
            return None
        if not isinstance(value, list) or not all(_is_int(v) for v in value):
            raise Unsupported(f"{key}={value!r}: expected a list of integers")
        return list(value)

    def layer_types(self, layers: int) -> list[str] | None:
        """The ``layer_types`` list when the JSON gives one (checked against ``layers``).

        Args:
            layers: ``num_hidden_layers``.

        Returns:
            The list, or ``None`` when the JSON gives none.

        Raises:
            Unsupported: when it is not a list of strings of length ``layers``.
        """
        value = self.raw.get("layer_types")
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or len(value) != layers
            or not all(v in ("full_attention", "sliding_attention") for v in value)
        ):
            raise Unsupported(f"layer_types={value!r}: expected {layers} known layer types")
        return list(value)

    def num_labels(self) -> int:
        """The classifier width transformers derives: ``len(id2label)``, else ``num_labels``,
        else 2.

        Returns:
            The label count.

        Raises:
            Unsupported: for malformed values.
        """
        id2label = self.raw.get("id2label")
        if id2label is not None:
            if not isinstance(id2label, Mapping):
                raise Unsupported("id2label: expected a mapping")
            return len(id2label)
        value = self.raw.get("num_labels", 2)
        if not _is_int(value) or value < 0:
            raise Unsupported(f"num_labels={value!r}: expected an integer")
        return int(value)

    def rope_parameters(self) -> Mapping[str, Any]:
        """The flat RoPE dict the rotary embedding reads: ``rope_scaling`` when truthy, else
        ``rope_parameters``, else the class default; ``partial_rotary_factor`` from the dict,
        else from the top level.

        Returns:
            A new dict (the input is never modified).

        Raises:
            Unsupported: when it is not a flat dict.
        """
        rp = self.raw.get("rope_scaling") or self.raw.get("rope_parameters")
        if rp is None:
            rp = self.defaults.get("rope_parameters") or {}
        if not isinstance(rp, Mapping):
            raise Unsupported(f"rope_parameters={rp!r}: expected a mapping")
        if any(isinstance(v, Mapping) for v in rp.values()):
            raise Unsupported("rope_parameters nested by layer type")
        out = dict(rp)
        top = self.raw.get("partial_rotary_factor")
        if top is not None:
            out.setdefault("partial_rotary_factor", top)
        return out


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unsupported(f"partial_rotary_factor={value!r}: expected a number")
    return float(value)


def rope_length(
    rp: Mapping[str, Any],
    *,
    head_dim_attr: Any,
    hidden_size: int,
    num_heads: int,
    default_partial: bool = False,
) -> int:
    """Length of the rotary ``inv_freq`` buffer transformers builds for one RoPE dict.

    Args:
        rp: the flat RoPE dict (``rope_type`` or legacy ``type``; ``partial_rotary_factor``).
        head_dim_attr: the config object's ``head_dim`` attribute (:data:`MISSING` when the
            config class has none and the JSON gives none).
        hidden_size: ``hidden_size``.
        num_heads: ``num_attention_heads``.
        default_partial: whether the family's own ``default`` RoPE honours
            ``partial_rotary_factor`` (Phi-3 does; Llama and most others do not).

    Returns:
        The element count of ``inv_freq``.

    Raises:
        Unsupported: for RoPE types not modelled (``proportional`` …), odd rotary widths, and
            dicts transformers would reject.

    Example:
        >>> rope_length({"rope_type": "default"}, head_dim_attr=128, hidden_size=4096,
        ...             num_heads=32)
        64
    """
    rope_type = rp.get("rope_type", rp.get("type", "default"))
    prf = _number(rp.get("partial_rotary_factor", 1.0))
    derived = hidden_size // num_heads
    if rope_type in ("default", "linear", "llama3"):
        # `getattr(config, "head_dim", None) or hidden_size // num_attention_heads`
        base = head_dim_attr if head_dim_attr is not MISSING and head_dim_attr else derived
        apply_prf = rope_type != "default" or default_partial
        needed = {
            "linear": ("factor",),
            "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
        }
    elif rope_type in ("dynamic", "yarn", "longrope"):
        # `getattr(config, "head_dim", hidden_size // num_attention_heads)`
        base = derived if head_dim_attr is MISSING else head_dim_attr
        apply_prf = True
        needed = {"dynamic": ("factor",), "yarn": ("factor",), "longrope": ()}
    else:
        raise Unsupported(f"rope_type {rope_type!r} is not modelled")
    for key in needed.get(rope_type, ()):
        if key not in rp:
            raise Unsupported(f"rope_type {rope_type!r} without {key!r}")
    if not _is_int(base) or base <= 0:
        raise Unsupported(f"head_dim={base!r} for the rotary embedding")
    dim = int(base * prf) if apply_prf else base
    if dim <= 0 or dim % 2:
        raise Unsupported(f"rotary width {dim}: only even widths are modelled")
    n = dim // 2
    if rope_type == "dynamic" and dim == 2:
        raise Unsupported("dynamic RoPE over 2 dimensions divides by zero in transformers")
    if rope_type == "llama3" and not all(rp[k] for k in ("low_freq_factor", "high_freq_factor")):
        raise Unsupported("llama3 RoPE with a zero frequency factor")
    if rope_type == "yarn":
        theta = rp.get("rope_theta", 10000.0)
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 1:
            raise Unsupported(f"yarn RoPE with rope_theta={theta!r}")
    if rope_type == "longrope":
        for key in ("short_factor", "long_factor"):
            factors = rp.get(key)
            if not isinstance(factors, list) or len(factors) not in (1, n):
                raise Unsupported(f"longrope {key} of the wrong length")
    return n


class Entries:
    """Entries in ``scan_module`` order, written by module paths.

    Args:
        dtype: the floating dtype parameters are built in.

    Example:
        >>> e = Entries(DType.BF16)
        >>> e.linear("fc", 3, 2, bias=True)
        >>> [(x.name, x.shape) for x in e.items]
        [('fc.weight', (2, 3)), ('fc.bias', (2,))]
    """

    def __init__(self, dtype: DType) -> None:
        self.dtype = dtype
        self.items: list[Entry] = []
        self._by_name: dict[str, Entry] = {}

    def _add(self, entry: Entry) -> None:
        if entry.name in self._by_name:
            raise Unsupported(f"duplicate entry {entry.name}")  # pragma: no cover - a bug guard
        self._by_name[entry.name] = entry
        self.items.append(entry)

    def param(self, name: str, shape: tuple[int, ...], dtype: DType | None = None) -> None:
        """A trainable parameter.

        Args:
            name: full dotted name.
            shape: its shape.
            dtype: its dtype when fixed by the model code (default: the build dtype).
        """
        self._add(Entry(name, shape, dtype or self.dtype, role=Role.PARAM, trainable=True))

    def buffer(
        self, name: str, shape: tuple[int, ...], dtype: DType, *, persistent: bool = True
    ) -> None:
        """A buffer.

        Args:
            name: full dotted name.
            shape: its shape.
            dtype: its dtype.
            persistent: ``False`` for buffers left out of the ``state_dict``.
        """
        extra = {} if persistent else {"persistent": False}
        self._add(Entry(name, shape, dtype, role=Role.BUFFER, trainable=False, extra=extra))

    def tie(self, name: str, target: str) -> None:
        """An alias of an earlier entry (a tied weight met again under a later path).

        Args:
            name: the alias's dotted name.
            target: the first name of the tied tensor.
        """
        t = self._by_name[target]
        self._add(Entry(name, t.shape, t.dtype, role=t.role, trainable=t.trainable, tie=target))

    def linear(self, prefix: str, in_features: int, out_features: int, *, bias: bool) -> None:
        """An ``nn.Linear``: ``weight (out, in)`` then ``bias (out,)``.

        Args:
            prefix: the module path.
            in_features: input width.
            out_features: output width.
            bias: whether it has a bias.
        """
        self.param(f"{prefix}.weight", (out_features, in_features))
        if bias:
            self.param(f"{prefix}.bias", (out_features,))

    def embedding(self, prefix: str, num: int, dim: int, padding_idx: Any = None) -> None:
        """An ``nn.Embedding`` (checks ``padding_idx`` as torch does).

        Args:
            prefix: the module path.
            num: rows.
            dim: width.
            padding_idx: the padding row, or ``None``.

        Raises:
            Unsupported: when torch would reject ``padding_idx``.
        """
        given = padding_idx is not None and padding_idx is not MISSING
        if given and (not _is_int(padding_idx) or not -num <= padding_idx < num):
            raise Unsupported(f"padding_idx {padding_idx!r} outside {num} embeddings")
        self.param(f"{prefix}.weight", (num, dim))

    def norm(self, prefix: str, dim: int) -> None:
        """An RMSNorm (weight only).

        Args:
            prefix: the module path.
            dim: width.
        """
        self.param(f"{prefix}.weight", (dim,))

    def layernorm(self, prefix: str, dim: int) -> None:
        """An ``nn.LayerNorm`` (weight and bias).

        Args:
            prefix: the module path.
            dim: width.
        """
        self.param(f"{prefix}.weight", (dim,))
        self.param(f"{prefix}.bias", (dim,))

    def rotary(self, prefix: str, length: int, names: tuple[str, ...] = ("",)) -> None:
        """The rotary embedding's non-persistent float32 buffers ``{n}inv_freq`` and
        ``{n}original_inv_freq`` for each name prefix ``n``.

        Args:
            prefix: the module path (``model.rotary_emb``).
            length: the ``inv_freq`` length.
            names: buffer name prefixes (``"full_attention_"`` … for per-layer-type RoPE).
        """
        for n in names:
            self.buffer(f"{prefix}.{n}inv_freq", (length,), DType.F32, persistent=False)
            self.buffer(f"{prefix}.{n}original_inv_freq", (length,), DType.F32, persistent=False)
