"""``paramscope merge`` (issue 16) end to end, in process: options, ``--json``, spec files in
paramscope's and mergekit's YAML form, per-tensor ``--set``, ``--missing``, shards, dtype, and
bad input (exit 2, one line on stderr naming the problem, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import paramscope
from conftest import CliResult
from test_merge import REPORT_KEYS, _rand

NAMES = ("emb.weight", "layer.weight", "layer.bias", "lm_head.weight")


def _sd(seed: int) -> dict[str, torch.Tensor]:
    return {
        "emb.weight": _rand(16, 8, seed=seed),
        "layer.weight": _rand(8, 8, seed=seed + 1),
        "layer.bias": _rand(8, seed=seed + 2),
        "lm_head.weight": _rand(16, 8, seed=seed + 3),
    }


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """base / a / b checkpoints in the current folder; b.safetensors and a/ (HF shards)."""
    monkeypatch.chdir(tmp_path)
    paramscope.save(_sd(0), tmp_path / "base.safetensors")
    paramscope.save(_sd(10), tmp_path / "a.safetensors")
    paramscope.save(_sd(20), tmp_path / "b.safetensors")
    return tmp_path


def _load(path: Path | str) -> dict[str, torch.Tensor]:
    return dict(paramscope.load(path).items())


def _same(x: dict, y: dict) -> bool:
    return sorted(x) == sorted(y) and all(torch.equal(x[k], y[k]) for k in x)


def _one_error_line(r: CliResult, *needles: str) -> str:
    assert r.code == 2, r
    assert r.out == "", r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("paramscope: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in r.err
    return lines[0]


TIES = [
    "a.safetensors",
    "b.safetensors",
    "--base",
    "base.safetensors",
    "--method",
    "ties",
    "--weights",
    "0.3,0.7",
    "--density",
    "0.5",
]


def test_merge_with_options_writes_the_library_result(cli, work: Path) -> None:
    r = cli("merge", *TIES, "-o", "out.safetensors")
    assert r.code == 0, r
    assert r.out.strip() and "ties" in r.out
    want = paramscope.merge(
        ["a.safetensors", "b.safetensors"],
        base="base.safetensors",
        method="ties",
        weights=[0.3, 0.7],
        density=0.5,
    ).result
    out = _load(work / "out.safetensors")
    assert _same(out, dict(want.items()))
    # ties really happened: not task arithmetic
    ta = paramscope.merge(
        ["a.safetensors", "b.safetensors"],
        base="base.safetensors",
        method="task_arithmetic",
        weights=[0.3, 0.7],
    ).result
    assert not torch.equal(out["layer.weight"], ta["layer.weight"])


def test_merge_json(cli, work: Path) -> None:
    r = cli("merge", *TIES, "-o", "out.safetensors", "--json")
    assert r.code == 0 and r.err == "", r
    d = json.loads(r.out)
    assert set(d) >= REPORT_KEYS, REPORT_KEYS - set(d)
    assert d["sources"] == ["a.safetensors", "b.safetensors"] and d["base"] == "base.safetensors"
    assert d["method"] == "ties" and d["output"] == "out.safetensors"
    assert d["entries"] == len(NAMES)
    assert sorted(t["name"] for t in d["tensors"]) == sorted(NAMES)
    for t in d["tensors"]:
        assert 0.0 <= t["sign_conflict"] <= 1.0 and 0.0 < t["density_kept"] <= 1.0, t
    lib = paramscope.merge(
        ["a.safetensors", "b.safetensors"],
        base="base.safetensors",
        method="ties",
        weights=[0.3, 0.7],
        density=0.5,
    ).to_dict()
    for got, want in zip(
        sorted(d["tensors"], key=lambda t: t["name"]),
        sorted(lib["tensors"], key=lambda t: t["name"]),
        strict=True,
    ):
        assert got["cosine"] == pytest.approx(want["cosine"]), got["name"]
        assert got["sign_conflict"] == pytest.approx(want["sign_conflict"]), got["name"]


def test_every_option(cli, work: Path) -> None:
    a, b, base = _load("a.safetensors"), _load("b.safetensors"), _load("base.safetensors")
    # linear, weights not normalised
    r = cli(
        "merge",
        "a.safetensors",
        "b.safetensors",
        "--weights",
        "1,3",
        "--no-normalize",
        "-o",
        "lin.safetensors",
    )
    assert r.code == 0, r
    out = _load("lin.safetensors")
    for k in NAMES:
        assert torch.allclose(out[k], a[k] + 3 * b[k], atol=1e-5), k
    # slerp at t=1: the second model
    r = cli(
        "merge",
        "a.safetensors",
        "b.safetensors",
        "--method",
        "slerp",
        "--t",
        "1",
        "-o",
        "slerp.safetensors",
    )
    assert r.code == 0, r
    out = _load("slerp.safetensors")
    for k in NAMES:
        assert torch.allclose(out[k], b[k], atol=1e-6), k
    # task arithmetic with --scale and --set
    r = cli(
        "merge",
        "a.safetensors",
        "b.safetensors",
        "--base",
        "base.safetensors",
        "--method",
        "task_arithmetic",
        "--scale",
        "0.5",
        "--set",
        "lm_head.*:weight=0",
        "-o",
        "ta.safetensors",
    )
    assert r.code == 0, r
    out = _load("ta.safetensors")
    assert torch.equal(out["lm_head.weight"], base["lm_head.weight"])
    for k in ("emb.weight", "layer.weight", "layer.bias"):
        want = base[k] + 0.5 * ((a[k] - base[k]) + (b[k] - base[k]))
        assert torch.allclose(out[k], want, atol=1e-5), k
    # dare with a seed: the same seed gives the same file, another seed another
    outs = []
    for i, seed in enumerate((1, 1, 2)):
        r = cli(
            "merge",
            "a.safetensors",
            "b.safetensors",
            "--base",
            "base.safetensors",
            "--method",
            "dare_ties",
            "--density",
            "0.5",
            "--seed",
            str(seed),
            "-o",
            f"dare{i}.safetensors",
        )
        assert r.code == 0, r
        outs.append(_load(f"dare{i}.safetensors"))
    assert _same(outs[0], outs[1]) and not _same(outs[0], outs[2])
    lib = paramscope.merge(
        ["a.safetensors", "b.safetensors"],
        base="base.safetensors",
        method="dare_ties",
        density=0.5,
        seed=1,
    ).result
    assert _same(outs[0], dict(lib.items()))
    # dtype and shards
    # 656 bytes in all, no tensor over 256: three shards at least
    r = cli("merge", *TIES, "--dtype", "bf16", "--shard-size", "300B", "-o", "shards")
    assert r.code == 0, r
    files = sorted(p.name for p in (work / "shards").iterdir())
    assert "model.safetensors.index.json" in files and len(files) >= 3, files
    out = _load(work / "shards")
    assert all(v.dtype == torch.bfloat16 for v in out.values())
    assert sorted(out) == sorted(NAMES)


def test_missing_option(cli, work: Path) -> None:
    sd = _sd(30)
    sd["extra"] = torch.ones(3)
    paramscope.save(sd, work / "c.safetensors")
    r = cli("merge", "a.safetensors", "c.safetensors", "-o", "out.safetensors")
    _one_error_line(r, "extra", "a.safetensors")
    assert not (work / "out.safetensors").exists()
    r = cli("merge", "a.safetensors", "c.safetensors", "--missing", "skip", "-o", "out.safetensors")
    assert r.code == 0, r
    assert sorted(_load("out.safetensors")) == sorted(NAMES)
    r = cli(
        "merge", "a.safetensors", "c.safetensors", "--missing", "present", "-o", "out2.safetensors"
    )
    assert r.code == 0, r
    assert torch.equal(_load("out2.safetensors")["extra"], torch.ones(3))


# ---------------------------------------------------------------------------- spec files
PARAMSCOPE_SPEC = """\
method: ties
base: base.safetensors
sources:
  - a.safetensors
  - b.safetensors
