"""Reliability, round two: non-regular files, storage-only dtypes, terminal injection,
stray EOFErrors and self-naming quantisation records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import paramscope
from _helpers import run_cli, run_python
from paramscope import ParamscopeError
from paramscope._text import printable, printable_tree

# ------------------------------------------------------------------ non-regular files


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    p = tmp_path / "model.safetensors"
    os.mkfifo(p)
    return p


@pytest.mark.parametrize(
    "args",
    [
        ["count", "{p}"],
        ["inspect", "{p}"],
        ["verify", "{p}"],
        ["convert", "{p}", "{out}"],
        ["count", "{p}", "--values"],
    ],
)
def test_a_fifo_is_refused_at_once(fifo: Path, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "out.safetensors"
    r = run_cli(*(a.format(p=fifo, out=out) for a in args), timeout=30)  # a hang fails here
    assert r.returncode == (1 if args[0] == "verify" else 2), r.stderr
    if args[0] == "verify":  # verify reports its problems on stdout, exit 2
        assert "found a FIFO" in r.stdout and str(fifo) in r.stdout
    else:
        assert r.stderr.count("\n") == 1 and "found a FIFO" in r.stderr and str(fifo) in r.stderr
    assert not out.exists()


def test_a_link_to_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "weights.safetensors"
    link.symlink_to("/dev/zero")
    for call in (paramscope.count, paramscope.read_manifest, paramscope.load):
        with pytest.raises(ParamscopeError, match="found a character device"):
            call(str(link))
    report = paramscope.verify(str(link))
    assert not report.ok and "found a character device" in report.problems[0]


def test_a_spec_fifo_is_not_read(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    os.mkfifo(spec)
    r = run_python(f"import paramscope; paramscope.build({str(spec)!r})", timeout=30)  # no hang
    assert r.returncode != 0 and "found a FIFO" in r.stderr


# ------------------------------------------------------------------ storage-only dtypes


def _exotic(path: Path) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    d = {
        "f8": torch.randn(4, 8, generator=g).to(torch.float8_e4m3fn),
        "f8e5": torch.tensor([[1.0, float("nan"), float("inf"), 0.0]]).to(torch.float8_e5m2),
        "e8m0": torch.ones(4, 8).to(torch.float8_e8m0fnu),
        "u64": torch.tensor([0, 1, 0, 2**62], dtype=torch.int64).to(torch.uint64),
        "u32": torch.tensor([0, 1, 2, 3], dtype=torch.int64).to(torch.uint32),
        "f4": torch.tensor([[0x00, 0x21, 0x08, 0x70]], dtype=torch.uint8).view(
            torch.float4_e2m1fn_x2
        ),
        "w": torch.randn(4, 4, generator=g),
    }
    paramscope.save(d, path)
    return d


def test_every_command_takes_storage_only_dtypes(cli, tmp_path: Path) -> None:
    src = tmp_path / "exotic.safetensors"
    d = _exotic(src)
    # oracle: torch's element counts (an FP4 x2 element holds two values) and values
    logical = {k: t.numel() * (2 if k == "f4" else 1) for k, t in d.items()}
    nonzero = {"u64": 2, "u32": 3, "f8e5": 3, "f4": 3}  # see the test below: by hand
    for flag in ("--nonzero", "--values"):
        r = cli("count", src, flag, "--json")
        assert r.code == 0 and r.err == "", (flag, r)
        got = json.loads(r.out)
        assert got["params"] == sum(logical.values()), flag
        if flag == "--nonzero":
            want = {k: {"params": logical[k], "nonzero": n} for k, n in nonzero.items()}
            assert got["pruned"] == want
    r = cli("inspect", src)
    assert r.code == 0 and r.err == "", r
    assert all(any(line.split()[:1] == [k] for line in r.out.splitlines()) for k in d)
    r = cli("verify", src, "--values", "--json")  # f8e5 holds a NaN and an Inf: not sound
    f8e5 = d["f8e5"].to(torch.float32)
    want = [{"name": "f8e5", "nan": int(f8e5.isnan().sum()), "inf": int(f8e5.isinf().sum())}]
    assert r.code == 1 and json.loads(r.out)["values"] == want, r
    r = cli("report", src, "-o", tmp_path / "r.html")
    assert r.code == 0 and (tmp_path / "r.html").is_file(), r
    for cmd, extra in (("quantize", []), ("prune", ["--amount", "0.5"])):
        r = cli(cmd, src, tmp_path / f"{cmd}.safetensors", *extra, "--json")
        assert r.code == 0, (cmd, r)
        got = json.loads(r.out)
        assert [t["name"] for t in got["tensors"]] == ["w"], cmd  # the one computable float
        back = paramscope.load(tmp_path / f"{cmd}.safetensors")
        assert torch.equal(back["f8"].view(torch.uint8), d["f8"].view(torch.uint8)), cmd
    r = cli("diff", src, src)
    assert r.code == 0 and r.out.startswith("same"), r


def test_nonzero_counts_of_storage_only_dtypes_are_exact(tmp_path: Path) -> None:
    src = tmp_path / "exotic.safetensors"
    d = _exotic(src)
    c = paramscope.count(str(src), nonzero=True)
    # oracle: the values as float32 (F8 casts exactly) / as int64 / the FP4 nibbles by hand
    assert c.pruned["u64"] == {"params": 4, "nonzero": 2}
    assert c.pruned["u32"] == {"params": 4, "nonzero": 3}
    assert c.pruned["f8e5"] == {"params": 4, "nonzero": 3}
    f8 = d["f8"].to(torch.float32)
    if int((f8 == 0).sum()):
        assert c.pruned["f8"]["nonzero"] == int((f8 != 0).sum())
    # FP4 bytes 0x00, 0x21, 0x08, 0x70: nibbles 0,0 | 1,2 | 8(-0),0 | 0,7 -> 3 nonzero of 8
    assert c.pruned["f4"] == {"params": 8, "nonzero": 3}


def test_verify_counts_nan_and_inf_in_float8(tmp_path: Path) -> None:
    src = tmp_path / "exotic.safetensors"
    _exotic(src)
    r = paramscope.verify(src, values=True)
    assert {v["name"]: (v["nan"], v["inf"]) for v in r.values} == {"f8e5": (1, 1)}


def test_prune_and_quantize_leave_storage_only_floats_with_a_note(tmp_path: Path) -> None:
    src = tmp_path / "exotic.safetensors"
    d = _exotic(src)
    rep = paramscope.prune(str(src), 0.5, dst=tmp_path / "p.safetensors")
    assert [t["name"] for t in rep.tensors] == ["w"]
    assert any("left as stored (not pruned): f8, f8e5, e8m0, f4" in n for n in rep.notes)
    out = paramscope.load(tmp_path / "p.safetensors")
    assert torch.equal(out["f8"].view(torch.uint8), d["f8"].view(torch.uint8))
    rep = paramscope.quantize(str(src), dst=tmp_path / "q.safetensors")
    assert [t["name"] for t in rep.tensors] == ["w"]
    assert any("not quantised" in n for n in rep.notes)
    # in memory too
    pd = paramscope.load(src)
    rep = paramscope.prune(pd, 0.5)
    assert any("f8" in n for n in rep.notes)
    _, qrep = paramscope.quantize(pd)
    assert any("f8" in n for n in qrep.notes)


def test_report_html_of_storage_only_dtypes(tmp_path: Path) -> None:
    src = tmp_path / "exotic.safetensors"
    _exotic(src)
    out = paramscope.report(str(src), tmp_path / "r.html")
    html = Path(out).read_text()
    start = html.index('id="paramscope-data"')
    data = json.loads(html[html.index(">", start) + 1 : html.index("</script>", start)])
    rows = {r["name"]: r for r in data["tensors"]}
    assert rows["f4"]["zeros"] == 5 and rows["u64"]["zeros"] == 2  # values, not bytes
    assert sum(rows["f4"]["hist"]["counts"]) == 8


def test_diff_decodes_fp4_and_compares_integers_exactly() -> None:
    a = torch.tensor([[0x21, 0x00]], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    b = torch.tensor([[0x12, 0x00]], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    (row,) = paramscope.diff({"x": a}, {"x": b}).value_changed
    assert row["changed"] == 2 and row["max_abs_diff"] == 0.5  # 0.5 <-> 1.0, both nibbles
    big = torch.tensor([2**60, 2**60 + 1])
    (row,) = paramscope.diff({"x": big}, {"x": torch.tensor([2**60, 2**60])}).value_changed
    assert row["changed"] == 1  # float64 cannot tell them apart; the comparison can


# ------------------------------------------------------------------ terminal injection

EVIL = "h.0\x1b[2J\x1b]0;owned\x07\rOK: all good\n\u202efdp.weight"


def test_printable_escapes_what_a_terminal_acts_on() -> None:
    shown = printable(EVIL)
    assert "\x1b" not in shown and "\n" not in shown and "\r" not in shown
    assert "\u202e" not in shown and "\x07" not in shown
    assert shown == "h.0\\x1b[2J\\x1b]0;owned\\x07\\rOK: all good\\n\\u202efdp.weight"
    assert printable("ветер.weight é") == "ветер.weight é"
    assert printable_tree({EVIL: [EVIL]}) == {shown: [shown]}


def test_human_output_escapes_names_from_files_json_keeps_them(cli, tmp_path: Path) -> None:
    a = tmp_path / "a.safetensors"
    b = tmp_path / "b.safetensors"
    from safetensors.torch import save_file  # any writer: paramscope's own refuses such names

    save_file({EVIL: torch.ones(2), "w": torch.zeros(2)}, a)
    save_file({EVIL: torch.zeros(2), "w": torch.zeros(2)}, b)
    for args in (["inspect", str(a)], ["diff", str(a), str(b)], ["count", str(a), "--nonzero"]):
        r = cli(*args)
        assert r.code == (1 if args[0] == "diff" else 0), r
        for bad in ("\x1b", "\r", "\u202e", "\x07"):
            assert bad not in r.out, (args, bad)
        assert not any(line.startswith("OK: all good") for line in r.out.splitlines())
        shown = {"inspect": printable(EVIL)[len("h.") :], "diff": printable(EVIL)}  # escaped
        assert shown.get(args[0], "") in r.out, args  # (inspect: under its group "h")
    r = cli("inspect", str(a), "--json")
    names = [e["name"] for g in json.loads(r.out)["groups"] for e in g["entries"]]
    assert sorted(names) == sorted([EVIL, "w"])  # JSON is exact (its encoder escapes them)


def test_load_report_and_errors_escape_names(cli, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = torch.nn.Linear(2, 2)
    save_file({EVIL: torch.zeros(2)}, tmp_path / "evil.safetensors")
    report = paramscope.match(model, tmp_path / "evil.safetensors")
    text = report.format()
    assert "\x1b" not in text and "\u202e" not in text
    assert EVIL in report.unexpected  # the data stays exact
    bad = tmp_path / f"x{EVIL.replace('/', '_')}.safetensors"
    bad.write_bytes(b"\x00" * 3)
    r = cli("count", str(bad))
    assert r.code == 2 and r.err.count("\n") == 1 and "\x1b" not in r.err
    assert printable(str(bad)) in r.err


# ------------------------------------------------------------------ stray EOFError


def test_a_stray_eoferror_is_bad_input_not_aborted(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from paramscope import _targets

    def boom(*args: object, **kwargs: object) -> object:
        raise EOFError("Ran out of input")

    monkeypatch.setattr(_targets, "resolve_source", boom)
    # `count X` skips the typer app; `count X --nonzero` goes through it: both say the same
    for args in (("count", "some.pt"), ("count", "some.pt", "--nonzero")):
        r = cli(*args)
        assert r.code == 2 and r.out == "" and "Aborted" not in r.err  # not click's abort
        (line,) = r.err.splitlines()
        assert line == (
            "paramscope: error: some.pt: the data ends before the format says it should "
            "(Ran out of input)"
        ), args


# ------------------------------------------------------------------ quantisation records


def test_a_scale_that_names_its_own_entry_is_refused_not_dropped(tmp_path: Path) -> None:
    qpd, _ = paramscope.quantize({"w": torch.randn(4, 4), "v": torch.randn(4, 4)})
    for ref in ("w", "v"):  # itself, another quantised data entry
        extra = dict(qpd.meta("w").extra)
        extra["quant"] = {**extra["quant"], "scale": ref}
        qpd.set_meta("w", extra=extra)
        path = paramscope.save(qpd, tmp_path / f"q_{ref}.safetensors")
        with pytest.raises(ParamscopeError, match="expected its quantisation scale"):
            paramscope.load(path, dequantize=True)


def test_diagrams_escape_names_from_files(cli, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({EVIL: torch.ones(2)}, tmp_path / "evil.safetensors")
    for fmt in ("mermaid", "dot"):
        r = cli("diagram", str(tmp_path / "evil.safetensors"), "--format", fmt)
        assert r.code == 0, r.err
        for bad in ("\x1b", "\r", "\u202e", "\x07"):
            assert bad not in r.out, (fmt, bad)


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("tags", 5, "tags expected a list of strings"),
        ("tags", [1], "tags expected a list of strings"),
        ("extra", [1], "extra expected an object"),
        ("trainable", "yes", "trainable expected true or false"),
        ("digest", 5, "digest expected a hex string"),
    ],
)
def test_paramscope_metadata_of_the_wrong_type_is_one_clear_error(
    cli, tmp_path: Path, field: str, value: object, said: str
) -> None:
    from safetensors.torch import save_file

    meta = {
        "version": 1,
        "hash": "xxh3-128",
        "aliases": {},
        "entries": {"w": {"role": "param", "trainable": True, field: value}},
    }
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(2)}, path, metadata={"paramscope": json.dumps(meta)})
    for call in (paramscope.count, paramscope.read_manifest, paramscope.load):
        with pytest.raises(ParamscopeError, match=said):
            call(str(path))
    r = cli("count", str(path))
    assert r.code == 2 and said in r.err and r.err.count("\n") == 1


def test_convert_casts_real_floats_only_and_says_so(tmp_path: Path) -> None:
    src = tmp_path / "x.safetensors"
    c = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    f4 = torch.tensor([[0x21]], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    f8 = torch.tensor([1.5, -2.0]).to(torch.float8_e4m3fn)
    paramscope.save({"c": c, "f4": f4, "f8": f8, "w": torch.ones(2)}, src)
    for fmt, out in (("safetensors", tmp_path / "y.safetensors"), ("dcp", tmp_path / "dcp")):
        report = paramscope.convert(src, out, dtype="bf16", format=fmt)
        assert any("c, f4" in n and "imaginary" in n for n in report.notes), report.notes
        back = paramscope.load(out)
        assert torch.equal(back["c"], c)  # never silently real
        assert torch.equal(back["f4"].view(torch.uint8), f4.view(torch.uint8))
        assert back["f8"].dtype == torch.bfloat16 and back["f8"].tolist() == [1.5, -2.0]
