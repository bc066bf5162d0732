"""The CLI end to end: golden output, JSON keys, invariants, exit codes, light imports."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import paramscope
from paramscope._example import example_model, write_example

ENV = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
ENV.pop("PARAMSCOPE_DEBUG", None)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paramscope", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    write_example(d / "example.safetensors")
    return d


def test_count_golden(workdir: Path, golden) -> None:
    r = run("count", "example.safetensors", cwd=workdir)
    assert r.returncode == 0, r.stderr
    golden("count_example.txt", r.stdout)


def test_inspect_golden(workdir: Path, golden) -> None:
    r = run("inspect", "example.safetensors", "--depth", "1", cwd=workdir)
    assert r.returncode == 0, r.stderr
    golden("inspect_example_depth1.txt", r.stdout)
    r = run("inspect", "example.safetensors", "--depth", "0", "--filter", "*.weight", cwd=workdir)
    assert r.returncode == 0, r.stderr
    golden("inspect_example_weights.txt", r.stdout)


def test_verify_golden(workdir: Path, golden) -> None:
    r = run("verify", "example.safetensors", cwd=workdir)
    assert r.returncode == 0, r.stderr
    golden("verify_example.txt", r.stdout)


def test_count_json_matches_the_model(workdir: Path) -> None:
    r = run("count", "example.safetensors", "--json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for key in ("params", "trainable", "frozen", "buffers", "bytes", "by_dtype", "roles"):
        assert key in d
    model = example_model()
    params = list(model.parameters())
    assert d["params"] == sum(p.numel() for p in params)
    assert d["trainable"] == sum(p.numel() for p in params if p.requires_grad)
    assert d["frozen"] == d["params"] - d["trainable"]
    assert d["buffers"] == sum(b.numel() for b in model.buffers())
    assert d["roles"] == "exact"
    assert d["bytes"] == sum(v["bytes"] for v in d["by_dtype"].values())
    assert d["bytes"] == sum(t.numel() * t.element_size() for t in model.state_dict().values())


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_inspect_groups_add_up(workdir: Path, depth: int) -> None:
    r = run("inspect", "example.safetensors", "--depth", str(depth), "--json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    t = d["total"]
    assert sum(g["params"] for g in d["groups"]) == t["params"]
    assert sum(g["buffers"] for g in d["groups"]) == t["buffers"]
    assert sum(g["bytes"] for g in d["groups"]) == t["bytes"]
    for g in d["groups"]:
        assert sum(e["params"] for e in g["entries"] if e["role"] == "param") == g["params"]
        for e in g["entries"]:
            for key in ("name", "shape", "dtype", "params", "bytes", "role"):
                assert key in e
            assert e["name"].startswith(g["prefix"])


def test_inspect_sharded_with_ties(tmp_path: Path) -> None:
    pd = paramscope.ParamDict(
        {
            "wte.weight": torch.randn(50, 8),
            "h.0.w": torch.randn(8, 8),
            "h.1.w": torch.randn(8, 8),
        }
    )
    pd.tie("lm_head.weight", "wte.weight")
    paramscope.save(pd, tmp_path / "ck", max_shard_size=1000)
    r = run("inspect", "ck", "--depth", "1", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["format"] == "sharded"
    assert d["total"]["params"] == 50 * 8 + 2 * 64
    assert d["ties"] == [["wte.weight", "lm_head.weight"]]
    head = next(g for g in d["groups"] if g["prefix"] == "lm_head")
    assert head["params"] == 0 and head["entries"][0]["tie"] == "wte.weight"


def test_json_on_every_command(workdir: Path) -> None:
    for cmd in ("count", "inspect", "verify"):
        r = run(cmd, "example.safetensors", "--json", cwd=workdir)
        assert r.returncode == 0, r.stderr
        json.loads(r.stdout)
        assert r.stderr == ""


def _one_error_line(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("paramscope: error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in r.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    for cmd in ("count", "inspect", "verify"):
        _one_error_line(run(cmd, "nope.safetensors", cwd=tmp_path), "nope.safetensors", "no such")


def test_malformed_file_exits_2(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    for cmd in ("count", "inspect"):
        _one_error_line(run(cmd, "bad.safetensors", cwd=tmp_path), "bad.safetensors", "'w'", "16")


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_refused_pickle_exits_2_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "evil": _Payload(str(marker))}, tmp_path / "evil.pt")
    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"evil": _Payload(str(marker))}, f)
    for name in ("evil.pt", "plain.pt"):
        for cmd in ("count", "inspect"):
            _one_error_line(run(cmd, name, cwd=tmp_path), name, "refused", "io.open")
        # verify reports what is wrong as its finding (stdout): a negative verdict, exit 1
        r = run("verify", name, cwd=tmp_path)
        assert r.returncode == 1 and "FAILED" in r.stdout and "refused" in r.stdout
    assert not marker.exists()


def test_verify_detects_a_flipped_byte(workdir: Path, tmp_path: Path) -> None:
    src = (workdir / "example.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", src[:8])
    data = bytearray(src)
    pos = 8 + n + 1000  # inside the data section (first stored tensor: 0.weight)
    data[pos] ^= 0x01
    (tmp_path / "flip.safetensors").write_bytes(bytes(data))
    r = run("verify", "flip.safetensors", cwd=tmp_path)
    assert r.returncode == 1
    assert "FAILED" in r.stdout and "'0.weight'" in r.stdout and "xxh3-128" in r.stdout
    r = run("verify", "flip.safetensors", "--json", cwd=tmp_path)
    d = json.loads(r.stdout)
    assert r.returncode == 1 and d["ok"] is False and len(d["problems"]) == 1


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("count", cwd=tmp_path).returncode == 2
    assert run("count", "x", "--bogus", cwd=tmp_path).returncode == 2
    assert run("inspect", "x", "--depth", "-1", cwd=tmp_path).returncode == 2


def test_internal_error_exits_3(monkeypatch: pytest.MonkeyPatch, capsys, workdir: Path) -> None:
    import paramscope.counting
    from paramscope import cli

    def boom(_source: object, **_options: object) -> object:
        raise RuntimeError("kaboom")

    monkeypatch.delenv("PARAMSCOPE_DEBUG", raising=False)
    monkeypatch.setattr(paramscope.counting, "count", boom)
    assert cli.main(["count", str(workdir / "example.safetensors")]) == 3  # a bug: not bad input
    err = capsys.readouterr().err
    assert "internal error" in err and "kaboom" in err


def test_console_script_and_module_agree(workdir: Path) -> None:
    exe = Path(sys.executable).with_name("paramscope")
    a = subprocess.run([str(exe), "count", "example.safetensors", "--json"], cwd=workdir,
                       capture_output=True, text=True, env=ENV, check=True)
    b = run("count", "example.safetensors", "--json", cwd=workdir)
    assert a.stdout == b.stdout


def test_header_only_commands_never_import_torch(workdir: Path, tmp_path: Path) -> None:
    pd = paramscope.ParamDict({"a.w": torch.randn(30, 4), "b.w": torch.randn(30, 4)})
    paramscope.save(pd, tmp_path / "sh", max_shard_size=500)
    probe = (
        "import sys\n"
        "from paramscope.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', code, file=sys.stderr)\n"
    )
    for args in (
        ["count", str(workdir / "example.safetensors")],
        ["inspect", str(workdir / "example.safetensors"), "--depth", "2"],
        ["verify", str(workdir / "example.safetensors")],
        ["count", str(tmp_path / "sh")],
        ["verify", str(tmp_path / "sh" / "model.safetensors.index.json")],
    ):
        r = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                           env=ENV, timeout=60)
        assert r.stderr.strip().endswith("NOTORCH 0"), (args, r.stderr)


def test_example_command_writes_a_checkpoint(tmp_path: Path) -> None:
    r = run("example", "ex.safetensors", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == "ex.safetensors"
    model = example_model()
    assert paramscope.count(tmp_path / "ex.safetensors").params == sum(
        p.numel() for p in model.parameters()
    )


def test_inspect_filter_matching_nothing_exits_2(workdir: Path, tmp_path: Path) -> None:
    r = run("inspect", "example.safetensors", "--filter", "0.weigth", cwd=workdir)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "'0.weigth' matches no entry of example.safetensors" in lines[0]
    assert "did you mean '0.weight'" in lines[0]
    assert lines[0].endswith("names start with '0', '1', '3', '5'")
    r = run("inspect", "example.safetensors", "--filter", "nothing*", "--json", cwd=workdir)
    assert r.returncode == 2 and r.stdout == "" and "matches no entry" in r.stderr
    # still header-only: a refused filter does not import torch
    probe = (
        "import sys\n"
        "from paramscope.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', code, file=sys.stderr)\n"
    )
    args = ["inspect", str(workdir / "example.safetensors"), "--filter", "zz"]
    r = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                       env=ENV, timeout=60)
    assert r.stderr.strip().endswith("NOTORCH 2"), r.stderr