weights: [0.3, 0.7]
density: 0.5
output: from_spec.safetensors
"""

MERGEKIT_SPEC = """\
merge_method: ties
base_model: base.safetensors
models:
  - model: a.safetensors
    parameters:
      weight: 0.3
      density: 0.5
  - model: b.safetensors
    parameters:
      weight: 0.7
      density: 0.5
parameters:
  normalize: true
dtype: float32
"""

# mergekit's README form: the base model listed among the models, without parameters
MERGEKIT_SPEC_BASE_LISTED = """\
models:
  - model: base.safetensors
  - model: a.safetensors
    parameters:
      density: 0.5
      weight: 0.3
  - model: b.safetensors
    parameters:
      density: 0.5
      weight: 0.7
merge_method: ties
base_model: base.safetensors
parameters:
  normalize: true
dtype: float32
"""


def test_spec_files_give_the_options_result(cli, work: Path) -> None:
    r = cli("merge", *TIES, "-o", "opts.safetensors")
    assert r.code == 0, r
    want = _load("opts.safetensors")
    (work / "ps.yaml").write_text(PARAMSCOPE_SPEC)
    r = cli("merge", "ps.yaml")
    assert r.code == 0, r
    assert _same(_load("from_spec.safetensors"), want)
    r = cli("merge", "ps.yaml", "-o", "other.safetensors", "--json")  # -o wins over output:
    assert r.code == 0, r
    assert json.loads(r.out)["output"] == "other.safetensors"
    assert _same(_load("other.safetensors"), want)
    for i, text in enumerate((MERGEKIT_SPEC, MERGEKIT_SPEC_BASE_LISTED)):
        (work / f"mk{i}.yaml").write_text(text)
        r = cli("merge", f"mk{i}.yaml", "-o", f"mk{i}.safetensors")
        assert r.code == 0, (i, r)
        assert _same(_load(f"mk{i}.safetensors"), want), i
    # the library reads the same specs
    spec = paramscope.read_merge_spec(work / "mk0.yaml")
    assert spec is not None


def test_spec_json_file(cli, work: Path) -> None:
    r = cli("merge", *TIES, "-o", "opts.safetensors")
    assert r.code == 0, r
    spec = {
        "method": "ties",
        "base": "base.safetensors",
        "sources": ["a.safetensors", "b.safetensors"],
        "weights": [0.3, 0.7],
        "density": 0.5,
    }
    (work / "spec.json").write_text(json.dumps(spec))
    r = cli("merge", "spec.json", "-o", "js.safetensors")
    assert r.code == 0, r
    assert _same(_load("js.safetensors"), _load("opts.safetensors"))


def test_bad_spec_exits_2(cli, work: Path) -> None:
    (work / "bad.yaml").write_text("merge_method: ties\nmodels: 3\n")
    r = cli("merge", "bad.yaml", "-o", "out.safetensors")
    _one_error_line(r, "bad.yaml")
    (work / "bad2.yaml").write_text("method: frobnicate\nsources: [a.safetensors]\n")
    r = cli("merge", "bad2.yaml", "-o", "out.safetensors")
    _one_error_line(r, "frobnicate")
    assert not (work / "out.safetensors").exists()


# ---------------------------------------------------------------------------- bad input
def test_bad_input_exits_2_and_writes_nothing(cli, work: Path) -> None:
    wrong = _sd(40)
    wrong["layer.weight"] = _rand(8, 4, seed=1)
    paramscope.save(wrong, work / "wrong.safetensors")
    (work / "keep.txt").write_text("mine")
    before = sorted(p.name for p in work.iterdir())

    line = _one_error_line(
        cli("merge", "a.safetensors", "wrong.safetensors", "-o", "out.safetensors"),
        "layer.weight",
        "a.safetensors",
        "wrong.safetensors",
    )
    for shape in ((8, 8), (8, 4)):  # as a tuple or a list
        assert str(shape) in line or str(list(shape)) in line, (shape, line)
    _one_error_line(
        cli(
            "merge", "a.safetensors", "b.safetensors", "--method", "bogus", "-o", "out.safetensors"
        ),
        "bogus",
    )
    _one_error_line(
        cli("merge", "a.safetensors", "nope.safetensors", "-o", "out.safetensors"),
        "nope.safetensors",
    )
    _one_error_line(
        cli(
            "merge",
            "a.safetensors",
            "b.safetensors",
            "--set",
            "lm_head.weight",
            "-o",
            "out.safetensors",
        ),
        "lm_head.weight",
    )
    _one_error_line(
        cli(
            "merge",
            "a.safetensors",
            "b.safetensors",
            "--set",
            "lm_head.*:colour=1",
            "-o",
            "out.safetensors",
        ),
        "colour",
    )
    _one_error_line(
        cli("merge", "a.safetensors", "b.safetensors", "--method", "ties", "-o", "out.safetensors"),
        "base",
    )
    _one_error_line(
        cli(
            "merge", "a.safetensors", "b.safetensors", "--weights", "0.5,x", "-o", "out.safetensors"
        ),
        "weights",
    )
    _one_error_line(
        cli(
            "merge",
            "a.safetensors",
            "b.safetensors",
            "--weights",
            "0.5,0.3,0.2",
            "-o",
            "out.safetensors",
        ),
        "weights",
    )
    _one_error_line(
        cli("merge", *TIES, "--shard-size", "1KB", "-o", "outdir", "--dtype", "int4"),
        "int4",
    )
    assert sorted(p.name for p in work.iterdir()) == before
    assert (work / "keep.txt").read_text() == "mine"
