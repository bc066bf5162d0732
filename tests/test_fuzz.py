"""Property-based fuzzing of every reader: whatever the bytes, only a ParamscopeError escapes.

Bounded and reproducible: ``derandomize=True`` and a fixed example budget per property.
Anything else raised (a bare ``ValueError``, ``RecursionError``, ...) fails the test, and a
``BaseException`` such as ``MemoryError`` is not caught at all.
"""

from __future__ import annotations

import json
import pickle
import pickletools
import shutil
import struct
import tempfile
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramscope
from paramscope import ParamscopeError
from paramscope._errors import HeaderError
from paramscope.io import _dcp, _safetensors, _torch

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def only_paramscope_errors(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:  # the point: nothing but ParamscopeError
        assert isinstance(exc, ParamscopeError), f"{type(exc).__name__} escaped: {exc!r:.300}"


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="paramscope-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def sample() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "emb.weight": torch.randn(3, 2, generator=g),
        "fc.bias": torch.randn(3, generator=g).to(torch.float16),
        "steps": torch.tensor(7),
    }


# ------------------------------------------------------------------------------ mutations

REGIONS = ("prefix", "header", "data", "anywhere")


@st.composite
def mutations(draw: st.DrawFn, raw: bytes, header_end: int) -> bytes:
    """``raw`` with 1-4 byte flips, insertions or deletions, aimed at one region."""
    buf = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        region = draw(st.sampled_from(REGIONS))
        lo, hi = {
            "prefix": (0, 8),
            "header": (8, header_end),
            "data": (header_end, len(buf)),
            "anywhere": (0, len(buf)),
        }[region]
        hi = min(max(hi, lo + 1), len(buf))
        if lo >= hi:
            lo, hi = 0, len(buf)
        pos = draw(st.integers(lo, hi - 1))
        op = draw(st.sampled_from(("flip", "set", "insert", "delete")))
        if op == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif len(buf) > 1:
            del buf[pos : pos + draw(st.integers(1, 8))]
    return bytes(buf)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=24,
)

DTYPES = [d.value for d in paramscope.DType] + ["F32x", ""]
DIM = st.integers(0, 6) | st.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64])


@st.composite
def plausible_headers(draw: st.DrawFn) -> tuple[dict, int]:
    """Headers that look right (dtype / shape / offsets) with values near the limits."""
    header: dict = {}
    for name in draw(st.lists(st.text(min_size=0, max_size=6), max_size=4, unique=True)):
        off = draw(st.lists(st.integers(0, 64) | DIM, min_size=0, max_size=3))
        header[name] = {
            "dtype": draw(st.sampled_from(DTYPES)),
            "shape": draw(st.lists(DIM, max_size=4) | JSON),
            "data_offsets": off,
        }
    if draw(st.booleans()):
        header["__metadata__"] = draw(
            st.dictionaries(st.sampled_from(["paramscope", "format", "x"]), JSON | st.text())
        )
        if "paramscope" in header["__metadata__"] and draw(st.booleans()):
            header["__metadata__"]["paramscope"] = json.dumps(draw(JSON | st.just({"version": 1})))
    return header, draw(st.integers(0, 96))


def write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


# ---------------------------------------------------------------------- safetensors header


@FUZZ
@given(raw=st.binary(max_size=256))
def test_random_bytes_as_safetensors(work, raw):
    path = write(work / "random.safetensors", raw)
    only_paramscope_errors(lambda: _safetensors.parse_header(path))
    only_paramscope_errors(lambda: paramscope.read_manifest(path))


@FUZZ
@given(obj=JSON, slack=st.integers(-4, 64), data=st.binary(max_size=64))
def test_random_json_as_safetensors_header(work, obj, slack, data):
    raw = json.dumps(obj).encode()
    length = max(0, len(raw) + slack)  # a length that is right, short or long
    path = write(work / "json.safetensors", struct.pack("<Q", length) + raw + data)
    only_paramscope_errors(lambda: _safetensors.parse_header(path))


@FUZZ
@given(spec=plausible_headers())
def test_plausible_headers(work, spec):
    header, data_len = spec
    raw = json.dumps(header).encode()
    path = write(
        work / "plausible.safetensors", struct.pack("<Q", len(raw)) + raw + b"\0" * data_len
    )
    only_paramscope_errors(lambda: paramscope.read_manifest(path))
    only_paramscope_errors(lambda: paramscope.verify(path))


