"""The CLI's one output sink: every command's text is its report's ``to_text()``, its
``--json`` is the report's ``to_dict()``, every printer has a golden file, and every printed
table is checked for its invariant (rows add up to the printed total), as torchinfo's
``verify_capsys`` does.

Invariants are read back from the text itself, so they hold for what a user sees: the
existing golden files (``count``, ``inspect``, ``match``, ``memory``, ``verify``, ``zoo``) are
checked as they are stored, the new ones (``prune``, ``quantize``, ``diff``, ``convert``) as
they are printed from small deterministic checkpoints built here.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import paramscope
from paramscope._units import format_percent, format_short_count
from paramscope.cli import _output

GOLDEN = Path(__file__).parent / "golden"
_UNIT = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}


# ------------------------------------------------------------------------------ fixtures
def det(shape: tuple[int, ...], k: int) -> torch.Tensor:
    """Deterministic float32 values in [-1, 1] (no random generator: the same on every
    platform and torch version)."""
    n = math.prod(shape)
    return (((torch.arange(n) * k) % 101 - 50) / 50.0).reshape(shape).float()


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with small checkpoints, the current directory (paths in the output
    are relative: no temp path reaches a golden file)."""
    monkeypatch.chdir(tmp_path)
    paramscope.save(
        {
            "enc.weight": det((8, 12), 37),
            "enc.bias": det((8,), 11),
            "head.weight": det((6, 8), 53),
            "head.bias": torch.zeros(6),
        },
        tmp_path / "src.safetensors",
    )
    a = {
        "same.w": det((4, 4), 3),
        "val.w": det((4,), 5),
        "near.w": det((2, 4), 7),
        "shape.w": det((2, 4), 9),
        "cast.w": torch.arange(6.0) / 4,  # exact in fp16: only the dtype changes
        "old.w": det((3, 3), 13),
        "gone.w": det((5,), 17),
    }
    b = {
        "same.w": det((4, 4), 3),
        "val.w": det((4,), 5) * 2,
        "near.w": det((2, 4), 7) + 0.0005,
        "shape.w": det((3, 4), 9),
        "cast.w": (torch.arange(6.0) / 4).half(),
        "new.w": det((3, 3), 13),
        "extra.w": det((2,), 19),
    }
    paramscope.save(a, tmp_path / "a.safetensors")
    paramscope.save(b, tmp_path / "b.safetensors")
    return tmp_path


def json_text(d: Any) -> str:
    """What the JSON sink writes for ``d``."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        _output.emit_json(d)
    return buf.getvalue()


# ------------------------------------------------------------------------------ parsing
def num(text: str) -> int:
    return int(text.replace(",", ""))


def size(text: str) -> tuple[float, float]:
    """A printed byte size as (bytes, tolerance of its rounding)."""
    value, unit = text.split()
    scale = _UNIT[unit]
    return float(value) * scale, 0.0 if unit == "B" else 0.05 * scale


def sizes_add_up(parts: list[str], total: str) -> None:
    got = [size(p) for p in parts]
    want, tol = size(total)
    assert abs(sum(v for v, _ in got) - want) <= tol + sum(t for _, t in got) + 1e-9, (
        parts,
        total,
    )


def cells(line: str) -> list[str]:
    """The cells of a table row (cells are two or more spaces apart)."""
    return re.split(r"\s{2,}", line.strip())


# ---------------------------------------------------------------------------- invariants
def check_count(text: str) -> None:
    """trainable + frozen = params; the dtypes' elements add up to params + buffers (unless
    packed), their bytes to the bytes; each short form is the exact count's; the pruned
    zeros' share."""
    rows: dict[str, int] = {}
    dtype_elements, dtype_bytes = [], []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if parts[0] in ("tied", "note:", "bits/wt"):
            continue
        if "elements," in parts:
            dtype_elements.append(num(parts[1]))
            dtype_bytes.append(line.split("elements, ")[1])
            continue
        rows[parts[0]] = num(parts[1])
        if parts[0] in ("params", "trainable", "frozen", "buffers"):
            assert line.split("(", 1)[1][:-1] == format_short_count(rows[parts[0]]), line
        if parts[0] == "bytes":
            assert size(line.split("(", 1)[1][:-1])[0] == pytest.approx(rows["bytes"], rel=1e-3)
        if parts[0] == "nonzero":
            m = re.search(r"of ([\d,]+) in \d+ pruned tensors \((.+) zeros\)", line)
            assert m is not None, line
            assert m[2] == format_percent(1 - rows["nonzero"] / num(m[1]))
    assert rows["trainable"] + rows["frozen"] == rows["params"]
    if "stored" in rows:  # quantised: params are logical, the dtypes hold packed elements
        assert sum(dtype_elements) == rows["stored"]
        assert rows["quantized"] <= rows["params"]
    else:
        assert sum(dtype_elements) == rows["params"] + rows["buffers"]
    sizes_add_up(dtype_bytes, f"{rows['bytes']} B")


