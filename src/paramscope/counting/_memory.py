"""Memory estimates for inference and training, per GPU under ZeRO stages 0–3.

Model-state memory only (what the parameters cost): weights, gradients, optimizer states and
fp32 master weights, **summed** per GPU. Activations, temporary buffers, the framework's
workspace and the CUDA context are not included: they depend on batch, sequence and kernels.

Rules (bytes per trainable parameter, Ψ parameters, N GPUs):

* inference: weights only, in ``dtype`` (integer tensors keep their own type);
* quantised weights (GPTQ, bitsandbytes, GGUF, ...: :mod:`paramscope._quantlayouts`) cost
  their stored bytes, their metadata (scales, zeros) included, whatever ``dtype``; they
  count at their logical size and are frozen (no gradients or optimizer states);
* training without mixed precision: weights, gradients and optimizer states all in ``dtype``;
* mixed precision (``mixed_precision=True``): 16-bit weights and gradients, fp32 master
  weights and fp32 optimizer states — for Adam 2 + 2 + (4 + 4 + 4) = 16 bytes (ZeRO paper);
* optimizer states: Adam/AdamW 2 per parameter (m, v), SGD 0, SGD with momentum 1,
  Adafactor factored: a row and a column vector per matrix (r + c instead of r·c), the full
  size for vectors, no first moment;
* ZeRO stage 1 shards optimizer states (with the master weights) over N, stage 2 also
  gradients, stage 3 also weights; buffers are replicated.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._dtypes import DType, parse_dtype
from .._enums import Role, StrEnum
from .._errors import ArgumentError
from .._manifest import Manifest

if TYPE_CHECKING:
    from ._lora import LoraSpec

__all__ = ["MemoryEstimate", "Optimizer", "estimate_memory", "parse_dtype"]


class Optimizer(StrEnum):
    """Optimizers whose state size is known."""

    ADAMW = "adamw"
    ADAM = "adam"
    SGD = "sgd"
    SGD_MOMENTUM = "sgd-momentum"
    ADAFACTOR = "adafactor"


@dataclass
class MemoryEstimate:
    """The result of :func:`estimate_memory`. Byte counts are per the whole model unless
    named ``per_gpu``.

    Attributes:
        params: parameters counted.
        trainable: trainable parameters (those that get gradients and optimizer states when
            training).
        weights: bytes of the parameters.
        buffers: bytes of buffers (replicated on every GPU).
        gradients: bytes of gradients.
        optimizer_states: bytes of optimizer states (master weights apart).
        master_weights: bytes of fp32 master weights (mixed precision).
        per_gpu: the same parts as held by one GPU after ZeRO sharding.
        per_gpu_bytes: their sum.
        total_bytes: ``per_gpu_bytes × num_gpus``: the whole job.
        settings: the options used.
        notes: what is and is not included, the source's own notes too (lazy tensors left
            out, packed or quantised weights, …).
        source: the source as given (a path or TARGET), ``None`` for an object in memory.
        activations: training activation bytes per GPU (a formula: ``details`` names it).
        kv_cache: inference KV cache bytes (exact for the config's shape).
        details: the activation formula and figures, the KV cache per token and sequence
            and the ``fit`` answer.
        terms: which parts are ``exact``, which a ``formula`` (with its source) and which
            are ``left_out``.
    """

    params: int
    trainable: int
    weights: int
    buffers: int
    gradients: int
    optimizer_states: int
    master_weights: int
    per_gpu: dict[str, int]
    per_gpu_bytes: int
    total_bytes: int
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    source: str | None = None
    activations: int = 0
    kv_cache: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    terms: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by ``paramscope memory --json``.

        Returns:
            ``total_bytes, per_gpu_bytes, breakdown, per_gpu, params, trainable, settings,
            notes, source, details, terms``.
        """
        return {
            "total_bytes": self.total_bytes,
            "per_gpu_bytes": self.per_gpu_bytes,
            "breakdown": {
                "weights": self.weights,
                "buffers": self.buffers,
                "gradients": self.gradients,
                "optimizer_states": self.optimizer_states,
                "master_weights": self.master_weights,
                "activations": self.activations,
                "kv_cache": self.kv_cache,
            },
            "per_gpu": self.per_gpu,
            "params": self.params,
            "trainable": self.trainable,
            "settings": self.settings,
            "notes": self.notes,
            "source": self.source,
            "details": self.details,
            "terms": self.terms,
        }

    def to_text(self, width: int | None = None) -> str:
        """The human form ``paramscope memory`` prints: each part for the whole model and per
        GPU, the totals and the notes.

        Args:
            width: unused (the lines are never wider than their content); the same signature
                as every report's ``to_text``.

        Returns:
            The text, without a final newline; strings are escaped for a terminal.

        Example:
            >>> from paramscope import Manifest, Entry, DType
            >>> e = estimate_memory(Manifest([Entry("w", (1000, 1000), DType.F32)]))
            >>> print(e.to_text().splitlines()[-2])
              total, all GPUs            4.0 MB
        """
        from .._text import printable_tree
        from ._render import memory_text

        return memory_text(printable_tree(self.to_dict()))


def _state_elements(opt: Optimizer, shape: tuple[int, ...], numel: int) -> int:
    if opt in (Optimizer.ADAM, Optimizer.ADAMW):
        return 2 * numel
    if opt is Optimizer.SGD:
        return 0
    if opt is Optimizer.SGD_MOMENTUM:
        return numel
    if len(shape) >= 2:  # Adafactor: factored second moment
        return math.prod(shape[:-2]) * (shape[-2] + shape[-1])
    return numel


def estimate_memory(
    source: Any,
    *,
    dtype: str | DType | None = None,
    training: bool = False,
    optimizer: str | Optimizer = Optimizer.ADAMW,
    mixed_precision: bool = False,
    zero_stage: int = 0,
    num_gpus: int = 1,
    lora: LoraSpec | None = None,
    config: Any = None,
    batch: int = 1,
    seq: int | None = None,
    tp: int = 1,
    sp: bool = False,
    pp: int = 1,
    recompute: str = "none",
    flash: bool = False,
    context: int | None = None,
    fit: int | str | None = None,
) -> MemoryEstimate:
    """Estimate the memory a model's parameters need, summed per GPU.

    Args:
        source: anything :func:`paramscope.count` takes (path, Manifest, ParamDict, module).
        dtype: the floating dtype the model runs in (``None``: as stored; with mixed
            precision the default is ``bf16``).
        training: add gradients and optimizer states.
        optimizer: ``adamw``, ``adam``, ``sgd``, ``sgd-momentum`` or ``adafactor``.
        mixed_precision: 16-bit weights/gradients with fp32 master weights and states.
        zero_stage: 0 (none), 1 (optimizer states), 2 (+ gradients), 3 (+ weights).
        num_gpus: data-parallel GPUs the states are sharded over.
        lora: a LoRA run (:class:`paramscope.LoraSpec`): the base frozen at its stored dtype
            (or ``dtype``), the adapters added in the spec's dtype; gradients and optimizer
            states for the adapters only. ``settings["lora"]`` gives the adapters' count and
            bytes (the tensors of the adapter file peft would save).
        config: the transformer's config (a dict of ``config.json`` keys, a zoo or
            transformers config) for activations and the KV cache; default: the module's
            ``config`` or the ``config.json`` of the source.
        batch: micro-batch (training) or sequences (inference).
        seq: training sequence length: adds activations by Korthikanti et al. 2022.
        tp: tensor-parallel size; must divide the heads.
        sp: sequence parallelism (with ``tp > 1``).
        pp: pipeline stages (activations of the first stage); must divide the layers.
        recompute: ``none``, ``selective`` or ``full`` activation recomputation.
        flash: flash attention (no ``s × s`` attention matrix kept).
        context: inference tokens per sequence: adds the KV cache.
        fit: inference memory budget (``"80GB"``): the longest context, or with
            ``context`` the largest batch, whose KV cache fits next to the weights
            (``details["kv_cache"]["fit"]``).

    Returns:
        A :class:`MemoryEstimate`.

    Raises:
        ArgumentError: invalid options (stage outside 0–3, fewer than one GPU, fp32 with
            mixed precision, unknown optimizer or dtype).
        ArgumentTypeError: a source of a type it does not take.

    Example:
        >>> from paramscope import Manifest, Entry, DType
        >>> m = Manifest([Entry("w", (1000, 1000), DType.F32)])
        >>> e = estimate_memory(m, dtype="bf16", training=True, mixed_precision=True)
        >>> e.per_gpu_bytes // 1_000_000  # 2 + 2 + 12 bytes per parameter
        16
    """
    from ._count import to_manifest

    if zero_stage not in (0, 1, 2, 3):
        raise ArgumentError(
            f"estimate_memory: zero_stage={zero_stage!r}: expected 0, 1, 2 or 3 (0: none, "
            "1: optimizer states sharded, 2: + gradients, 3: + weights)"
        )
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1:
        raise ArgumentError(
            f"estimate_memory: num_gpus={num_gpus!r}: expected a positive int, the "
            "data-parallel GPUs"
        )
    try:
        opt = Optimizer(str(optimizer).lower())
    except ValueError:
        raise ArgumentError(
            f"estimate_memory: optimizer={optimizer!r}: expected one of "
            f"{', '.join(repr(o.value) for o in Optimizer)}"
        ) from None
    run_dtype = parse_dtype(dtype) if dtype is not None else None
    if mixed_precision:
        run_dtype = run_dtype or DType.BF16
        if run_dtype.bits != 16:
            raise ArgumentError(
                f"estimate_memory: dtype={dtype!r} with mixed_precision=True: mixed precision "
                "runs in a 16-bit dtype; pass dtype='bf16' or 'fp16', or drop "
                "mixed_precision"
            )
    m: Manifest = to_manifest(source, "estimate_memory")
    plan = None
    if lora is not None:
        from ._lora import lora_manifest, module_layers

        layers = module_layers(source) if hasattr(source, "named_modules") else None
        m, plan = lora_manifest(m, lora, layers)
    params = trainable = weights = buffers = grads = states = master = 0
    for e in m.values():
        if e.tie is not None:
            continue
        layout = e.extra.get("quant_layout") if e.extra else None
        if layout is not None:  # a quantised weight's data or metadata: stored bytes as is
            weights += e.nbytes
            if layout.get("part") != "meta":
                params += e.logical_numel
            continue
        dt = run_dtype if (run_dtype is not None and e.dtype.is_float) else e.dtype
        nbytes = dt.nbytes(e.numel)
        if e.role is Role.BUFFER:
            buffers += nbytes
            continue
        params += e.numel
        weights += nbytes
        trainable += e.numel if e.trainable else 0
        if not (training and e.trainable):
            continue
        grads += nbytes
        state_bytes = 4 if mixed_precision else max(dt.bits // 8, 1)
        states += _state_elements(opt, e.shape, e.numel) * state_bytes
        if mixed_precision:
            master += 4 * e.numel

    def shard(n: int, stage: int) -> int:
        return -(-n // num_gpus) if zero_stage >= stage else n

    per_gpu = {
        "weights": shard(weights, 3),
        "buffers": buffers,
        "gradients": shard(grads, 2),
        "optimizer_states": shard(states, 1),
        "master_weights": shard(master, 1),
    }
    from ._activations import memory_terms, terms_note

    extra = memory_terms(
        source,
        m,
        resident=per_gpu["weights"] + buffers,
        run_bits=run_dtype.bits if run_dtype is not None else None,
        training=training,
        config=config,
        batch=batch,
        seq=seq,
        tp=tp,
        sp=sp,
        pp=pp,
        recompute=recompute,
        flash=flash,
        context=context,
        fit=fit,
    )
    per_gpu["activations"] = extra["activations"]
    per_gpu["kv_cache"] = extra["kv_cache"]
    per = sum(per_gpu.values())
    notes = [
        "model states only: activations, temporary buffers, framework workspace and the "
        "CUDA context are not included (they depend on batch, sequence and kernels)"
    ]
    if "activations" in extra["details"] or "kv_cache" in extra["details"]:
        notes = [
            "exact: weights, buffers, gradients, optimizer states"
            + (", KV cache" if "kv_cache" in extra["details"] else "")
            + "; left out: temporary buffers, framework workspace, allocator fragmentation "
            "and the CUDA context"
            + ("" if "activations" in extra["details"] else "; activations (training only)")
        ]
        notes += extra["notes"]
    if m.roles.value == "inferred" and training:
        notes.append("trainable flags inferred: every parameter assumed trainable")
    # what the reader saw (lazy tensors left out, packed or quantised weights, …)
    if plan is not None and lora is not None:
        notes.append(
            f"LoRA {lora.describe()}: {len(plan.modules)} modules, {plan.adapter_params:,} "
            f"adapter parameters in {plan.spec.dtype} ({plan.adapter_bytes:,} bytes, the "
            "tensors of the adapter file); gradients and optimizer states for them only, "
            "the base frozen"
        )
    notes.extend(n for n in m.notes if n not in notes)
    return MemoryEstimate(
        params=params,
        trainable=trainable,
        weights=weights,
        buffers=buffers,
        gradients=grads,
        optimizer_states=states,
        master_weights=master,
        per_gpu=per_gpu,
        per_gpu_bytes=per,
        total_bytes=per * num_gpus,
        settings={
            "dtype": run_dtype.value if run_dtype else None,
            "training": training,
            "optimizer": opt.value if training else None,
            "mixed_precision": mixed_precision,
            "zero_stage": zero_stage,
            "num_gpus": num_gpus,
            **({"lora": plan.to_dict()} if plan is not None else {}),
        },
        notes=notes,
        source=os.fspath(source) if isinstance(source, (str, os.PathLike)) else m.source,
        activations=extra["activations"],
        kv_cache=extra["kv_cache"],
        details=extra["details"],
        terms=terms_note("activations" in extra["details"], "kv_cache" in extra["details"]),
    )
