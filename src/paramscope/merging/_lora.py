"""LoRA adapters after training: read and count one, fold it into its base, pull one out of a
fine-tune.

Conventions are peft's (``peft/tuners/lora/layer.py``, ``variants.py``, ``dora.py``,
``utils/save_and_load.py``), for the tensors of a saved adapter (``adapter_model.safetensors``,
names under ``base_model.model.``, the adapter name removed):

* ``M.lora_A.weight`` (r, in), ``M.lora_B.weight`` (out, r): ``M.weight += s · B @ A``, with
  ``s = alpha / r`` (``alpha / sqrt(r)`` with ``use_rslora``; ``rank_pattern`` /
  ``alpha_pattern`` per module, matched as peft's ``get_pattern_key``); transposed for a weight
  stored (in, out) (transformers' ``Conv1D``, GPT-2: ``fan_in_fan_out``);
* ``M.lora_embedding_A`` (r, num), ``M.lora_embedding_B`` (dim, r): ``M.weight += s · (B @ A).T``;
* ``M.lora_B.bias`` (``lora_bias``): ``M.bias += s · lora_B.bias``;
* ``M.lora_magnitude_vector`` (DoRA): ``W' = m / ||W + ΔW||_row · (W + ΔW)``, the norm taken
  per output feature over the input features (per embedding dimension over the vocabulary);
* any other tensor (``modules_to_save``, saved embedding layers ``M.base_layer.weight``)
  replaces the base's entry of that name.

Everything streams: one base tensor (and the adapter tensors of its module) alive at a time,
the math in float32, the output written with :func:`paramscope.io._sharded.write_planned`.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import (
    ArgumentError,
    EntryError,
    FormatError,
    ShapeMismatchError,
    WriteError,
)
from .._text import listed
from ._lowrank import conv1d_model as conv1d_from_config
from ._lowrank import conv1d_name, truncated_svd

__all__ = [
    "AdapterInfo",
    "LoraExtractReport",
    "LoraMergeReport",
    "lora_extract",
    "lora_merge",
    "read_adapter",
]

#: The prefix peft's ``save_pretrained`` puts before every adapter tensor name.
_PREFIX = "base_model.model."

#: Adapter tensor name endings → their part of a LoRA module.
_PARTS = (
    (".lora_A.weight", "A"),
    (".lora_B.weight", "B"),
    (".lora_B.bias", "bias"),
    (".lora_embedding_A", "eA"),
    (".lora_embedding_B", "eB"),
    (".lora_magnitude_vector.weight", "mag"),
    (".lora_magnitude_vector", "mag"),
)

#: Name parts that mark an embedding or output head (excluded from extraction by default).
_EMBED_PARTS = frozenset({"wte", "wpe", "lm_head"})


# --------------------------------------------------------------------------------------------
# reading an adapter


@dataclass
class _Module:
    """The adapter tensors of one base module (names as stored in the adapter file)."""

    name: str
    parts: dict[str, str] = field(default_factory=dict)  # part → adapter entry name

    @property
    def embedding(self) -> bool:
        return "eA" in self.parts or "eB" in self.parts


@dataclass
class AdapterInfo:
    """What a peft LoRA adapter holds: its config and the tensors of its file, from headers.

    Attributes:
        path: the adapter file read (``adapter_model.safetensors`` or ``.bin``).
        peft_type: ``LORA``.
        base_model: ``base_model_name_or_path`` of the config.
        r: the rank (``rank_pattern`` may change it per module).
        alpha: ``lora_alpha``.
        use_rslora: scaling ``alpha / sqrt(r)`` instead of ``alpha / r``.
        use_dora: DoRA (magnitude vectors).
        fan_in_fan_out: the config's flag (weights stored (in, out), GPT-2's ``Conv1D``).
        rank_pattern: module pattern → rank.
        alpha_pattern: module pattern → alpha.
        targets: the config's ``target_modules``.
        modules: the base modules adapted (sorted), names as in the base model.
        modules_to_save: base entries the adapter replaces whole (``modules_to_save``, saved
            embedding layers).
        params: elements of every adapter tensor.
        module_params: module → elements of its LoRA tensors; replaced entries under their
            own name.
        dtypes: the adapter tensors' dtypes.
        bytes: bytes of the adapter tensors.
    """

    path: str
    peft_type: str
    base_model: str | None
    r: int
    alpha: float
    use_rslora: bool = False
    use_dora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    targets: list[str] | str | None = None
    modules: list[str] = field(default_factory=list)
    modules_to_save: list[str] = field(default_factory=list)
    params: int = 0
    module_params: dict[str, int] = field(default_factory=dict)
    dtypes: list[str] = field(default_factory=list)
    bytes: int = 0

    def rank_alpha(self, module: str) -> tuple[int, float]:
        """The rank and alpha peft gives ``module`` (``rank_pattern`` / ``alpha_pattern`` keys
        matched as peft's ``get_pattern_key``: the first key that ends the name at a dot).

        Args:
            module: a base module name (``model.layers.0.self_attn.q_proj``).

        Returns:
            ``(r, alpha)``.

        Example:
            >>> info = AdapterInfo("a", "LORA", None, 8, 16, rank_pattern={"v_proj": 4})
            >>> info.rank_alpha("layers.0.v_proj"), info.rank_alpha("layers.0.q_proj")
            ((4, 16), (8, 16))
        """
        return (
            int(self.rank_pattern.get(_pattern_key(self.rank_pattern, module), self.r)),
            self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.alpha),
        )

    def scaling(self, module: str) -> float:
        """peft's scaling of ``module``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA.

        Args:
            module: a base module name.

        Returns:
            The factor ``B @ A`` is multiplied by.

        Example:
            >>> AdapterInfo("a", "LORA", None, 16, 32, use_rslora=True).scaling("q")
            8.0
        """
        r, alpha = self.rank_alpha(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    def to_dict(self) -> dict[str, Any]:
        """JSON form (keys = attribute names; what ``paramscope lora count --json`` prints).

        Returns:
            The dict.

        Example:
            >>> AdapterInfo("a", "LORA", None, 8, 16).to_dict()["r"]
            8
        """
        d = dict(self.__dict__)
        for k in ("rank_pattern", "alpha_pattern", "module_params"):
            d[k] = dict(d[k])
        for k in ("modules", "modules_to_save", "dtypes"):
            d[k] = list(d[k])
        return d

    def to_text(self, width: int | None = None) -> str:
        """The human form: the config in one line, the totals, then one row per module.

        Args:
            width: unused; the same signature as every report's ``to_text``.

        Returns:
            The text, without a final newline; strings from files are escaped.

        Example:
            >>> info = AdapterInfo("a", "LORA", None, 8, 16, modules=["q"],
            ...                    params=512, module_params={"q": 512}, dtypes=["F32"])
            >>> print(info.to_text())
            a: LORA r=8 alpha=16 (scaling 2), base None
              1 modules adapted, 0 entries replaced, 512 parameters (F32)
            module  params
            q          512
        """
        from .._tables import aligned
        from .._text import printable_tree
        from .._units import format_count

        d = printable_tree(self.to_dict())
        scale = d["alpha"] / math.sqrt(d["r"]) if d["use_rslora"] else d["alpha"] / d["r"]
        flags = [k for k in ("use_rslora", "use_dora", "fan_in_fan_out") if d[k]]
        lines = [
            f"{d['path']}: {d['peft_type']} r={d['r']} alpha={_num(d['alpha'])} "
            f"(scaling {_num(scale)}), base {d['base_model']}"
            + (f" [{', '.join(flags)}]" if flags else "")
        ]
        if d["rank_pattern"] or d["alpha_pattern"]:
            lines.append(f"  rank_pattern {d['rank_pattern']}, alpha_pattern {d['alpha_pattern']}")
        lines.append(
            f"  {len(d['modules'])} modules adapted, {len(d['modules_to_save'])} entries "
            f"replaced, {format_count(d['params'])} parameters ({', '.join(d['dtypes'])})"
        )
        rows = [[k, format_count(v)] for k, v in d["module_params"].items()]
        if rows:
            lines += aligned(["module", "params"], rows)
        return "\n".join(lines)


def _num(x: float) -> str:
    """A float without a useless ``.0``."""
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


def _pattern_key(patterns: dict[str, Any], module: str) -> str:
    """peft's ``get_pattern_key``: the first key ``K`` with ``(.*\\.)?(K)$`` matching."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


def _adapter_files(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """The adapter's tensor file and its ``adapter_config.json`` (local paths, or URLs)."""
    from ..io._remote import as_path

    p = as_path(path)
    if p.is_dir():
        for name in ("adapter_model.safetensors", "adapter_model.bin"):
            if (p / name).is_file():
                return p / name, p / "adapter_config.json"
        raise FormatError(
            p,
            "expected a peft adapter folder (adapter_model.safetensors or adapter_model.bin "
            "and adapter_config.json), found neither tensor file",
        )
    if not p.exists():
        from .._errors import SourceNotFoundError

        raise SourceNotFoundError(f"{os.fspath(p)}: no such adapter file or folder")
    return p, p.parent / "adapter_config.json"


def _read(path: str | os.PathLike[str]) -> tuple[AdapterInfo, dict[str, _Module], dict[str, str]]:
    """The info, the LoRA modules (base module → tensors) and the replacements (base entry →
    adapter entry) of an adapter."""
    from ..io import read_manifest
    from ..io._quantconfig import read_config_json

    file, cfg_path = _adapter_files(path)
    try:
        cfg = read_config_json(cfg_path)
    except (OSError, ValueError, RecursionError) as exc:
        raise FormatError(cfg_path, f"cannot read the adapter config: {exc}") from None
    if cfg is None:
        raise FormatError(
            file,
            f"no adapter_config.json beside it ({os.fspath(cfg_path)!r}): the rank and "
            "alpha are not known",
        )
    if not isinstance(cfg, dict):
        raise FormatError(cfg_path, f"expected a JSON object, found {type(cfg).__name__}")
    ptype = cfg.get("peft_type")
    if ptype != "LORA":
        raise ArgumentError(
            f"{os.fspath(cfg_path)}: peft_type={ptype!r}: only LORA adapters (incl. rsLoRA and "
            "DoRA) can be read, merged or counted here"
        )
    for key in ("r", "lora_alpha"):
        v = cfg.get(key, 8)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise FormatError(cfg_path, f"{key}={v!r}: expected a positive number")
    if cfg.get("trainable_token_indices"):
        raise ArgumentError(
            f"{os.fspath(cfg_path)}: trainable_token_indices is set: trainable-token deltas "
            "are not supported by lora_merge"
        )
    info = AdapterInfo(
        path=os.fspath(file),
        peft_type="LORA",
        base_model=cfg.get("base_model_name_or_path"),
        r=int(cfg.get("r", 8)),
        alpha=cfg.get("lora_alpha", 8),
        use_rslora=bool(cfg.get("use_rslora", False)),
        use_dora=bool(cfg.get("use_dora", False)),
        fan_in_fan_out=bool(cfg.get("fan_in_fan_out", False)),
        rank_pattern=dict(cfg.get("rank_pattern") or {}),
        alpha_pattern=dict(cfg.get("alpha_pattern") or {}),
        targets=cfg.get("target_modules"),
    )
    if isinstance(info.targets, list):
        info.targets = sorted(info.targets)
    m = read_manifest(file)
    modules: dict[str, _Module] = {}
    replaced: dict[str, str] = {}
    dtypes: set[str] = set()
    for e in m.values():
        if e.tie is not None:
            continue
        name = e.name[len(_PREFIX) :] if e.name.startswith(_PREFIX) else e.name
        info.params += e.numel
        info.bytes += e.nbytes
        dtypes.add(e.dtype.value)
        for suffix, part in _PARTS:
            if name.endswith(suffix):
                mod = modules.setdefault(name[: -len(suffix)], _Module(name[: -len(suffix)]))
                if part in mod.parts:
                    raise FormatError(file, f"entry {e.name!r}: a second {part} for {mod.name!r}")
                mod.parts[part] = e.name
                info.module_params[mod.name] = info.module_params.get(mod.name, 0) + e.numel
                break
        else:
            if re.search(r"(^|\.)lora_|(^|\.)token_adapter\.", name):
                raise FormatError(
                    file,
                    f"entry {e.name!r}: a LoRA tensor of a kind lora_merge does not know "
                    "(expected lora_A/lora_B/lora_embedding_A/B/lora_magnitude_vector)",
                )
            base_name = name.replace(".base_layer.", ".")
            replaced[base_name] = e.name
            info.module_params[base_name] = e.numel
    for mod in modules.values():
        have = set(mod.parts)
        ok = have >= {"A", "B"} or have >= {"eA", "eB"}
        if not ok or (have >= {"A"} and "eA" in have):
            raise FormatError(
                file,
                f"module {mod.name!r}: expected lora_A and lora_B (or lora_embedding_A "
                f"and lora_embedding_B), found {sorted(mod.parts)}",
            )
    info.modules = sorted(modules)
    info.modules_to_save = sorted(replaced)
    info.module_params = dict(sorted(info.module_params.items()))
    info.dtypes = sorted(dtypes)
    return info, modules, replaced


def read_adapter(path: str | os.PathLike[str]) -> AdapterInfo:
    """Read a peft LoRA adapter: its config and its tensors' shapes (headers only).

    Args:
        path: the adapter folder (``adapter_model.safetensors`` or ``adapter_model.bin`` and
            ``adapter_config.json``) or its tensor file.

    Returns:
        An :class:`AdapterInfo`.

    Raises:
        ArgumentError: a peft type other than LORA (LoHa, IA3, ...).
        FormatError: no config, or tensors peft's LoRA does not write.
        SourceNotFoundError: no such path.

    Example:
        >>> import json, tempfile, torch, paramscope
        >>> d = tempfile.mkdtemp()
        >>> _ = paramscope.save({"base_model.model.fc.lora_A.weight": torch.zeros(2, 8),
        ...                      "base_model.model.fc.lora_B.weight": torch.zeros(4, 2)},
        ...                     f"{d}/adapter_model.safetensors")
        >>> with open(f"{d}/adapter_config.json", "w") as f:
        ...     json.dump({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
        ...                "target_modules": ["fc"]}, f)
        >>> info = read_adapter(d)
        >>> info.modules, info.params, info.scaling("fc")
        (['fc'], 24, 2.0)
    """
    return _read(path)[0]


# --------------------------------------------------------------------------------------------
# merging


@dataclass
class LoraMergeReport:
    """What :func:`lora_merge` did.

    Attributes:
        base: the base checkpoint.
        adapter: the adapter file.
        output: the file or folder written.
        modules: one dict per merged module: ``name``, ``kind`` (``linear``, ``conv1d``,
            ``embedding``), ``rank``, ``scaling``, ``dora``, ``bias``, ``relative_update``
            (``||W' - W|| / ||W||``, float32).
        replaced: base entries replaced whole by the adapter's (``modules_to_save``).
        merged: modules merged.
        copied: entries copied unchanged (cast when ``dtype`` is given).
        entries: stored entries written.
        bytes: tensor bytes written.
        shards: files written.
        relative_update: ``sqrt(Σ||W' - W||² / Σ||W||²)`` over the merged weights.
        notes: what the reader or the merge wants said.
    """

    base: str
    adapter: str
    output: str
    modules: list[dict[str, Any]] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    merged: int = 0
    copied: int = 0
    entries: int = 0
    bytes: int = 0
    shards: int = 1
    relative_update: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (keys = attribute names; what ``paramscope lora merge --json`` prints).

        Returns:
            The dict.

        Example:
            >>> list(LoraMergeReport("b", "a", "o").to_dict())[:3]
            ['base', 'adapter', 'output']
        """
        d = dict(self.__dict__)
        d["modules"] = [dict(x) for x in self.modules]
        return d

    def to_text(self, width: int | None = None) -> str:
        """The human form: one summary line, a table of the merged modules, the notes.

        Args:
            width: unused; the same signature as every report's ``to_text``.

        Returns:
            The text, without a final newline; strings from files are escaped.

        Example:
            >>> r = LoraMergeReport("b", "a", "o", merged=1, entries=3, copied=2, modules=[
            ...     {"name": "fc", "kind": "linear", "rank": 2, "scaling": 2.0, "dora": False,
            ...      "bias": False, "relative_update": 0.0123}])
            >>> print(r.to_text())
            b + a -> o: 1 modules merged, 0 replaced, 2 copied, 3 entries, 0 bytes, 1 file(s)
            module    kind  rank  scaling  relative update
            fc      linear     2        2        1.230e-02
        """
        from .._tables import aligned
        from .._text import printable_tree
        from .._units import format_count

        d = printable_tree(self.to_dict())
        lines = [
            f"{d['base']} + {d['adapter']} -> {d['output']}: {d['merged']} modules merged, "
            f"{len(d['replaced'])} replaced, {d['copied']} copied, {d['entries']} entries, "
            f"{format_count(d['bytes'])} bytes, {d['shards']} file(s)"
        ]
        rows = [
            [
                m["name"],
                m["kind"] + (" dora" if m["dora"] else ""),
                str(m["rank"]),
                _num(m["scaling"]),
                "-" if m["relative_update"] is None else f"{m['relative_update']:.3e}",
            ]
            for m in d["modules"]
        ]
        if rows:
            lines += aligned(["module", "kind", "rank", "scaling", "relative update"], rows)
        if d["relative_update"] is not None:
            lines.append(f"relative update of the merged weights: {d['relative_update']:.3e}")
        if d["replaced"]:
            lines.append("replaced: " + ", ".join(d["replaced"]))
        lines += [f"  note: {n}" for n in d["notes"]]
        return "\n".join(lines)


def _castable(dtype: Any) -> bool:
    """Floating dtypes torch casts (never complex or FP4/FP6)."""
    return dtype.is_float and dtype.value not in ("C64", "F4", "F6_E2M3", "F6_E3M2")


def _shape(s: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in s)


def lora_merge(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: Any = None,
    max_shard_size: int | str | None = None,
    fsync: bool = True,
    show_progress: bool | None = None,
) -> LoraMergeReport:
    """Fold a peft LoRA adapter into its base checkpoint, streaming (peft's
    ``merge_and_unload`` on files).

    Base entries are read one at a time; for each adapted module ``M``,
    ``M.weight += scaling · B @ A`` (transposed for weights stored (in, out) and for
    embeddings; DoRA's magnitude applied; ``lora_B.bias`` added to ``M.bias``), computed in
    float32 and cast to the entry's dtype (or ``dtype``). Tensors saved whole in the adapter
    (``modules_to_save``) replace the base's. A square weight stored (in, out) cannot be told
    from its shape: it is taken as ``Conv1D`` when the base's ``config.json`` names a GPT-2-like
    model, else by the adapter's ``fan_in_fan_out``.

    Args:
        base: the base checkpoint (safetensors file, HF folder or index, ``.bin``, ...).
        adapter: the peft adapter folder or its ``adapter_model.safetensors``.
        dst: a ``.safetensors`` file, or a folder with ``max_shard_size``.
        dtype: output dtype of the floating entries (default: each entry's own).
        max_shard_size: write HF shards of at most this size (``"5GB"``) and an index.
        fsync: flush to disk before returning.
        show_progress: progress bar on stderr (default: only on a terminal).

    Returns:
        A :class:`LoraMergeReport`.

    Raises:
        EntryError: adapter entries that match no base entry (all listed), or a LoRA kind not
            supported (Conv layers).
        ShapeMismatchError: an adapter tensor that does not fit its base entry (both shapes).
        ArgumentError: a non-LoRA adapter.
        FormatError: a broken adapter.
        WriteError: ``dst`` is a folder and no ``max_shard_size`` was given.

    Example:
        >>> import json, tempfile, torch, paramscope
        >>> d = tempfile.mkdtemp()
        >>> _ = paramscope.save({"fc.weight": torch.zeros(4, 8)}, f"{d}/base.safetensors")
        >>> _ = paramscope.save({"base_model.model.fc.lora_A.weight": torch.ones(2, 8),
        ...                      "base_model.model.fc.lora_B.weight": torch.ones(4, 2)},
        ...                     f"{d}/adapter_model.safetensors")
        >>> with open(f"{d}/adapter_config.json", "w") as f:
        ...     json.dump({"peft_type": "LORA", "r": 2, "lora_alpha": 4}, f)
        >>> report = lora_merge(f"{d}/base.safetensors", d, f"{d}/merged.safetensors")
        >>> report.merged, paramscope.load(f"{d}/merged.safetensors")["fc.weight"][0, 0].item()
        (1, 4.0)
    """
    import torch

    from .._dtypes import parse_dtype
    from .._progress import progress
    from .._units import parse_size
    from ..io._reader import SourceReader
    from ..io._sharded import write_planned
    from ..io._writer import Planned, plan_meta, tensor_bytes

    cast = parse_dtype(dtype) if dtype is not None else None
    info, modules, replaced = _read(adapter)
    report = LoraMergeReport(os.fspath(base), info.path, os.fspath(dst))
    conv1d_model = conv1d_from_config(base)
    with SourceReader(info.path) as ad, SourceReader(base) as reader:
        report.notes += reader.notes
        m = reader.manifest
        am = ad.manifest
        aliases = dict(reader.aliases)

        def resolve(name: str) -> str | None:
            if name in aliases:
                return aliases[name]
            return name if name in m else None

        # --- match every adapter tensor to a base entry, check shapes, before any write
        unmatched: list[str] = []
        plans: dict[str, dict[str, Any]] = {}  # stored base weight name → what to do
        bias_of: dict[str, tuple[str, _Module]] = {}  # stored bias name → module
        for mod in modules.values():
            wname = resolve(f"{mod.name}.weight")
            if wname is None:
                unmatched.append(f"{mod.name}.weight")
                continue
            if wname != f"{mod.name}.weight":
                report.notes.append(
                    f"{mod.name}.weight is tied to {wname}: the merge changes the shared tensor "
                    "(as peft's merge does)"
                )
            w = m[wname]
            shape_w = _shape(am[replaced[wname]].shape if wname in replaced else w.shape)
            kind, fif = _check_module(info, mod, am, wname, shape_w, conv1d_model)
            r, _ = info.rank_alpha(mod.name)
            rank = _shape(am[mod.parts["eA" if mod.embedding else "A"]].shape)[0]
            if rank != r:
                raise ShapeMismatchError(
                    f"{info.path}: module {mod.name!r}: lora_A has rank {rank}, the config "
                    f"(r / rank_pattern) says {r}"
                )
            if wname in plans:
                raise EntryError(f"{info.path}: base entry {wname!r} is adapted twice")
            plans[wname] = {
                "module": mod,
                "kind": kind,
                "fif": fif,
                "rank": r,
                "scaling": info.scaling(mod.name),
            }
            if "bias" in mod.parts:
                bname = resolve(f"{mod.name}.bias")
                if bname is None:
                    unmatched.append(f"{mod.name}.bias")
                    continue
                got = _shape(am[mod.parts["bias"]].shape)
                if got != _shape(m[bname].shape):
                    raise ShapeMismatchError(
                        f"{info.path}: {mod.parts['bias']!r} has shape {list(got)}, base "
                        f"{bname!r} has {list(m[bname].shape)}"
                    )
                bias_of[bname] = (mod.parts["bias"], mod)
        for name, aname in replaced.items():
            if name not in m:
                unmatched.append(name)
                continue
            got, want = _shape(am[aname].shape), _shape(m[name].shape)
            if got != want and not aname.endswith(".base_layer.weight"):
                raise ShapeMismatchError(
                    f"{info.path}: {aname!r} has shape {list(got)}, base {name!r} has {list(want)}"
                )
            if got != want:
                report.notes.append(
                    f"{name}: the adapter's saved embedding layer has shape {list(got)}, the "
                    f"base {list(want)} (resized vocabulary): written in the adapter's shape"
                )
        if unmatched:
            raise EntryError(
                f"{os.fspath(base)}: {len(unmatched)} adapter entries match no base entry: "
                f"{', '.join(sorted(unmatched))} (names compared with peft's "
                f"{_PREFIX!r} removed)"
            )

        untied = [a for a in replaced if a in aliases]
        for a in untied:
            report.notes.append(
                f"{a}: tied to {aliases[a]} in the base, replaced by the "
                "adapter's own tensor (untied)"
            )
            del aliases[a]
        report.replaced = sorted(replaced)

        # --- the plan of the output
        def out_dtype(e: Any) -> Any:
            return cast if (cast is not None and _castable(e.dtype)) else e.dtype

        items = [(e.name, e) for e in reader.entries] + [(a, m[a]) for a in untied]
        plan = []
        for name, e in items:
            dt = out_dtype(e)
            shape = _shape(am[replaced[name]].shape) if name in replaced else _shape(e.shape)
            numel = math.prod(shape)
            meta = plan_meta(e)
            plan.append(Planned(name, dt, list(shape), dt.nbytes(numel), meta))
        alias_meta = {a: plan_meta(m[a]) for a in aliases}
        report.entries = len(plan)
        report.bytes = sum(p.nbytes for p in plan)
        by_name = {name: (p, e) for p, (name, e) in zip(plan, items, strict=True)}
        sq_upd = sq_w = 0.0

        def value(name: str, e: Any) -> Any:
            nonlocal sq_upd, sq_w
            if name in replaced:
                t = ad.read(am[replaced[name]])
            else:
                t = reader.read(e if e.tie is None else m[e.tie])
            target = by_name[name][0].dtype.to_torch()
            job = plans.get(name)
            if job is not None:
                w = t.to(torch.float32)
                new = _merge_weight(ad, am, job, info, w)
                upd = float(torch.linalg.vector_norm(new - w))
                wn = float(torch.linalg.vector_norm(w))
                sq_upd += upd * upd
                sq_w += wn * wn
                mod = job["module"]
                report.modules.append(
                    {
                        "name": mod.name,
                        "kind": job["kind"],
                        "rank": job["rank"],
                        "scaling": job["scaling"],
                        "dora": "mag" in mod.parts,
                        "bias": "bias" in mod.parts,
                        "relative_update": upd / wn if wn > 0 else None,
                    }
                )
                report.merged += 1
                return new.to(target)
            if name in bias_of:
                aname, mod = bias_of[name]
                b = t.to(torch.float32)
                lb = ad.read(am[aname]).to(torch.float32)
                return (b + lb * info.scaling(mod.name)).to(target)
            if name not in replaced:
                report.copied += 1
            return t if t.dtype == target else t.to(target)

        def chunks_of(names: list[str]) -> Iterator[tuple[str, Any]]:
            for name in names:
                p, e = by_name[name]
                yield name, tensor_bytes(value(name, e).contiguous())
                advance(p.nbytes)

        with progress(report.bytes, "lora merge", enabled=show_progress) as advance:
            report.shards = write_planned(
                dst,
                plan,
                chunks_of,
                aliases=aliases,
                alias_meta=alias_meta,
                metadata=m.metadata,
                max_shard_size=None if max_shard_size is None else parse_size(max_shard_size),
                fsync=fsync,
                what="lora merge",
            )
    if sq_w > 0:
        report.relative_update = math.sqrt(sq_upd / sq_w)
    report.modules.sort(key=lambda x: x["name"])
    return report


def _check_module(
    info: AdapterInfo,
    mod: _Module,
    am: Any,
    wname: str,
    shape_w: tuple[int, ...],
    conv1d_model: bool | None,
) -> tuple[str, bool]:
    """The kind of a module (``linear``, ``conv1d``, ``embedding``) and whether its weight is
    stored transposed, from the shapes; raises when they do not fit."""
    if mod.embedding:
        a, b = _shape(am[mod.parts["eA"]].shape), _shape(am[mod.parts["eB"]].shape)
        if len(a) != 2 or len(b) != 2 or a[0] != b[1] or shape_w != (a[1], b[0]):
            raise ShapeMismatchError(
                f"{info.path}: module {mod.name!r}: lora_embedding_A {list(a)} and "
                f"lora_embedding_B {list(b)} do not fit base {wname!r} of shape {list(shape_w)} "
                "(expected A (r, num), B (dim, r), weight (num, dim))"
            )
        kind, fif = "embedding", True
    else:
        a, b = _shape(am[mod.parts["A"]].shape), _shape(am[mod.parts["B"]].shape)
        if len(a) != 2 or len(b) != 2 or len(shape_w) != 2:
            raise EntryError(
                f"{info.path}: module {mod.name!r}: lora_A {list(a)}, base {wname!r} "
                f"{list(shape_w)}: only Linear, Conv1D and Embedding LoRA can be merged "
                "(Conv layers are not supported)"
            )
        if a[0] != b[1]:
            raise ShapeMismatchError(
                f"{info.path}: module {mod.name!r}: lora_A {list(a)} and lora_B {list(b)} "
                "disagree on the rank"
            )
        oi, io = (b[0], a[1]), (a[1], b[0])
        if shape_w == oi and shape_w != io:
            fif = False
        elif shape_w == io and shape_w != oi:
            fif = True
        elif shape_w == oi:  # square: the shape cannot tell
            fif = conv1d_model if conv1d_model is not None else info.fan_in_fan_out
        else:
            raise ShapeMismatchError(
                f"{info.path}: module {mod.name!r}: lora_A {list(a)} and lora_B {list(b)} give "
                f"a delta of shape {list(oi)}, base {wname!r} has shape {list(shape_w)}"
            )
        kind = "conv1d" if fif else "linear"
    if "mag" in mod.parts:
        mg = _shape(am[mod.parts["mag"]].shape)
        want = (b[0],)
        if mg != want:
            raise ShapeMismatchError(
                f"{info.path}: {mod.parts['mag']!r} has shape {list(mg)}, expected "
                f"{list(want)} (one magnitude per output feature of {wname!r})"
            )
    return kind, fif


def _merge_weight(ad: Any, am: Any, job: dict[str, Any], info: AdapterInfo, w: Any) -> Any:
    """The merged float32 weight of one module (peft's formula, see the module docstring)."""
    import torch

    mod: _Module = job["module"]
    if mod.embedding:
        a, b = ad.read(am[mod.parts["eA"]]), ad.read(am[mod.parts["eB"]])
    else:
        a, b = ad.read(am[mod.parts["A"]]), ad.read(am[mod.parts["B"]])
    a, b = a.to(torch.float32), b.to(torch.float32)
    delta = (b @ a) * job["scaling"]  # (out, in); embedding: (dim, num)
    w_oi = w.T if job["fif"] else w
    new = w_oi + delta
    if "mag" in mod.parts:
        mag = ad.read(am[mod.parts["mag"]]).to(torch.float32)
        norm = torch.linalg.norm(new, dim=1)
        new = (mag / norm).view(-1, 1) * new
    return (new.T if job["fif"] else new).contiguous()


# --------------------------------------------------------------------------------------------
# extracting


@dataclass
class LoraExtractReport:
    """What :func:`lora_extract` wrote.

    Attributes:
        base: the base checkpoint.
        finetuned: the fine-tuned checkpoint.
        output: the adapter folder.
        files: the two files written.
        rank: the rank asked for, or ``None``.
        energy: the energy asked for, or ``None``.
        alpha: ``lora_alpha`` written (``None``: each module's rank, scaling 1).
        tensors: one dict per extracted weight: ``name``, ``module``, ``shape``, ``kind``
            (``linear`` / ``conv1d``), ``rank``, ``scaling``, ``relative_error``
            (``||Δ - s·B@A|| / ||Δ||``), ``energy`` (kept fraction of Σσ²), ``params`` (of
            the adapter), ``full_params`` (of Δ), ``svd`` (``full`` / ``lowrank``).
        not_held: differing entries the adapter cannot hold: ``name``, ``shape``,
            ``relative_change`` (``||ft - base|| / ||base||``), ``reason``.
        unchanged: entries equal in both.
        params: elements of the adapter.
        full_params: elements of the deltas it stands for.
        relative_error: ``sqrt(Σ||Δ - s·B@A||² / Σ||Δ||²)`` over the extracted weights.
        notes: what the extraction wants said.
    """

    base: str
    finetuned: str
    output: str
    files: list[str] = field(default_factory=list)
    rank: int | None = None
    energy: float | None = None
    alpha: float | None = None
    tensors: list[dict[str, Any]] = field(default_factory=list)
    not_held: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0
    params: int = 0
    full_params: int = 0
    relative_error: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (keys = attribute names; what ``paramscope lora extract --json`` prints).

        Returns:
            The dict.

        Example:
            >>> list(LoraExtractReport("b", "f", "o").to_dict())[:3]
            ['base', 'finetuned', 'output']
        """
        d = dict(self.__dict__)
        d["tensors"] = [dict(x) for x in self.tensors]
        d["not_held"] = [dict(x) for x in self.not_held]
        return d

    def to_text(self, width: int | None = None) -> str:
        """The human form: a summary line, a table per extracted weight, what the adapter
        cannot hold, the notes.

        Args:
            width: unused; the same signature as every report's ``to_text``.

        Returns:
            The text, without a final newline; strings from files are escaped.

        Example:
            >>> r = LoraExtractReport("b", "f", "o", rank=2, params=24, full_params=32,
            ...     tensors=[{"name": "fc.weight", "rank": 2, "relative_error": 0.5,
            ...               "energy": 0.75, "params": 24, "full_params": 32}])
            >>> print(r.to_text())
            f - b -> o: 1 weights, rank 2, 24 adapter params for 32 of deltas (75.0%)
            tensor     rank  relative error  energy  params  full
            fc.weight     2       5.000e-01  0.7500      24    32
        """
        from .._tables import aligned
        from .._text import printable_tree
        from .._units import format_count, format_percent

        d = printable_tree(self.to_dict())
        how = f"rank {d['rank']}" if d["rank"] is not None else f"energy {d['energy']}"
        share = format_percent(d["params"], d["full_params"]) if d["full_params"] else "-"
        lines = [
            f"{d['finetuned']} - {d['base']} -> {d['output']}: {len(d['tensors'])} weights, "
            f"{how}, {format_count(d['params'])} adapter params for "
            f"{format_count(d['full_params'])} of deltas ({share})"
        ]
        rows = [
            [
                t["name"],
                str(t["rank"]),
                f"{t['relative_error']:.3e}",
                f"{t['energy']:.4f}",
                format_count(t["params"]),
                format_count(t["full_params"]),
            ]
            for t in d["tensors"]
        ]
        if rows:
            lines += aligned(["tensor", "rank", "relative error", "energy", "params", "full"], rows)
        if d["relative_error"] is not None:
            lines.append(f"relative error over all weights: {d['relative_error']:.3e}")
        if d["not_held"]:
            lines.append("differing entries the adapter does not hold:")
            lines += aligned(
                ["tensor", "relative change", "why"],
                [
                    [
                        x["name"],
                        "-" if x["relative_change"] is None else f"{x['relative_change']:.3e}",
                        x["reason"],
                    ]
                    for x in d["not_held"]
                ],
            )
        if d["unchanged"]:
            lines.append(f"{d['unchanged']} entries unchanged")
        lines += [f"  note: {n}" for n in d["notes"]]
        return "\n".join(lines)


def _default_select(name: str) -> bool:
    """Extraction's default: ``*.weight`` not of an embedding or output head (by name)."""
    if not name.endswith(".weight"):
        return False
    parts = name.split(".")
    return not any("embed" in p for p in parts) and not (_EMBED_PARTS & set(parts))


def lora_extract(
    base: str | os.PathLike[str],
    finetuned: str | os.PathLike[str],
    dst_folder: str | os.PathLike[str],
    *,
    rank: int | None = None,
    energy: float | None = None,
    alpha: float | None = None,
    select: Any = None,
    fsync: bool = True,
    show_progress: bool | None = None,
) -> LoraExtractReport:
    """A peft-loadable LoRA adapter from the difference of a fine-tune and its base.

    For each 2-D weight that differs, the delta ``Δ`` (as (out, in); transposed for GPT-2's
    ``Conv1D`` weights stored (in, out)) is truncated by SVD: ``B = U_k·√σ``, ``A = √σ·V_kᵀ``
    (``B`` divided by the scaling ``alpha / k``), ``k`` = ``rank``, or the smallest rank
    keeping ``energy`` of Σσ². ``torch.linalg.svd`` is used, or ``torch.svd_lowrank``
    (seeded, ``q = 2·rank + 10``, 4 power iterations: within ~1e-6 of the optimal error on
    decaying spectra, ~10x faster) for a fixed rank whose ``q`` is at most a quarter of the
    smaller side (itself >= 256); the error reported is always measured on the factors
    written. The folder receives ``adapter_model.safetensors`` (float32, peft's
    names ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``) and
    ``adapter_config.json``; both are built aside and renamed in, and no other file of the
    folder is touched.

    Args:
        base: the base checkpoint.
        finetuned: the fine-tuned checkpoint (same names and shapes).
        dst_folder: the adapter folder (made if missing).
        rank: the rank of every adapter (clipped to the matrix's smaller side).
        energy: instead of ``rank``: the fraction (0 < energy <= 1) of Σσ² to keep per weight.
        alpha: ``lora_alpha``; default each module's rank (scaling 1).
        select: glob / ``re:`` pattern(s) of the weights to extract (default: 2-D ``*.weight``
            entries whose names mark no embedding or head: ``embed``, ``wte``, ``wpe``,
            ``lm_head``).
        fsync: flush to disk before returning.
        show_progress: progress bar on stderr (default: only on a terminal).

    Returns:
        A :class:`LoraExtractReport`.

    Raises:
        ArgumentError: neither or both of ``rank`` and ``energy``, values out of range, or
            nothing to extract.
        EntryError: entries only one checkpoint holds (listed).
        ShapeMismatchError: an entry whose shape differs (both shapes).
        WriteError: ``dst_folder`` is a file.

    Example:
        >>> import tempfile, torch, paramscope
        >>> d = tempfile.mkdtemp()
        >>> w = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
        >>> delta = torch.outer(torch.ones(6), torch.arange(5.0))  # rank 1
        >>> _ = paramscope.save({"fc.weight": w}, f"{d}/base.safetensors")
        >>> _ = paramscope.save({"fc.weight": w + delta}, f"{d}/ft.safetensors")
        >>> r = lora_extract(f"{d}/base.safetensors", f"{d}/ft.safetensors", f"{d}/lora", rank=1)
        >>> r.tensors[0]["rank"], r.tensors[0]["relative_error"] < 1e-6, r.files
        (1, True, ['adapter_model.safetensors', 'adapter_config.json'])
    """
    import torch

    from .._progress import progress
    from ..io._reader import SourceReader

    if (rank is None) == (energy is None):
        raise ArgumentError(
            f"lora_extract: rank={rank!r}, energy={energy!r}: give exactly one (a rank, or "
            "the fraction of the squared singular values to keep)"
        )
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ArgumentError(f"lora_extract: rank={rank!r}: expected a positive int")
    if energy is not None and not (0 < float(energy) <= 1):
        raise ArgumentError(f"lora_extract: energy={energy!r}: expected 0 < energy <= 1")
    if alpha is not None and not (float(alpha) > 0):
        raise ArgumentError(f"lora_extract: alpha={alpha!r}: expected a positive number")
    dst = Path(dst_folder)
    if dst.exists() and not dst.is_dir():
        raise WriteError(f"{os.fspath(dst)}: is a file; lora_extract writes an adapter folder")
    if select is not None:
        from .._names import compile_pattern

        match = compile_pattern(select)
    else:
        match = _default_select
    report = LoraExtractReport(
        os.fspath(base),
        os.fspath(finetuned),
        os.fspath(dst),
        rank=rank,
        energy=None if energy is None else float(energy),
        alpha=None if alpha is None else float(alpha),
    )
    if select is None:
        report.notes.append(
            "weights chosen by name: 2-D '*.weight' entries, embeddings and heads (names with "
            "'embed', 'wte', 'wpe', 'lm_head') left out; each taken for a Linear (out, in)"
        )
    conv1d_model = conv1d_from_config(base)
    tensors: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    sq_err = sq_delta = 0.0
    conv_guess = False
    with SourceReader(base) as rb, SourceReader(finetuned) as rf:
        report.notes += rb.notes + [n for n in rf.notes if n not in rb.notes]
        mb, mf = rb.manifest, rf.manifest
        stored_b = {n for n, e in mb.items() if e.tie is None}
        stored_f = {n for n, e in mf.items() if e.tie is None}
        only_b = sorted(stored_b - set(mf))
        only_f = sorted(stored_f - set(mb))
        ties = sorted(set(mb).symmetric_difference(mf))
        if ties and not (only_b or only_f):
            report.notes.append(
                "tied names only one checkpoint lists (not compared): "
                f"{listed(ties, limit=5) or 'none'}"
            )
        if only_b or only_f:
            raise EntryError(
                f"{os.fspath(finetuned)}: names differ from the base: only in the base: "
                f"{listed(only_b, limit=5) or 'none'}; only in the fine-tune: "
                f"{listed(only_f, limit=5) or 'none'}"
            )
        with progress(rb.total_bytes, "lora extract", enabled=show_progress) as advance:
            for e in rb.entries:
                ef = mf[e.name]
                if ef.tie is not None:
                    ef = mf[ef.tie]
                if _shape(e.shape) != _shape(ef.shape):
                    raise ShapeMismatchError(
                        f"{os.fspath(finetuned)}: entry {e.name!r} has shape {list(ef.shape)}, "
                        f"the base {list(e.shape)}"
                    )
                tb, tf = rb.read(e), rf.read(ef)
                advance(e.nbytes)
                if tb.dtype == tf.dtype and torch.equal(tb, tf):
                    report.unchanged += 1
                    continue
                if not (e.dtype.is_float and ef.dtype.is_float and _castable(e.dtype)):
                    report.not_held.append(
                        {
                            "name": e.name,
                            "shape": list(e.shape),
                            "relative_change": None,
                            "reason": "not floating point",
                        }
                    )
                    continue
                b32, f32 = tb.to(torch.float32), tf.to(torch.float32)
                d = f32 - b32
                dn = float(torch.linalg.vector_norm(d))
                if dn == 0:  # equal values in another dtype
                    report.unchanged += 1
                    continue
                if not math.isfinite(dn):
                    raise EntryError(
                        f"{os.fspath(finetuned)}: entry {e.name!r}: the difference to the base "
                        "holds NaN or Inf values; cannot extract"
                    )
                bn = float(torch.linalg.vector_norm(b32))
                change = dn / bn if bn > 0 else None
                if tb.dim() != 2 or not match(e.name):
                    why = "not 2-D" if tb.dim() != 2 else "not selected"
                    if tb.dim() == 2 and select is None and e.name.endswith(".weight"):
                        why = "embedding or head (by name)"
                    report.not_held.append(
                        {
                            "name": e.name,
                            "shape": list(e.shape),
                            "relative_change": change,
                            "reason": why,
                        }
                    )
                    continue
                if not e.name.endswith(".weight"):
                    report.not_held.append(
                        {
                            "name": e.name,
                            "shape": list(e.shape),
                            "relative_change": change,
                            "reason": "not a '.weight' (no module to adapt)",
                        }
                    )
                    continue
                module = e.name[: -len(".weight")]
                conv1d = conv1d_model is not False and conv1d_name(module)
                conv_guess |= conv1d and conv1d_model is None
                d_oi = d.T if conv1d else d
                row, a, b, k = _factor(d_oi, rank, energy, alpha)
                row.update(
                    {
                        "name": e.name,
                        "module": module,
                        "shape": list(e.shape),
                        "kind": "conv1d" if conv1d else "linear",
                    }
                )
                rel = row.pop("_err")
                sq_err += rel[0]
                sq_delta += rel[1]
                report.tensors.append(row)
                tensors[f"{_PREFIX}{module}.lora_A.weight"] = a
                tensors[f"{_PREFIX}{module}.lora_B.weight"] = b
                ranks[module] = k
    if not report.tensors:
        raise ArgumentError(
            f"lora_extract: no selected 2-D weight differs between {os.fspath(base)!r} and "
            f"{os.fspath(finetuned)!r}; nothing to extract"
            + (f" ({len(report.not_held)} other entries differ)" if report.not_held else "")
        )
    if conv_guess:
        report.notes.append(
            "no config.json beside the base: weights of modules named c_attn / c_proj / c_fc / "
            "q_attn taken for GPT-2 Conv1D, stored (in, out)"
        )
    report.params = sum(t["params"] for t in report.tensors)
    report.full_params = sum(t["full_params"] for t in report.tensors)
    report.relative_error = math.sqrt(sq_err / sq_delta) if sq_delta > 0 else 0.0
    common = Counter(ranks.values()).most_common()
    r0 = max(k for k, c in common if c == common[0][1])
    cfg = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": os.fspath(base),
        "r": r0,
        "lora_alpha": float(alpha) if alpha is not None else r0,
        "target_modules": sorted(ranks),
        "rank_pattern": {m: k for m, k in sorted(ranks.items()) if k != r0},
        "alpha_pattern": {}
        if alpha is not None
        else {m: k for m, k in sorted(ranks.items()) if k != r0},
        "fan_in_fan_out": any(t["kind"] == "conv1d" for t in report.tensors),
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    if cfg["fan_in_fan_out"] and any(t["kind"] == "linear" for t in report.tensors):
        report.notes.append(
            "fan_in_fan_out is true for the Conv1D weights; peft sets it per layer, so the "
            "Linear ones load right (peft warns about them)"
        )
    report.files = _write_adapter(dst, tensors, cfg, fsync)
    return report


def _factor(
    d_oi: Any, rank: int | None, energy: float | None, alpha: float | None
) -> tuple[dict[str, Any], Any, Any, int]:
    """Truncated SVD of one delta (:func:`._lowrank.truncated_svd`): the report row, ``A``,
    ``B`` (divided by the scaling, so that peft's ``scaling * B @ A`` is the cut delta), the
    rank."""
    f = truncated_svd(d_oi, rank=rank, energy=energy)
    out, inn = d_oi.shape
    k = f.rank
    scale = (float(alpha) if alpha is not None else float(k)) / k
    err = f.rel_error * f.norm
    row = {
        "rank": k,
        "scaling": scale,
        "relative_error": f.rel_error,
        "energy": f.energy_kept,
        "params": k * (out + inn),
        "full_params": out * inn,
        "svd": "lowrank" if f.method == "svd_lowrank" else "full",
        "_err": (err * err, f.norm * f.norm),
    }
    return row, f.a, (f.b / scale).contiguous(), k


def _write_adapter(
    dst: Path, tensors: dict[str, Any], cfg: dict[str, Any], fsync: bool
) -> list[str]:
    """Write the two adapter files, each built aside and renamed in (weights first, the config
    last); the folder's other files are untouched."""
    import json

    from .._atomic import atomic_write
    from ..io import save

    dst.mkdir(parents=True, exist_ok=True)
    names = ["adapter_model.safetensors", "adapter_config.json"]
    for n in names:
        if (dst / n).is_dir():
            raise WriteError(f"{os.fspath(dst / n)}: is a folder; cannot write the adapter there")
    save(tensors, dst / names[0], fsync=fsync)
    with atomic_write(dst / names[1], fsync=fsync) as f:
        f.write((json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return names