def check_inspect(text: str) -> None:
    """Entries add up to their group, groups to the total; each shape's product is its
    count; trainable + frozen = params, params + buffers = the total row."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:3] == ["name", "shape", "dtype"])
    groups: list[tuple[int, list[int]]] = []
    total = None
    for line in lines[head + 2 :]:
        if not line.strip():
            continue
        if line.startswith(" total "):
            total = num(cells(line)[1])
            break
        c = cells(line)
        if line.startswith("   "):  # an entry
            _name, shape, _dtype, params = c[:4]
            if params.startswith("= "):  # a tie: counted under its target
                continue
            n = num(params.split(" (nnz")[0])
            groups[-1][1].append(n)
            if ", logical " in c[-1]:  # a quantised weight: params are its logical shape's
                logical = c[-1].split(", logical ")[1]
                assert math.prod(int(d) for d in logical.split("×")) == n, line
            elif ", int" not in c[-1]:  # (own int8/int4 entries without a layout: packed)
                assert math.prod(int(d) for d in shape.split("×") if shape != "()") == n, line
        else:
            groups.append((num(c[1]), []))
    assert total is not None
    for subtotal, entries in groups:
        assert sum(entries) == subtotal
    assert sum(g for g, _ in groups) == total
    m = re.search(
        r"^params ([\d,]+) \(trainable ([\d,]+), frozen ([\d,]+)\), buffers ([\d,]+)", text, re.M
    )
    assert m is not None
    params, trainable, frozen, buffers = (num(x) for x in m.groups())
    meta = re.search(r"^params .*, quant meta ([\d,]+), ", text, re.M)  # quantisation metadata
    assert trainable + frozen == params
    assert params + buffers + (num(meta[1]) if meta else 0) == total


def check_summary(text: str) -> None:
    """Every module's count is its own plus its children's (a row ``×N, each`` counts N
    times); a layer's formula gives its count; the by-type table adds up to the total."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["module", "type"])
    header = lines[head]
    ends = {c: header.index(c) + len(c) for c in ("params", "own", "buffers")}

    def right(line: str, col: str) -> int:
        """The number in a right-aligned column (0 where the cell is empty)."""
        end = ends[col]
        if line[end - 1 : end] in ("", " "):
            return 0
        tokens = line[:end].split()
        if tokens[-1] == "❄":  # a frozen module's mark
            tokens.pop()
        return num(tokens[-1])

    nodes: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []
    for line in lines[head + 2 :]:
        if not line.strip():
            break
        level = (len(line) - len(line.lstrip(" ")) - 1) // 2
        name = cells(line)[0]
        times = re.search(r"\(×(\d+), each\)", name)
        node = {
            "params": right(line, "params"),
            "own": right(line, "own"),
            "times": int(times[1]) if times else 1,
            "kids": [],
        }
        formula = re.search(r"= ([\d,]+)$", line)
        if formula and "tied:" not in line:
            assert num(formula[1]) == node["own"] == node["params"], line
        del stack[level:]
        if stack:
            stack[-1]["kids"].append(node)
        stack.append(node)
        nodes.append(node)
    filtered = "  filter " in lines[0]
    for node in nodes:
        if node["kids"] and not filtered:
            below = sum(k["params"] * k["times"] for k in node["kids"])
            assert node["params"] == node["own"] + below
    m = re.search(r"^params ([\d,]+) \(trainable ([\d,]+), frozen ([\d,]+)\)", text, re.M)
    assert m is not None
    params, trainable, frozen = (num(x) for x in m.groups())
    assert trainable + frozen == params == nodes[0]["params"]
    by_type = lines.index("by layer type")
    rows = [cells(line) for line in lines[by_type + 4 :] if line.startswith(" ")]
    rows = [r for r in rows if len(r) == 4 and r[3].endswith("%")]
    assert sum(num(r[2]) for r in rows) == params
    for r in rows:
        assert r[3] == format_percent(num(r[2]), params)


