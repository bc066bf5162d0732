"""paramscope.merge against mergekit, the library that defines these merges.

A tiny Llama (base) and two "fine-tunes" (base + seeded noise) are written with
``save_pretrained``; mergekit runs in this process through its Python API
(``mergekit.merge.run_merge``, CPU) on the same folders, and every tensor of its output is
compared with paramscope's.

Conventions where paramscope differs from mergekit 0.1.5 ON PURPOSE (each one asserted below):

1. Math dtype: mergekit's task_arithmetic / ties / dare_* compute in the dtype of the inputs
   (bf16 checkpoints -> bf16 arithmetic, ``merge_methods/generalized_task_arithmetic.py``);
   paramscope computes in float32 and casts once. On fp32 inputs both are the same; on bf16
   inputs paramscope equals mergekit run with ``dtype: float32`` (fp32 math), not mergekit's
   default.
2. DARE rescale: mergekit rescales the kept deltas of a tensor by ||d||_1 / ||d * mask||_1
   (``sparsify.rescaled_masked_tensor``, L1 norm matching); paramscope by exactly 1 / density
   (the DARE paper). Same in expectation, different per tensor.
3. DARE masks: mergekit draws from the global torch RNG in its executor's order; paramscope
   from a generator seeded by (seed, tensor name, source index). Masks differ, so at
   density < 1 only statistics are compared.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import load_file

from paramscope.merging import merge

# mergekit computes these in float32 too (fp32 inputs): only summation order may differ.
RTOL, ATOL = 1e-5, 1e-6


def _config(**kw: Any):
    return transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        tie_word_embeddings=False,
        **kw,
    )


def _save_models(root: Path, dtype: torch.dtype) -> dict[str, Path]:
    """base + two fine-tunes (base + N(0, 0.01) noise, seeds 1 and 2) as HF folders."""
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_config())
    base_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    paths = {}
    for label, seed in (("base", None), ("a", 1), ("b", 2)):
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for name, param in model.state_dict().items():
                value = base_sd[name]
                if gen is not None:
                    value = value + 0.01 * torch.randn(value.shape, generator=gen)
                param.copy_(value)
        path = root / label
        model.to(dtype).save_pretrained(path, safe_serialization=True)
        model.to(torch.float32)
        paths[label] = path
    return paths


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _save_models(tmp_path_factory.mktemp("fp32"), torch.float32)


@pytest.fixture(scope="module")
def models_bf16(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _save_models(tmp_path_factory.mktemp("bf16"), torch.bfloat16)


def _read(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def run_mergekit(
    out: Path,
    method: str,
    models: list[tuple[Path, dict[str, Any]]],
    *,
    base: Path | None = None,
    parameters: dict[str, Any] | None = None,
    dtype: str | None = None,
    out_dtype: str | None = "float32",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """mergekit's own pipeline (config -> plan -> executor -> writer), CPU, in this process."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    spec: dict[str, Any] = {
        "merge_method": method,
        "models": [{"model": str(p), "parameters": params} for p, params in models],
    }
    if base is not None:
        spec["base_model"] = str(base)
    if parameters:
        spec["parameters"] = parameters
    if dtype:
        spec["dtype"] = dtype
    if out_dtype:
        spec["out_dtype"] = out_dtype
    options = MergeOptions(
        device="cpu",
        copy_tokenizer=False,
        write_model_card=False,
        quiet=True,
        random_seed=seed,
    )
    run_merge(MergeConfiguration.model_validate(spec), str(out), options)
    return _read(out)


def run_paramscope(out: Path, sources: list[Path], **kw: Any) -> dict[str, torch.Tensor]:
    dst = out / "merged.safetensors"
    out.mkdir(parents=True, exist_ok=True)
    report = merge([str(s) for s in sources], dst=str(dst), show_progress=False, **kw)
    assert report.to_dict()["method"] == kw.get("method", "linear")
    return load_file(str(dst))


def assert_same(ps: dict[str, torch.Tensor], mk: dict[str, torch.Tensor], rtol=RTOL, atol=ATOL):
    """Every tensor of mergekit's output is in paramscope's with the same shape, dtype and
    values (allclose); the message names every differing tensor with its numbers."""
    assert sorted(ps) == sorted(mk), (sorted(set(ps) ^ set(mk)), "names differ")
    bad = []
    for name in sorted(mk):
        x, y = ps[name], mk[name]
        assert x.shape == y.shape, (name, x.shape, y.shape)
        assert x.dtype == y.dtype, (name, x.dtype, y.dtype)
        if not torch.allclose(x.double(), y.double(), rtol=rtol, atol=atol):
            diff = (x.double() - y.double()).abs()
            close = torch.isclose(x.double(), y.double(), rtol=rtol, atol=atol)
            bad.append(
                f"{name}: max|diff|={diff.max().item():.3e} "
                f"mismatched={int((~close).sum())}/{x.numel()}"
            )
    assert not bad, "; ".join(bad)


