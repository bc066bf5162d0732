"""Truncated SVD and GPT-2 ``Conv1D`` detection, shared by ``lora_extract`` and ``factorize``.

A 2-D float matrix ``M`` (``out × in``) with singular values ``s`` is cut to ``M ≈ B @ A``
with ``A = sqrt(S_r) V_rᵀ`` (``r × in``) and ``B = U_r sqrt(S_r)`` (``out × r``): the square
roots of the singular values go to both factors, so both have the same scale. The rank is
given, or is the smallest one keeping a fraction of the energy ``Σσ²``.

One rule picks the SVD (:func:`use_lowrank`): a fixed rank ``r`` on a matrix whose smaller side
``k`` is at least :data:`LOWRANK_MIN_DIM`, with the sketch ``q = 2r + 10`` at most
``k /`` :data:`LOWRANK_FRACTION`, is cut by ``torch.svd_lowrank`` (randomised, ``q`` columns,
four power iterations, seeded so the factors are the same on every run); everything else, and
every rank chosen by energy (which needs the whole spectrum), by ``torch.linalg.svd``.

The numbers are measured the same way for both: the relative error is
``||M − B @ A||_F / ||M||_F`` of the factors returned (computed, not inferred from the
spectrum), the energy kept is ``Σ_{i<r} σ_i² / Σσ²`` (``Σσ²`` from the whole spectrum after a
full SVD, ``||M||_F²`` after ``svd_lowrank``, which sees only ``q`` values).

GPT-2-family checkpoints store the weights of their ``Conv1D`` layers ``in × out``; they are
told apart by the ``model_type`` of the ``config.json`` beside the checkpoint
(:func:`conv1d_model`) and the last part of the module's name (:func:`conv1d_name`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__: list[str] = []

#: The smaller side from which a fixed rank may use ``torch.svd_lowrank``.
LOWRANK_MIN_DIM = 256
#: ``torch.svd_lowrank`` only while its sketch (``2r + 10`` columns) is at most this fraction
#: of the smaller side, where it is clearly cheaper than a full SVD.
LOWRANK_FRACTION = 4
#: An energy fraction within this of the one asked for counts as reached (so that
#: ``energy=1`` stops at the numerical rank instead of keeping float rounding noise).
ENERGY_TOL = 1e-9
#: transformers model types whose modules of these names are ``Conv1D`` (weights ``in × out``).
CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})
CONV1D_NAMES = frozenset({"c_attn", "q_attn", "c_proj", "c_fc"})


@dataclass(frozen=True)
class LowRank:
    """A truncated SVD ``M ≈ b @ a`` and its numbers.

    Attributes:
        a: ``sqrt(S_r) V_rᵀ``, ``r × in`` (float32, or float64 for a float64 matrix).
        b: ``U_r sqrt(S_r)``, ``out × r``.
        rank: ``r``.
        rel_error: ``||M − b @ a||_F / ||M||_F`` (0 for a zero matrix).
        energy_kept: the fraction of ``Σσ²`` the ``r`` leading singular values hold.
        method: ``svd`` (``torch.linalg.svd``) or ``svd_lowrank``.
        norm: ``||M||_F``.

    Example:
        >>> import torch
        >>> f = truncated_svd(torch.eye(3), rank=1)
        >>> f.a.shape, f.b.shape, f.method
        (torch.Size([1, 3]), torch.Size([3, 1]), 'svd')
    """

    a: torch.Tensor
    b: torch.Tensor
    rank: int
    rel_error: float
    energy_kept: float
    method: str
    norm: float


def work_dtype(m: torch.Tensor) -> torch.Tensor:
    """The matrix in the dtype the SVD runs in: float64 stays float64, the rest is float32.

    Args:
        m: a float tensor.

    Returns:
        ``m`` itself when it already has that dtype, else a converted copy.

    Example:
        >>> import torch
        >>> work_dtype(torch.ones(2, 2, dtype=torch.bfloat16)).dtype
        torch.float32
    """
    import torch

    return m.to(torch.float64 if m.dtype == torch.float64 else torch.float32)


def use_lowrank(shape: tuple[int, ...], rank: int | None) -> bool:
    """Whether :func:`truncated_svd` cuts a matrix of this shape by ``torch.svd_lowrank``.

    Args:
        shape: ``(out, in)``.
        rank: the fixed rank, or ``None`` for a rank chosen by energy (always a full SVD).

    Returns:
        ``True`` when the smaller side ``k >= LOWRANK_MIN_DIM`` and
        ``(2 * rank + 10) * LOWRANK_FRACTION <= k``.

    Example:
        >>> use_lowrank((300, 280), 2), use_lowrank((300, 280), 64), use_lowrank((64, 64), 2)
        (True, False, False)
    """
    k = min(shape)
    return rank is not None and k >= LOWRANK_MIN_DIM and (2 * rank + 10) * LOWRANK_FRACTION <= k


def singular_squares(m: torch.Tensor) -> torch.Tensor:
    """The squared singular values of a matrix (float64), largest first, without the factors.

    Args:
        m: a 2-D float tensor (computed in float32, float64 stays float64).

    Returns:
        A 1-D float64 tensor of ``min(m.shape)`` values.

    Example:
        >>> import torch
        >>> singular_squares(torch.diag(torch.tensor([3.0, 1.0]))).tolist()
        [9.0, 1.0]
    """
    import torch

    return torch.linalg.svdvals(work_dtype(m)).to(torch.float64) ** 2


def rank_for_energy(s2: torch.Tensor, energy: float) -> int:
    """The smallest rank whose leading squared singular values hold ``energy`` of their sum.

    Args:
        s2: squared singular values, largest first (:func:`singular_squares`).
        energy: the fraction to keep, ``0 < energy <= 1``; reached within :data:`ENERGY_TOL`.

    Returns:
        A rank between 1 and ``len(s2)`` (1 for a zero matrix).

    Example:
        >>> import torch
        >>> s2 = torch.tensor([6.0, 3.0, 1.0, 0.0], dtype=torch.float64)
        >>> rank_for_energy(s2, 0.6), rank_for_energy(s2, 0.9), rank_for_energy(s2, 1.0)
        (1, 2, 3)
    """
    total = float(s2.sum())
    if total == 0.0:
        return 1
    frac = s2.cumsum(0) / total
    return min(int((frac < energy - ENERGY_TOL).sum()) + 1, s2.numel())


def truncated_svd(
    m: torch.Tensor,
    *,
    rank: int | None = None,
    energy: float | None = None,
    method: str | None = None,
) -> LowRank:
    """Cut a matrix to ``b @ a`` at a fixed rank, or at the smallest rank keeping ``energy``.

    Args:
        m: a 2-D float tensor ``out × in`` (computed in float32, float64 stays float64; the
            factors keep that dtype).
        rank: the rank (at most ``min(m.shape)``; a larger one is cut to it).
        energy: instead of ``rank``: the fraction ``0 < energy <= 1`` of ``Σσ²`` to keep.
        method: ``svd`` or ``svd_lowrank`` to override the rule of :func:`use_lowrank`
            (``svd_lowrank`` only with ``rank``).

    Returns:
        A :class:`LowRank`: the factors, the rank, the relative Frobenius error of ``b @ a``,
        the energy kept and the method used.

    Raises:
        ArgumentError: neither or both of ``rank`` and ``energy``, a rank below 1, or
            ``svd_lowrank`` asked for with ``energy`` (callers check their options first).

    Example:
        >>> import torch
        >>> m = torch.diag(torch.tensor([4.0, 2.0, 1.0]))
        >>> f = truncated_svd(m, rank=2)
        >>> f.rank, round(f.rel_error, 4), round(f.energy_kept, 4)
        (2, 0.2182, 0.9524)
        >>> truncated_svd(m, energy=0.9).rank
        2
        >>> torch.allclose(f.b @ f.a, torch.diag(torch.tensor([4.0, 2.0, 0.0])), atol=1e-6)
        True
    """
    import torch

    from .._errors import ArgumentError

    if (rank is None) == (energy is None) or (rank is not None and rank < 1):
        raise ArgumentError(
            f"truncated_svd: rank={rank!r}, energy={energy!r}: expected exactly one, rank >= 1"
        )
    if method is None:
        method = "svd_lowrank" if use_lowrank(tuple(m.shape), rank) else "svd"
    if method not in ("svd", "svd_lowrank") or (method == "svd_lowrank" and rank is None):
        raise ArgumentError(
            f"truncated_svd: method={method!r}: expected svd, or svd_lowrank with a rank"
        )
    w = work_dtype(m)
    kmax = min(w.shape)
    norm = float(torch.linalg.vector_norm(w))
    if method == "svd_lowrank":
        assert rank is not None
        r = min(rank, kmax)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            u, s, v = torch.svd_lowrank(w, q=min(2 * r + 10, kmax), niter=4)
        vh = v.T
        total = norm * norm
    else:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        s2_all = s.double() ** 2
        r = min(rank, kmax) if rank is not None else rank_for_energy(s2_all, energy)  # type: ignore[arg-type]
        total = float(s2_all.sum())
    sq = s[:r].sqrt()
    a = (sq[:, None] * vh[:r]).contiguous()
    b = (u[:, :r] * sq[None, :]).contiguous()
    if norm == 0.0 or total == 0.0:
        return LowRank(a, b, r, 0.0, 1.0, method, norm)
    err = float(torch.linalg.vector_norm(w - b @ a))
    kept = min(float((s[:r].double() ** 2).sum()) / total, 1.0)
    return LowRank(a, b, r, err / norm, kept, method, norm)


def conv1d_model(path: str | os.PathLike[str]) -> bool | None:
    """Whether the ``config.json`` beside a checkpoint names a GPT-2-family model (Conv1D).

    Args:
        path: the checkpoint: a folder (its ``config.json``) or a file (the one beside it).

    Returns:
        ``True`` when its ``model_type`` is one of :data:`CONV1D_MODEL_TYPES`, ``False`` for
        another ``model_type``, ``None`` when there is no readable config with a string
        ``model_type`` (missing, too large, not JSON); each caller says what it assumes then.

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp())
        >>> conv1d_model(d / "model.safetensors") is None
        True
        >>> _ = (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
        >>> conv1d_model(d / "model.safetensors"), conv1d_model(d)
        (True, True)
    """
    from ..io._quantconfig import ConfigTooLarge, read_config_json

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    try:
        cfg = read_config_json(folder / "config.json")
    except (OSError, ValueError, RecursionError, ConfigTooLarge):
        return None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        return None
    return cfg["model_type"] in CONV1D_MODEL_TYPES


def conv1d_name(module: str) -> bool:
    """Whether a module's name is one of a GPT-2-family model's ``Conv1D`` layers.

    Args:
        module: the module's dotted name (``transformer.h.0.attn.c_attn``).

    Returns:
        ``True`` when its last part is in :data:`CONV1D_NAMES`.

    Example:
        >>> conv1d_name("transformer.h.0.attn.c_attn"), conv1d_name("model.layers.0.q_proj")
        (True, False)
    """
    return module.rsplit(".", 1)[-1] in CONV1D_NAMES