def check_memory(text: str) -> None:
    """The parts per GPU add up to the total per GPU; the whole job is that times the GPUs;
    sharding never makes a part larger."""
    lines = text.splitlines()
    gpus = re.search(r"over (\d+) GPUs", lines[0])
    n = int(gpus[1]) if gpus else 1
    whole, per = [], []
    for line in lines[3:8]:
        m = re.match(r"^  (.+?)\s{2,}(\S+ \S+)\s+(\S+ \S+)$", line)
        assert m is not None, line
        whole.append(m[2])
        per.append(m[3])
        assert size(m[3])[0] <= size(m[2])[0]
    per_gpu = lines[8].split()[-2:]
    all_gpus = lines[9].split()[-2:]
    assert lines[8].startswith("  total per GPU") and lines[9].startswith("  total, all GPUs")
    sizes_add_up(per, " ".join(per_gpu))
    value, tol = size(" ".join(per_gpu))
    assert abs(value * n - size(" ".join(all_gpus))[0]) <= tol * n + size(" ".join(all_gpus))[1]
    m = re.match(r"^  params ([\d,]+), trainable ([\d,]+)$", lines[1])
    assert m is not None and num(m[2]) <= num(m[1])


def check_prune(text: str) -> None:
    """Per-tensor elements and zeros add up to the total; kept = elements - zeros; each
    sparsity is zeros / elements."""
    lines = text.splitlines()
    rows = [cells(line) for line in lines[2:] if not line.startswith(("total:", "note:", "…"))]
    for _name, elements, zeros, sparsity in rows:
        assert sparsity == format_percent(num(zeros) / num(elements))
    m = re.match(
        r"^total: ([\d,]+) elements, ([\d,]+) zeros \((.+)\), ([\d,]+) kept$",
        next(line for line in lines if line.startswith("total:")),
    )
    assert m is not None
    elements, zeros, share, kept = num(m[1]), num(m[2]), m[3], num(m[4])
    assert kept == elements - zeros and share == format_percent(zeros / elements)
    if not any(line.startswith("…") for line in lines):
        assert sum(num(r[1]) for r in rows) == elements
        assert sum(num(r[2]) for r in rows) == zeros


def check_quant(text: str) -> None:
    """Bytes before and after add up to the total row; the total's largest error is the
    largest row's; its SQNR and cosine lie between the rows'."""
    lines = text.splitlines()
    rows = [cells(line) for line in lines[2:] if not line.startswith(("note:", "…"))]
    *tensors, total = rows
    assert total[0] == "total"
    sizes_add_up([r[5] for r in tensors], total[5])
    sizes_add_up([r[6] for r in tensors], total[6])
    assert float(total[2]) == max(float(r[2]) for r in tensors)
    assert min(float(r[1]) for r in tensors) <= float(total[1]) <= max(float(r[1]) for r in tensors)
    assert min(float(r[4]) for r in tensors) <= float(total[4]) <= max(float(r[4]) for r in tensors)