# ------------------------------------------------------------------ deterministic methods


def test_fixture_is_what_mergekit_merges(models, tmp_path):
    """mergekit writes exactly the tensors the checkpoint holds (untied Llama: the template's
    names), and the slerp case exercises both of its branches (the fine-tune's weights are
    ~0.9 cosine to the base: true slerp; the norms, ~1.0: the lerp fallback)."""
    mk = run_mergekit(tmp_path / "mk", "linear", [(models["a"], {"weight": 1.0})])
    assert sorted(mk) == sorted(_read(models["a"]))
    base, a = _read(models["base"]), _read(models["a"])
    dots = [
        torch.nn.functional.cosine_similarity(base[n].flatten(), a[n].flatten(), dim=0).item()
        for n in base
    ]
    assert any(abs(d) > 0.9995 for d in dots) and any(abs(d) < 0.99 for d in dots)


@pytest.mark.parametrize("normalize", [True, False])
def test_linear(models, tmp_path, normalize):
    mk = run_mergekit(
        tmp_path / "mk",
        "linear",
        [(models["a"], {"weight": 0.3}), (models["b"], {"weight": 0.7})],
        parameters={"normalize": normalize},
    )
    ps = run_paramscope(
        tmp_path / "ps",
        [models["a"], models["b"]],
        method="linear",
        weights=[0.3, 0.7],
        normalize=normalize,
    )
    assert_same(ps, mk)


def test_linear_default_normalizes_like_mergekit(models, tmp_path):
    """normalize=None means mergekit's default (True for linear): weights 1 and 3 give the
    weighted mean, not the weighted sum."""
    mk = run_mergekit(
        tmp_path / "mk", "linear", [(models["a"], {"weight": 1.0}), (models["b"], {"weight": 3.0})]
    )
    ps = run_paramscope(
        tmp_path / "ps", [models["a"], models["b"]], method="linear", weights=[1, 3]
    )
    assert_same(ps, mk)


@pytest.mark.parametrize("t", [0.3, 0.0, 1.0])
def test_slerp(models, tmp_path, t):
    """mergekit: slerp(t, base, other), t=0 -> base. paramscope: t=0 -> base (if given)."""
    mk = run_mergekit(
        tmp_path / "mk",
        "slerp",
        [(models["base"], {}), (models["a"], {})],
        base=models["base"],
        parameters={"t": t},
    )
    ps = run_paramscope(tmp_path / "ps", [models["a"]], base=models["base"], method="slerp", t=t)
    assert_same(ps, mk)
    if t in (0.0, 1.0):
        end = _read(models["base"] if t == 0.0 else models["a"])
        assert_same(ps, end)


def test_slerp_two_sources_without_base(models, tmp_path):
    """merge([x, y], method="slerp") without a base: t=0 is the first source, as mergekit's
    base; same tensors as mergekit with base_model = the first."""
    mk = run_mergekit(
        tmp_path / "mk",
        "slerp",
        [(models["a"], {}), (models["b"], {})],
        base=models["a"],
        parameters={"t": 0.3},
    )
    ps = run_paramscope(tmp_path / "ps", [models["a"], models["b"]], method="slerp", t=0.3)
    assert_same(ps, mk)


@pytest.mark.parametrize(
    ("method", "mk_params", "ps_kw"),
    [
        ("task_arithmetic", {}, {}),
        ("task_arithmetic", {"lambda": 0.8}, {"scale": 0.8}),
        ("task_arithmetic", {"normalize": True}, {"normalize": True}),
        ("ties", {}, {"density": 0.5}),
        (
            "ties",
            {"normalize": False, "lambda": 1.5},
            {"density": 0.5, "normalize": False, "scale": 1.5},
        ),
        ("ties", {}, {"density": 1.0}),
        ("dare_linear", {}, {"density": 1.0}),
        ("dare_ties", {}, {"density": 1.0}),
    ],
    ids=[
        "task_arithmetic",
        "task_arithmetic-lambda",
        "task_arithmetic-normalize",
        "ties-d0.5",
        "ties-d0.5-nonorm-lambda",
        "ties-d1",
        "dare_linear-d1",
        "dare_ties-d1",
    ],
)
def test_task_vector_methods(models, tmp_path, method, mk_params, ps_kw):
    density = ps_kw.get("density", 1.0)
    mk = run_mergekit(
        tmp_path / "mk",
        method,
        [
            (models["a"], {"weight": 0.3, "density": density}),
            (models["b"], {"weight": 0.7, "density": density}),
        ],
        base=models["base"],
        parameters=mk_params,
    )
    ps = run_paramscope(
        tmp_path / "ps",
        [models["a"], models["b"]],
        base=models["base"],
        method=method,
        weights=[0.3, 0.7],
        **ps_kw,
    )
    assert_same(ps, mk)


