"""The CLI end to end: golden output, JSON keys, invariants, exit codes, light imports.

In process (the ``cli`` fixture) but where a fresh process is the point: the console script,
and the header-only commands that must not import torch.
"""

from __future__ import annotations

import json
import pickle
import struct
import sys
from pathlib import Path

import pytest
import torch

import paramscope
from _helpers import run_cli, without_torch
from conftest import CliResult
from paramscope._example import example_model, write_example


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    write_example(d / "example.safetensors")
    return d


@pytest.fixture
def cli_here(cli, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    """The ``cli`` fixture run in ``workdir`` (output names the file as given)."""
    monkeypatch.chdir(workdir)
    return cli


def test_count_golden(cli_here, golden) -> None:
    r = cli_here("count", "example.safetensors")
    assert r.code == 0, r.err
    golden("count_example.txt", r.out)


def test_inspect_golden(cli_here, golden) -> None:
    r = cli_here("inspect", "example.safetensors", "--depth", "1")
    assert r.code == 0, r.err
    golden("inspect_example_depth1.txt", r.out)
    r = cli_here("inspect", "example.safetensors", "--depth", "0", "--filter", "*.weight")
    assert r.code == 0, r.err
    golden("inspect_example_weights.txt", r.out)


def test_verify_golden(cli_here, golden) -> None:
    r = cli_here("verify", "example.safetensors")
    assert r.code == 0, r.err
    golden("verify_example.txt", r.out)


def test_count_json_matches_the_model(cli_here) -> None:
    r = cli_here("count", "example.safetensors", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
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
def test_inspect_groups_add_up(cli_here, depth: int) -> None:
    r = cli_here("inspect", "example.safetensors", "--depth", str(depth), "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
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


def test_inspect_sharded_with_ties(cli, tmp_path: Path) -> None:
    pd = paramscope.ParamDict(
        {
            "wte.weight": torch.randn(50, 8),
            "h.0.w": torch.randn(8, 8),
            "h.1.w": torch.randn(8, 8),
        }
    )
    pd.tie("lm_head.weight", "wte.weight")
    paramscope.save(pd, tmp_path / "ck", max_shard_size=1000)
    r = cli("inspect", tmp_path / "ck", "--depth", "1", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["format"] == "sharded"
    assert d["total"]["params"] == 50 * 8 + 2 * 64
    assert d["ties"] == [["wte.weight", "lm_head.weight"]]
    head = next(g for g in d["groups"] if g["prefix"] == "lm_head")
    assert head["params"] == 0 and head["entries"][0]["tie"] == "wte.weight"


def test_json_on_every_command(cli_here) -> None:
    """``--json`` prints the library's report, exactly (numbers checked against torch above)."""
    for cmd in ("count", "inspect", "verify"):
        r = cli_here(cmd, "example.safetensors", "--json")
        assert r.code == 0 and r.err == "", r
        want = getattr(paramscope, cmd)("example.safetensors").to_dict()
        assert json.loads(r.out) == json.loads(json.dumps(want)), cmd


def _one_error_line(r: CliResult, *needles: str) -> None:
    assert r.code == 2, r
    assert r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("paramscope: error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in r.err


def test_missing_file_exits_2(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for cmd in ("count", "inspect", "verify"):
        _one_error_line(cli(cmd, "nope.safetensors"), "nope.safetensors", "no such")


def test_malformed_file_exits_2(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    for cmd in ("count", "inspect"):
        _one_error_line(cli(cmd, "bad.safetensors"), "bad.safetensors", "'w'", "16")


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_refused_pickle_exits_2_and_runs_nothing(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "evil": _Payload(str(marker))}, tmp_path / "evil.pt")
    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"evil": _Payload(str(marker))}, f)
    for name in ("evil.pt", "plain.pt"):
        for cmd in ("count", "inspect"):
            _one_error_line(cli(cmd, name), name, "refused", "io.open")
        # verify reports what is wrong as its finding (stdout): a negative verdict, exit 1
        r = cli("verify", name, "--json")
        assert r.code == 1, r
        assert json.loads(r.out)["problems"] == paramscope.verify(name).problems
        (problem,) = paramscope.verify(name).problems
        assert name in problem and "refused" in problem and "io.open" in problem
        r = cli("verify", name)
        assert r.code == 1 and r.out.startswith(f"FAILED: {name}") and problem in r.out
    assert not marker.exists()


def test_verify_detects_a_flipped_byte(
    cli, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    src = (workdir / "example.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", src[:8])
    data = bytearray(src)
    pos = 8 + n + 1000  # inside the data section (first stored tensor: 0.weight)
    data[pos] ^= 0x01
    (tmp_path / "flip.safetensors").write_bytes(bytes(data))
    r = cli("verify", "flip.safetensors")
    assert r.code == 1
    assert "FAILED" in r.out and "'0.weight'" in r.out and "xxh3-128" in r.out
    r = cli("verify", "flip.safetensors", "--json")
    d = json.loads(r.out)
    assert r.code == 1 and d["ok"] is False and len(d["problems"]) == 1
    # the one problem is 0.weight's digest; every other entry still hashes right
    stored = paramscope.read_manifest(workdir / "example.safetensors")
    assert d["hashed"] == sum(1 for e in stored.values() if e.hash) == len(stored)
    assert "'0.weight'" in d["problems"][0] and all(
        f"'{n}'" not in d["problems"][0] for n in stored if n != "0.weight"
    )


def test_usage_errors_exit_2(cli) -> None:
    r = cli("count")
    assert r.code == 2 and r.out == "" and "Missing argument 'TARGET'" in r.err, r
    r = cli("count", "x", "--bogus")
    assert r.code == 2 and r.out == "" and "No such option '--bogus'" in r.err, r
    r = cli("inspect", "x", "--depth", "-1")
    assert r.code == 2 and r.out == "" and "-1 is not in the range x>=0" in r.err, r


def test_internal_error_exits_3(cli, monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    import paramscope.counting

    def boom(_source: object, **_options: object) -> object:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(paramscope.counting, "count", boom)
    r = cli("count", workdir / "example.safetensors")
    assert r.code == 3 and r.out == ""  # a bug: not bad input
    assert r.err == (
        "paramscope: error: internal error: RuntimeError: kaboom "
        "(set PARAMSCOPE_DEBUG=1 for a traceback)\n"
    )


def test_console_script_and_module_agree(workdir: Path) -> None:
    exe = Path(sys.executable).with_name("paramscope")
    a = run_cli("count", "example.safetensors", "--json", cwd=workdir, exe=exe)
    b = run_cli("count", "example.safetensors", "--json", cwd=workdir)
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    assert a.stdout == b.stdout
    assert json.loads(a.stdout)["params"] == sum(p.numel() for p in example_model().parameters())


#: A CLI run in a fresh interpreter: ``result`` is its exit code.
CLI_PROBE = "from paramscope.cli import main\nresult = main(sys.argv[1:])"


def test_header_only_commands_never_import_torch(workdir: Path, tmp_path: Path) -> None:
    pd = paramscope.ParamDict({"a.w": torch.randn(30, 4), "b.w": torch.randn(30, 4)})
    paramscope.save(pd, tmp_path / "sh", max_shard_size=500)
    for args in (
        ["count", str(workdir / "example.safetensors")],
        ["inspect", str(workdir / "example.safetensors"), "--depth", "2"],
        ["verify", str(workdir / "example.safetensors")],
        ["count", str(tmp_path / "sh")],
        ["verify", str(tmp_path / "sh" / "model.safetensors.index.json")],
    ):
        assert without_torch(CLI_PROBE, *args) == 0, args


def test_example_command_writes_a_checkpoint(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    r = cli("example", "ex.safetensors", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["path"] == "ex.safetensors"
    model = example_model()
    assert paramscope.count(tmp_path / "ex.safetensors").params == sum(
        p.numel() for p in model.parameters()
    )


def test_inspect_filter_matching_nothing_exits_2(cli_here, workdir: Path) -> None:
    r = cli_here("inspect", "example.safetensors", "--filter", "0.weigth")
    assert r.code == 2 and r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert "'0.weigth' matches no entry of example.safetensors" in lines[0]
    assert "did you mean '0.weight'" in lines[0]
    assert lines[0].endswith("names start with '0', '1', '3', '5'")
    r = cli_here("inspect", "example.safetensors", "--filter", "nothing*", "--json")
    assert r.code == 2 and r.out == "" and "matches no entry" in r.err
    # still header-only: a refused filter does not import torch
    args = ["inspect", str(workdir / "example.safetensors"), "--filter", "zz"]
    assert without_torch(CLI_PROBE, *args) == 2


PLAIN_COUNT_TARGETS = ("ex.safetensors", "zoo:mlp", "missing.safetensors", "bad.safetensors")


@pytest.mark.parametrize("target", PLAIN_COUNT_TARGETS)
@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_plain_count_without_typer_is_the_typer_command(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, json_flag: tuple[str, ...]
) -> None:
    """``count TARGET [--json]`` skips building the typer app; its stdout, stderr and exit code
    are those of the typer command (forced here by disabling the shortcut)."""
    from paramscope import cli as cli_module

    monkeypatch.chdir(tmp_path)
    write_example(tmp_path / "ex.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    assert cli_module._plain_count(["count", target, *json_flag]) == (target, bool(json_flag))
    quick = cli("count", target, *json_flag)
    monkeypatch.setattr(cli_module, "_plain_count", lambda argv: None)
    typer_run = cli("count", target, *json_flag)
    assert (quick.code, quick.out, quick.err) == (typer_run.code, typer_run.out, typer_run.err)
    assert quick.code == (0 if target in ("ex.safetensors", "zoo:mlp") else 2)


@pytest.mark.parametrize(
    "argv",
    [
        ["count"],
        ["count", "--help"],
        ["count", "-x"],
        ["count", "a", "--nonzero"],
        ["count", "a", "b"],
        ["inspect", "a"],
        ["count", "a", "--json", "--json"],
    ],
)
def test_anything_but_a_plain_count_goes_through_typer(argv: list[str]) -> None:
    from paramscope.cli import _plain_count

    assert _plain_count(argv) is None


def test_plain_count_imports_neither_typer_nor_click(tmp_path: Path) -> None:
    write_example(tmp_path / "ex.safetensors")
    probe = (
        "from paramscope.cli import main\n"
        "code = main(['count', sys.argv[1], '--json'])\n"
        "result = [code, sorted(m for m in ('typer', 'click', 'rich') if m in sys.modules)]"
    )
    assert without_torch(probe, tmp_path / "ex.safetensors") == [0, []]