@pytest.fixture(scope="module")
def saved_safetensors(work) -> tuple[bytes, int]:
    path = work / "valid.safetensors"
    paramscope.save(sample(), path)
    raw = path.read_bytes()
    return raw, 8 + struct.unpack("<Q", raw[:8])[0]


@FUZZ
@given(data=st.data())
def test_mutated_saved_safetensors(work, saved_safetensors, data):
    raw, header_end = saved_safetensors
    mutated = data.draw(mutations(raw, header_end))
    path = write(work / "mutated.safetensors", mutated)
    only_paramscope_errors(lambda: paramscope.read_manifest(path))
    only_paramscope_errors(lambda: dict(paramscope.load(path).items()))


def test_mutation_strategy_reaches_every_outcome(saved_safetensors, work):
    """The mutated files are not all rejected: the fuzzing also exercises valid parses."""
    raw, _ = saved_safetensors
    path = write(work / "same.safetensors", raw)
    assert set(paramscope.read_manifest(path)) == set(sample())


@pytest.mark.parametrize(
    ("label", "raw"),
    [
        (
            "1e12 elements",
            b'{"w":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,4000000000000]}}',
        ),
        (
            "1e12 elements, few bytes",
            b'{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,8]}}',
        ),
        ("length 2^63", None),
        ("length 2^64-1", None),
        ("length 99 MB", None),
    ],
)
def test_huge_claims_in_a_1kb_file_stay_small(work, label, raw):
    path = work / "claim.safetensors"
    if raw is None:
        n = {"length 2^63": 2**63, "length 2^64-1": 2**64 - 1, "length 99 MB": 99_000_000}[label]
        path.write_bytes(struct.pack("<Q", n) + b"{" + b" " * 1015)
    else:
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (1016 - len(raw)))
    assert path.stat().st_size == 1024
    tracemalloc.start()
    try:
        with pytest.raises(HeaderError):
            paramscope.read_manifest(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20, f"{label}: peak {peak} bytes"


# ------------------------------------------------------------------------------ index JSON


@pytest.fixture(scope="module")
def index_folder(work) -> tuple[Path, bytes]:
    folder = work / "sharded"
    index = paramscope.save(sample(), folder, max_shard_size=16)
    assert index.name.endswith(".index.json")
    return index, index.read_bytes()


@FUZZ
@given(obj=JSON)
def test_random_json_as_index(index_folder, obj):
    index, original = index_folder
    try:
        index.write_text(json.dumps(obj))
        only_paramscope_errors(lambda: paramscope.read_manifest(index))
        wrapped = {"weight_map": obj, "metadata": {"total_size": obj}}
        index.write_text(json.dumps(wrapped))
        only_paramscope_errors(lambda: paramscope.read_manifest(index))
    finally:
        index.write_bytes(original)


@FUZZ
@given(data=st.data())
def test_mutated_index(index_folder, data):
    index, original = index_folder
    mutated = data.draw(mutations(original, len(original)))
    try:
        index.write_bytes(mutated)
        only_paramscope_errors(lambda: paramscope.read_manifest(index.parent))
    finally:
        index.write_bytes(original)


# ----------------------------------------------------------------------------- pickles

# Opcodes (with arguments) to assemble random pickles from, a dangerous global among them.
OPCODES = [
    b"(",
    b")",
    b"]",
    b"}",
    b"t",
    b"l",
    b"d",
    b"a",
    b"e",
    b"s",
    b"u",
    b"R",
    b"b",
    b"Q",
    b"0",
    b"2",
    b"N",
    b"\x88",
    b"\x89",
    b"\x85",
    b"\x86",
    b"\x87",
    b"\x81",
    b"\x92",
    b"\x93",
    b"\x94",
    b"\x95" + struct.pack("<Q", 2**40),
    b"\x96",
    b"\x97",
    b"\x98",
    b"h\x00",
    b"j" + struct.pack("<I", 2**31),
    b"K\x07",
    b"J" + struct.pack("<i", -1),
    b"\x8a\x08" + b"\xff" * 8,
    b"X" + struct.pack("<I", 3) + b"abc",
    b"X" + struct.pack("<I", 2**31) + b"abc",  # a length far past the end
    b"\x8d" + struct.pack("<Q", 2**62),
    b"\x8e" + struct.pack("<Q", 2**62),
    b"\x8c\x07storage",
    b"\x8c\x05posix\x8c\x06system",
    b"cposix\nsystem\n",
    b"ctorch\nFloatStorage\n",
    b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ctorch\nSize\n",
    b"ccollections\nOrderedDict\n",
    b"ctorch.distributed.checkpoint.metadata\nMetadata\n",
    b"ctorch.distributed.checkpoint.metadata\nTensorStorageMetadata\n",
    b"cbuiltins\nlist\n",
    b"@CMD@",  # replaced by the command that would create the marker file
    b"@CMD@\x85R",
]


@st.composite
def opcode_pickles(draw: st.DrawFn) -> bytes:
    proto = draw(st.sampled_from([b"", b"\x80\x02", b"\x80\x04", b"\x80\x05"]))
    body = b"".join(draw(st.lists(st.sampled_from(OPCODES), max_size=24)))
    return proto + body + draw(st.sampled_from([b".", b"", b"R."]))


def with_command(raw: bytes, marker: Path) -> bytes:
    cmd = f"touch {marker}".encode()
    return raw.replace(b"@CMD@", b"X" + struct.pack("<I", len(cmd)) + cmd)


def marker_safe(marker: Path, fn: Callable[[], object]) -> None:
    only_paramscope_errors(fn)
    assert not marker.exists(), "code from the file ran"


@pytest.fixture(scope="module")
def dcp_folder(work) -> tuple[Path, bytes]:
    folder = work / "dcp"
    paramscope.save(paramscope.ParamDict(sample()), folder, format="dcp")
    return folder, (folder / _dcp.METADATA_NAME).read_bytes()


@FUZZ
@given(data=st.data())
def test_mutated_dcp_metadata(dcp_folder, data):
    folder, original = dcp_folder
    meta = folder / _dcp.METADATA_NAME
    mutated = data.draw(mutations(original, len(original)))
    try:
        meta.write_bytes(mutated)
        only_paramscope_errors(lambda: _dcp.read_dcp_metadata(folder))
        only_paramscope_errors(lambda: paramscope.read_manifest(folder))
    finally:
        meta.write_bytes(original)


@FUZZ
@given(raw=opcode_pickles())
def test_random_opcodes_as_dcp_metadata(dcp_folder, work, raw):
    folder, original = dcp_folder
    marker = work / "pwned-dcp"
    raw = with_command(raw, marker)
    meta = folder / _dcp.METADATA_NAME
    try:
        meta.write_bytes(raw)
        marker_safe(marker, lambda: paramscope.read_manifest(folder))
    finally:
        meta.write_bytes(original)


@pytest.fixture(scope="module")
def torch_zip(work) -> tuple[Path, dict[str, bytes], str]:
    path = work / "valid.pt"
    torch.save(sample(), path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    (pkl,) = [n for n in members if n.endswith("/data.pkl")]
    return path, members, pkl


def rezip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return path


@FUZZ
@given(data=st.data())
def test_mutated_torch_data_pkl(work, torch_zip, data):
    _, members, pkl = torch_zip
    mutated = data.draw(mutations(members[pkl], len(members[pkl])))
    path = rezip(work / "mutated.pt", {**members, pkl: mutated})
    only_paramscope_errors(lambda: _torch.scan_pickle(path))
    only_paramscope_errors(lambda: paramscope.read_manifest(path))


@FUZZ
@given(raw=opcode_pickles())
def test_random_opcodes_as_torch_data_pkl(work, torch_zip, raw):
    _, members, pkl = torch_zip
    marker = work / "pwned-torch"
    raw = with_command(raw, marker)
    path = rezip(work / "opcodes.pt", {**members, pkl: raw})
    marker_safe(marker, lambda: paramscope.read_manifest(path))
    legacy = write(work / "opcodes.bin", raw)
    marker_safe(marker, lambda: _torch.read_torch_manifest(legacy))


def test_crafted_payload_is_refused_and_the_marker_check_works(work):
    """A real payload from the opcode pool: refused, and the same bytes do run when trusted."""
    marker = work / "pwned-check"
    raw = with_command(b"\x80\x02cposix\nsystem\n@CMD@\x85R.", marker)
    assert [op.name for op, _, _ in pickletools.genops(raw)][-2:] == ["REDUCE", "STOP"]
    path = write(work / "payload.bin", raw)
    with pytest.raises(paramscope.UnsafePickleError):
        paramscope.read_manifest(path)
    assert not marker.exists()
    pickle.loads(raw)  # the trusted path runs it: the marker check can fail
    assert marker.exists()
    marker.unlink()