def test_ties_density_per_source(models, tmp_path):
    """One density per source (mergekit: the per-model ``density`` parameter)."""
    mk = run_mergekit(
        tmp_path / "mk",
        "ties",
        [
            (models["a"], {"weight": 0.5, "density": 0.6}),
            (models["b"], {"weight": 0.5, "density": 0.3}),
        ],
        base=models["base"],
    )
    ps = run_paramscope(
        tmp_path / "ps",
        [models["a"], models["b"]],
        base=models["base"],
        method="ties",
        weights=[0.5, 0.5],
        density=[0.6, 0.3],
    )
    assert_same(ps, mk)


# ------------------------------------------------------------------ dtype of the math (differs)


def test_bf16_math_is_float32_unlike_mergekit(models_bf16, tmp_path):
    """Difference 1: on bf16 checkpoints, paramscope's ties equals mergekit's with
    ``dtype: float32`` (fp32 math, bf16 output), and NOT mergekit's default, which subtracts,
    weights, elects and sums in bf16. (density 1: bf16 deltas have many equal magnitudes, and
    which of equal |delta| the top-k keeps is an unspecified tie-break in both libraries.)"""
    m = models_bf16
    srcs = [(m["a"], {"weight": 0.3}), (m["b"], {"weight": 0.7})]
    ps = run_paramscope(
        tmp_path / "ps",
        [m["a"], m["b"]],
        base=m["base"],
        method="ties",
        weights=[0.3, 0.7],
    )
    assert all(v.dtype == torch.bfloat16 for v in ps.values())  # output dtype = the base's
    mk32 = run_mergekit(
        tmp_path / "mk32", "ties", srcs, base=m["base"], dtype="float32", out_dtype="bfloat16"
    )
    # the same fp32 operations, cast once to bf16: bitwise equal (measured: 0 of 26,784 differ)
    assert_same(ps, mk32, rtol=0, atol=0)
    mk16 = run_mergekit(tmp_path / "mk16", "ties", srcs, base=m["base"], out_dtype=None)
    assert all(v.dtype == torch.bfloat16 for v in mk16.values())
    differs = sum(int((ps[n] != mk16[n]).sum()) for n in mk16)
    # measured: 6,634 of 26,784 elements differ (bf16 rounding of each intermediate)
    assert differs > 0, "bf16 arithmetic in mergekit should round differently somewhere"
    # ... and paramscope is the closer of the two to the fp32-math result
    err_ps = sum((ps[n].float() - mk32[n].float()).abs().sum().item() for n in mk32)
    err_16 = sum((mk16[n].float() - mk32[n].float()).abs().sum().item() for n in mk32)
    assert err_ps < err_16


# ------------------------------------------------- DARE at density 0.5 (statistics)

P = 0.5


def _deltas(merged: dict[str, torch.Tensor], base: dict[str, torch.Tensor]):
    return {n: merged[n].double() - base[n].double() for n in base}


def _band(p: float, n: int, sigmas: float = 5.0) -> float:
    return sigmas * math.sqrt(p * (1 - p) / n)


def test_dare_linear_statistics(models, tmp_path):
    """One fine-tune, weight 1, density 0.5: the fraction of changed elements is ~density
    (5-sigma binomial band) for both; the merged delta's L1 and L2 norms match mergekit's.
    Difference 2: paramscope's kept deltas are exactly delta / density; mergekit's are
    delta * ||d||_1 / ||d * mask||_1 (per tensor), close to but not exactly 1 / density."""
    mk = run_mergekit(
        tmp_path / "mk",
        "dare_linear",
        [(models["a"], {"weight": 1.0, "density": P})],
        base=models["base"],
    )
    ps = run_paramscope(
        tmp_path / "ps",
        [models["a"]],
        base=models["base"],
        method="dare_linear",
        weights=[1.0],
        density=P,
        seed=0,
    )
    base, a = _read(models["base"]), _read(models["a"])
    d = _deltas(a, base)
    dps, dmk = _deltas(ps, base), _deltas(mk, base)
    n = sum(t.numel() for t in d.values())
    for label, dd in (("paramscope", dps), ("mergekit", dmk)):
        changed = sum(int((t != 0).sum()) for t in dd.values()) / n
        assert abs(changed - P) < _band(P, n), (label, changed, P, _band(P, n))
    # Both keep the L1 norm of the delta (mergekit exactly per tensor, paramscope in expectation:
    # sum |d| m / p has relative sd sqrt((1-p)/(p n)) * (rms|d| / mean|d|)).
    l1 = sum(t.abs().sum().item() for t in d.values())
    l1_ps = sum(t.abs().sum().item() for t in dps.values())
    l1_mk = sum(t.abs().sum().item() for t in dmk.values())
    assert abs(l1_mk / l1 - 1) < 1e-4, l1_mk / l1
    assert abs(l1_ps / l1 - 1) < 5 * 1.3 * math.sqrt((1 - P) / (P * n)), l1_ps / l1
    l2_ps = math.sqrt(sum(t.square().sum().item() for t in dps.values()))
    l2_mk = math.sqrt(sum(t.square().sum().item() for t in dmk.values()))
    assert abs(l2_ps / l2_mk - 1) < 0.05, (l2_ps, l2_mk)
    # Difference 2, element by element on the largest tensor.
    name = max(d, key=lambda k: d[k].numel())
    kept_ps = dps[name] != 0
    assert torch.allclose(dps[name][kept_ps], d[name][kept_ps] / P, rtol=1e-5, atol=1e-7)
    kept_mk = dmk[name] != 0
    factor = (d[name].abs().sum() / d[name][kept_mk].abs().sum()).item()
    assert torch.allclose(dmk[name][kept_mk], d[name][kept_mk] * factor, rtol=1e-4, atol=1e-7)
    assert factor != 1 / P and abs(factor * P - 1) < 0.1, factor