def check_diff(text: str, a: int, b: int) -> None:
    """Each category lists as many rows as its count; the categories add up to the entries
    of A (removed, renamed, and those in both) and of B (added, renamed, in both)."""
    lines = text.splitlines()
    m = re.match(
        r"^  (\d+) added, (\d+) removed, (\d+) renamed, (\d+) shape, (\d+) dtype, (\d+) values, "
        r"(\d+) close, (\d+) ties; (\d+) identical$",
        lines[1],
    )
    assert m is not None, lines[1]
    n = dict(
        zip(
            [
                "added",
                "removed",
                "renamed",
                "shape",
                "dtype",
                "values",
                "close",
                "ties",
                "identical",
            ],
            (int(x) for x in m.groups()),
            strict=True,
        )
    )
    for label in ("added", "removed", "renamed", "shape", "dtype", "values", "close", "ties"):
        assert sum(line.startswith(f"  {label}: ") for line in lines) == n[label], label
    both = n["identical"] + n["values"] + n["close"] + n["shape"] + n["dtype"]
    assert a == n["removed"] + n["renamed"] + both
    assert b == n["added"] + n["renamed"] + both
    differ = sum(n[k] for k in ("added", "removed", "renamed", "shape", "dtype", "values", "ties"))
    assert lines[0].startswith("differ" if differ else "same")


def check_convert(text: str, dst: str) -> None:
    """The entries and aliases written are the output's names; the bytes its stored bytes."""
    m = re.search(
        r"\[(\w+)\]: (\d+) entries, (\d+) aliases, ([\d,]+) bytes, (\d+) cast, "
        r"(\d+) file\(s\)$",
        text.splitlines()[0],
    )
    assert m is not None, text
    entries, aliases, nbytes, casts = int(m[2]), int(m[3]), num(m[4]), int(m[5])
    out = paramscope.read_manifest(dst)
    assert entries + aliases == len(out) and casts <= entries
    assert paramscope.count(dst).bytes == nbytes


def check_match(text: str, model_entries: int) -> None:
    """Each list's names, runs expanded (``{0,2,4}`` is three), number its count; loaded
    plus missing is the model's entries."""
    lines = text.splitlines()
    loaded = int(re.search(r"load(?:ed)? (\d+) tensors", lines[0])[1])  # type: ignore[index]
    counts: dict[str, int] = {}
    listed: dict[str, int] = {}
    current = None
    for line in lines[1:]:
        head = re.match(r"^  (missing|unexpected) \((\d+)\):$", line)
        if head:
            current = head[1]
            counts[current], listed[current] = int(head[2]), 0
        elif line.startswith("    ") and not line.strip().startswith(("did you mean", "…")):
            if current is not None:
                runs = re.findall(r"\{([^}]*)\}", line)
                listed[current] += math.prod(len(r.split(",")) for r in runs)
        else:
            current = None
    assert listed == counts
    assert loaded + counts.get("missing", 0) == model_entries


def check_verify(text: str) -> None:
    """The hashes checked are at most the entries; OK exactly when no problem is listed."""
    lines = text.splitlines()
    m = re.match(
        r"^(OK|FAILED): .+ (\d+) entries in (\d+) file\(s\), (\d+) hashes checked$", lines[0]
    )
    assert m is not None
    assert int(m[4]) <= int(m[2]) and int(m[3]) >= 1
    assert (m[1] == "OK") == (not any(line.startswith("  problem:") for line in lines))


def check_zoo(text: str) -> None:
    """Every model of the zoo, in order, with its reference count and its short form."""
    from paramscope.building import zoo

    rows = [re.split(r"\s{2,}", line.strip(), maxsplit=3) for line in text.splitlines()]
    assert [r[0] for r in rows] == [f"zoo:{n}" for n in zoo.names()]
    for name, exact, short, _ in rows:
        assert num(exact) == zoo.REFERENCE_PARAMS[name[4:]]
        assert short == format_short_count(num(exact))