def test_dare_rescale_l1_is_mergekits_convention(models, tmp_path):
    """``rescale="l1"`` opts into mergekit's DARE rescale: each tensor's merged delta has
    exactly the L1 norm of the source's delta (as mergekit's has), with paramscope's masks."""
    mk = run_mergekit(
        tmp_path / "mk",
        "dare_linear",
        [(models["a"], {"weight": 1.0, "density": P})],
        base=models["base"],
    )
    ps = run_paramscope(
        tmp_path / "ps",
        [models["a"]],
        base=models["base"],
        method="dare_linear",
        weights=[1.0],
        density=P,
        rescale="l1",
    )
    base, a = _read(models["base"]), _read(models["a"])
    d, dps, dmk = _deltas(a, base), _deltas(ps, base), _deltas(mk, base)
    for name in d:
        l1 = d[name].abs().sum().item()
        assert dps[name].abs().sum().item() == pytest.approx(l1, rel=1e-5), name
        assert dmk[name].abs().sum().item() == pytest.approx(l1, rel=1e-5), name
        assert not torch.equal(dps[name], dmk[name])  # Difference 3: different masks


def test_dare_ties_statistics(models, tmp_path):
    """Two fine-tunes, weights 0.5/0.5, density 0.5: an element changes unless both sources
    dropped it, so ~1-(1-p)^2 = 0.75 change (independent masks per source); the norm of the
    merged delta is within 5% of mergekit's."""
    srcs = [
        (models["a"], {"weight": 0.5, "density": P}),
        (models["b"], {"weight": 0.5, "density": P}),
    ]
    mk = run_mergekit(tmp_path / "mk", "dare_ties", srcs, base=models["base"])
    ps = run_paramscope(
        tmp_path / "ps",
        [models["a"], models["b"]],
        base=models["base"],
        method="dare_ties",
        weights=[0.5, 0.5],
        density=P,
        seed=0,
    )
    base = _read(models["base"])
    dps, dmk = _deltas(ps, base), _deltas(mk, base)
    n = sum(t.numel() for t in dps.values())
    want = 1 - (1 - P) ** 2
    for label, dd in (("paramscope", dps), ("mergekit", dmk)):
        changed = sum(int((t != 0).sum()) for t in dd.values()) / n
        assert abs(changed - want) < _band(want, n), (label, changed, want)
    l2_ps = math.sqrt(sum(t.square().sum().item() for t in dps.values()))
    l2_mk = math.sqrt(sum(t.square().sum().item() for t in dmk.values()))
    assert abs(l2_ps / l2_mk - 1) < 0.05, (l2_ps, l2_mk)


def test_dare_seeded_is_reproducible_and_seed_dependent(models, tmp_path):
    """Difference 3: paramscope's masks come from its own seed (not the global torch RNG):
    the same seed gives the same bytes whatever the global RNG state; another seed differs."""
    kw = dict(base=models["base"], method="dare_linear", weights=[1.0], density=P)
    torch.manual_seed(123)
    one = run_paramscope(tmp_path / "1", [models["a"]], seed=7, **kw)
    torch.manual_seed(456)
    two = run_paramscope(tmp_path / "2", [models["a"]], seed=7, **kw)
    three = run_paramscope(tmp_path / "3", [models["a"]], seed=8, **kw)
    assert all(torch.equal(one[n], two[n]) for n in one)
    assert any(not torch.equal(one[n], three[n]) for n in one)