# ------------------------------------------------------------ the existing golden files
@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("count_example.txt", check_count),
        ("inspect_example_depth1.txt", check_inspect),
        ("inspect_example_weights.txt", check_inspect),
        ("inspect_zoo_gpt2_depth3.txt", check_summary),
        ("inspect_zoo_mlp_3_5_2.txt", check_summary),
        ("match_mlp_ddp.txt", lambda t: check_match(t, 6)),
        ("memory_zoo_gpt2.txt", check_memory),
        ("verify_example.txt", check_verify),
        ("zoo_list.txt", check_zoo),
    ],
)
def test_stored_golden_files_hold_their_invariants(name: str, check: Callable[[str], None]):
    check((GOLDEN / name).read_text())


# ---------------------------------------------------------------- the new golden files
def test_prune_golden(here: Path, cli, golden) -> None:
    r = cli("prune", "src.safetensors", "p.safetensors", "--amount", "0.5")
    assert r.code == 0 and r.err == "", r.err
    golden("prune_small.txt", r.out)
    check_prune(r.out)
    check_count(cli("count", "p.safetensors").out)  # the nonzero line of a pruned file


def test_quantize_golden(here: Path, cli, golden) -> None:
    r = cli("quantize", "src.safetensors", "q8.safetensors")
    assert r.code == 0 and r.err == "", r.err
    golden("quantize_small_int8.txt", r.out)
    check_quant(r.out)
    r = cli("quantize", "src.safetensors", "q4.safetensors", "--bits", "4", "--group-size", "4")
    assert r.code == 0, r.err
    golden("quantize_small_int4_g4.txt", r.out)
    check_quant(r.out)
    check_count(cli("count", "q4.safetensors").out)
    check_inspect(cli("inspect", "q4.safetensors").out)


def test_quantize_prints_the_reports_values(here: Path, cli) -> None:
    """Every number printed is the library's, rounded as the header says."""
    from paramscope.compress import quantize_file

    r = cli("quantize", "src.safetensors", "q4.safetensors", "--bits", "4", "--group-size", "4")
    rep = quantize_file("src.safetensors", "q4.safetensors", bits=4, group_size=4)
    lines = r.out.splitlines()
    assert lines[0] == "src.safetensors -> q4.safetensors"
    assert cells(lines[1]) == [
        "tensor",
        "SQNR dB",
        "max |err|",
        "rel L2",
        "cosine",
        "before",
        "after",
    ]
    rows = {c[0]: c for c in (cells(line) for line in lines[2:])}
    assert list(rows) == ["enc.weight", "head.weight", "total"]
    for t in [*rep.tensors, rep.total]:
        _, sqnr, err, rel, cos, before, after = rows[t["name"]]
        assert sqnr == f"{t['sqnr_db']:.1f}" and float(sqnr) > 20
        assert float(err) == pytest.approx(t["max_abs_error"], rel=1e-2)
        assert float(rel) == pytest.approx(t["rel_l2"], rel=1e-2)
        assert float(cos) == pytest.approx(t["cosine"], abs=1e-6)
        assert (size(before)[0], size(after)[0]) == (t["bytes_before"], t["bytes_after"])
    assert rep.total["bytes_before"] == (8 * 12 + 6 * 8) * 4  # float32
    assert rep.total["bytes_after"] == (8 * 12 + 6 * 8) // 2 + (8 * 3 + 6 * 2) * 4  # + scales


def test_diff_golden(here: Path, cli, golden) -> None:
    r = cli("diff", "a.safetensors", "b.safetensors", "--atol", "1e-3")
    assert r.code == 1, r.err
    golden("diff_small.txt", r.out)
    check_diff(r.out, 7, 7)
    r = cli("diff", "a.safetensors", "b.safetensors", "--no-values")
    assert r.code == 1, r.err
    golden("diff_small_structure.txt", r.out)
    check_diff(r.out, 7, 7)
    r = cli("diff", "a.safetensors", "a.safetensors")
    assert r.code == 0 and r.out.startswith("same: a.safetensors vs a.safetensors")
    check_diff(r.out, 7, 7)


def test_convert_golden(here: Path, cli, golden) -> None:
    r = cli("convert", "src.safetensors", "bf16.safetensors", "--dtype", "bf16")
    assert r.code == 0 and r.err == "", r.err
    golden("convert_small_bf16.txt", r.out)
    check_convert(r.out, "bf16.safetensors")
    w = det((4, 4), 3)
    paramscope.save({"emb.weight": w, "head.weight": w, "head.bias": det((4,), 5)}, "tied.pt")
    r = cli("convert", "tied.pt", "shards", "--shard-size", "70B")
    assert r.code == 0, r.err
    golden("convert_small_tied_shards.txt", r.out)
    check_convert(r.out, "shards")


# ------------------------------------------- one sink: --json is to_dict, text is to_text
def _listing() -> Any:
    from paramscope.building import zoo

    return zoo.listing()


def _match() -> Any:
    from paramscope._targets import resolve_target

    return paramscope.match(resolve_target("zoo:mlp-3-5-2"), "m.safetensors")


CASES: list[tuple[list[str], Callable[[], Any]]] = [
    (["count", "src.safetensors"], lambda: paramscope.count("src.safetensors")),
    (["count", "zoo:mlp-3-5-2"], lambda: paramscope.count("zoo:mlp-3-5-2")),
    (
        ["inspect", "a.safetensors", "--depth", "0", "--filter", "*.w"],
        lambda: paramscope.inspect("a.safetensors", depth=0, pattern="*.w"),
    ),
    (
        ["inspect", "zoo:mlp-3-5-2", "--filter", "hid*"],
        lambda: paramscope.summary("zoo:mlp-3-5-2", depth=2, pattern="hid*"),
    ),
    (
        ["memory", "zoo:mlp-3-5-2", "--train", "--zero", "2", "--gpus", "4"],
        lambda: paramscope.estimate_memory(
            "zoo:mlp-3-5-2", training=True, zero_stage=2, num_gpus=4
        ),
    ),
    (["match", "zoo:mlp-3-5-2", "m.safetensors"], _match),
    (
        ["prune", "src.safetensors", "p.safetensors", "--amount", "0.3", "--scope", "layer"],
        lambda: paramscope.compress.prune_file(
            "src.safetensors", "p.safetensors", 0.3, scope="layer"
        ),
    ),
    (
        ["quantize", "src.safetensors", "q.safetensors", "--scheme", "asymmetric"],
        lambda: paramscope.compress.quantize_file(
            "src.safetensors", "q.safetensors", scheme="asymmetric"
        ),
    ),
    (
        ["convert", "src.safetensors", "c.safetensors", "--rename", "enc=encoder"],
        lambda: paramscope.convert("src.safetensors", "c.safetensors", rename=["enc=encoder"]),
    ),
    (
        ["diff", "a.safetensors", "b.safetensors"],
        lambda: _output.Also(  # the diff, then the per-layer change across depth
            paramscope.diff("a.safetensors", "b.safetensors"),
            {"layers": paramscope.layer_changes("a.safetensors", "b.safetensors"), "html": None},
        ),
    ),
    (["verify", "src.safetensors"], lambda: paramscope.verify("src.safetensors")),
    (["zoo"], _listing),
    (["example", "ex.safetensors"], lambda: _output.Wrote("ex.safetensors")),
]


@pytest.mark.parametrize(("args", "call"), CASES, ids=[" ".join(a[:2]) for a, _ in CASES])
def test_json_is_to_dict_and_text_is_to_text(here: Path, cli, args: list[str], call) -> None:
    if args[0] == "match":  # a checkpoint of another model: missing and unexpected names
        paramscope.save(
            {"hidden.weight": det((5, 3), 3), "out.bias": det((2,), 5)}, "m.safetensors"
        )
    text = cli(*args)
    data = cli(*args, "--json")
    assert text.code == data.code and text.code in (0, 1), text.err + data.err
    assert data.err == ""
    result = call()
    assert data.out == json_text(result.to_dict())
    assert text.out == result.to_text() + "\n"


def test_a_terminal_gets_tables_at_its_width(here: Path, monkeypatch) -> None:
    """Off a terminal nothing is cut; on one, the sink asks for the terminal's width."""
    ins = paramscope.inspect("src.safetensors")
    wide = ins.to_text()
    assert max(len(line) for line in wide.splitlines()) < 80
    narrow = ins.to_text(width=30)
    assert max(len(line) for line in narrow.splitlines()) <= 30 and narrow != wide

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setenv("COLUMNS", "30")
    _output.emit(ins)
    assert out.getvalue() == narrow + "\n"


def test_text_escapes_what_a_file_could_send_to_the_terminal(here: Path) -> None:
    evil = "w\x1b[31m.\u202eb"  # a colour, a right-to-left override
    paramscope.save({evil: torch.ones(2, 2)}, "evil.safetensors")
    paramscope.compress.prune_file("evil.safetensors", "evil-p.safetensors", 0.5)
    for report in (
        paramscope.count("evil.safetensors"),
        paramscope.inspect("evil.safetensors"),
        paramscope.compress.prune_file("evil.safetensors", "evil-p.safetensors", 0.5),
        paramscope.compress.quantize_file("evil.safetensors", "evil-q.safetensors"),
        paramscope.diff("evil.safetensors", "evil-p.safetensors"),
        paramscope.convert("evil.safetensors", "evil-c.safetensors"),
        paramscope.verify("evil.safetensors"),
    ):
        text = report.to_text()
        assert "\x1b" not in text and "\u202e" not in text, type(report).__name__


# ------------------------------------------------------------- the tree filter, moved
def test_summary_filter_is_a_library_option() -> None:
    model = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()), torch.nn.Linear(3, 1)
    )
    s = paramscope.summary(model, depth=1, pattern="1")
    assert [c.path for c in s.shown().children] == ["1"]
    d = s.to_dict()
    assert d["filter"] == "1" and [c["path"] for c in d["tree"]["children"]] == ["1"]
    assert "children" not in d["tree"]["children"][0]  # cut at depth 1, as unfiltered
    assert d["total"]["params"] == 2 * 3 + 3 + 3 + 1  # counts stay the whole model's
    assert "filter" not in paramscope.summary(model, depth=1).to_dict()
    with pytest.raises(paramscope.MissingNameError, match=r"'0\.0' matches deeper: use --depth 2"):
        paramscope.summary(model, depth=1, pattern="0.0")
    with pytest.raises(paramscope.MissingNameError, match="it matches parameter names"):
        paramscope.summary(model, depth=2, pattern="*.weight")


def test_a_long_source_path_is_never_wrapped_off_a_terminal(
    tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The title line names the whole source on one line, however long (rich would wrap a
    table title at the table's width, splitting the path mid-word)."""
    deep = tmp_path.joinpath(*(["a_rather_long_folder_name_for_a_checkpoint"] * 4))
    deep.mkdir(parents=True)
    path = paramscope.save(
        {"w": torch.zeros(2, 3)}, deep / "checkpoint_with_a_long_name.safetensors"
    )
    name = "a_factory_module_whose_name_is_longer_than_the_table_is_wide_" * 2
    (tmp_path / f"{name}.py").write_text(
        "import torch\ndef make():\n    return torch.nn.Linear(2, 3)\n"
    )
    monkeypatch.chdir(tmp_path)
    for args, source in (
        (("inspect", path), str(path)),
        (("inspect", f"{name}:make"), f"{name}:make"),
    ):
        code, out, _ = cli(*args)
        assert code == 0, out
        title = out.splitlines()[0]
        assert title.startswith(source), (source, title)
