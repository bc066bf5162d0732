"""Property-based fuzzing of the torch and numpy readers on the input shapes of issue 12.

Pickles that set state (BUILD), fill containers (SETITEM(S), APPEND(S)), build objects
(NEWOBJ, INST, OBJ, REDUCE) on every allowed global, with ints, floats, bools, infinities and
huge values in every slot of a tensor rebuild; zip archives written big-endian, with
compressed or renamed members; files that are two formats at once. Properties:

- only a :class:`ParamscopeError` escapes, and nothing from the file runs;
- nothing a file does changes how a later file reads (no shared state to poison);
- whatever torch's weights-only loader refuses as unsafe, paramscope refuses too;
- whatever paramscope accepts reads the same through ``load``, positioned reads and the
  framework's own reader (``torch.load`` / ``numpy.load``).

Bounded and reproducible: ``derandomize=True`` and a fixed example budget per property.
"""

from __future__ import annotations

import io
import math
import pickle
import shutil
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import paramscope
from _helpers import _g, _s, _t
from paramscope import ParamscopeError
from paramscope.io._reader import SourceReader

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SMALL = settings(FUZZ, max_examples=40)


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="paramscope-fuzz-pickles-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def attempt(fn: Callable[[], object]) -> tuple[object, BaseException | None]:
    """``(result, None)`` or ``(None, the ParamscopeError)``; anything else fails the test."""
    try:
        return fn(), None
    except Exception as exc:  # the point: nothing but ParamscopeError
        assert isinstance(exc, ParamscopeError), f"{type(exc).__name__} escaped: {exc!r:.300}"
        assert "\n" not in str(exc), f"a message of more than one line: {exc!r:.300}"
        return None, exc


def torch_values(path: Path) -> tuple[dict[str, torch.Tensor] | None, BaseException | None]:
    """What ``torch.load(weights_only=True)`` makes of a file: its top-level tensors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's own verdict, whatever it is
        return None, exc
    if not isinstance(obj, dict):
        return {}, None
    return {
        str(k): v.resolve_conj().resolve_neg()
        for k, v in obj.items()
        if isinstance(v, torch.Tensor)
    }, None


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


# ---------------------------------------------------------------------- a control file


@pytest.fixture(scope="module")
def control(work) -> tuple[Path, dict[str, torch.Tensor]]:
    """An ordinary checkpoint: after every hostile example it must still read the same."""
    path = work / "control.pt"
    sd = {"w": torch.arange(6.0).view(2, 3), "i": torch.arange(3), "h": torch.ones(2).half()}
    torch.save(sd, path)
    return path, sd


def control_reads(control: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, sd = control
    m = paramscope.read_manifest(path)
    assert {n: (e.shape, e.dtype.to_torch()) for n, e in m.items()} == {
        n: (tuple(t.shape), t.dtype) for n, t in sd.items()
    }
    with SourceReader(path) as r:
        for e in r.entries:
            assert same(r.read(e), sd[e.name]), e.name


def allowed_fingerprint() -> list[tuple[object, str]]:
    from paramscope.io import _torch_globals

    return [(k, repr(v)) for k, v in _torch_globals.ALLOWED.items()]


# ---------------------------------------------------------------------- pickle pieces


def _int(n: int) -> bytes:
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


HOOKS = _g("collections", "OrderedDict") + b")R"
NUMBERS = st.sampled_from([0, 1, 2, 3, 4, 7, 16, -1, -(2**31), 2**31, 2**62, 2**63, 2**64])
FLOATS = st.sampled_from([0.0, 1.0, 1.5, -2.0, math.inf, -math.inf, math.nan, 1e300])
SCALARS = st.one_of(
    NUMBERS.map(_int),
    FLOATS.map(lambda x: b"G" + struct.pack(">d", x)),
    st.sampled_from([b"\x88", b"\x89", b"N", _s("x"), b"]", b"}", b")"]),
)
GLOBALS = st.sampled_from(
    [
        _g("collections", "OrderedDict"),
        _g("torch._utils", "_rebuild_tensor_v2"),
        _g("torch._utils", "_rebuild_tensor"),
        _g("torch._utils", "_rebuild_parameter"),
        _g("torch._utils", "_rebuild_parameter_with_state"),
        _g("torch._tensor", "_rebuild_from_type_v2"),
        _g("torch.nn.parameter", "Parameter"),
        _g("torch", "Tensor"),
        _g("torch", "Size"),
        _g("torch", "device"),
        _g("torch", "FloatStorage"),
        _g("torch", "LongStorage"),
        _g("torch", "float32"),
        _g("torch.serialization", "_get_layout"),
        _g("builtins", "set"),
        _g("__builtin__", "complex"),
        _g("_codecs", "encode"),
        _g("builtins", "getattr"),  # refused
        _g("posix", "system"),  # refused
    ]
)


@st.composite
def dims(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        return draw(SCALARS)  # not a tuple at all
    return _t(*draw(st.lists(st.one_of(NUMBERS.map(_int), SCALARS), min_size=0, max_size=3)))


@st.composite
def tensors(draw: st.DrawFn) -> bytes:
    """A ``_rebuild_tensor_v2`` call, each argument plausible or hostile."""
    storage, fits = draw(
        st.sampled_from(
            [("FloatStorage", 16), ("LongStorage", 8), ("HalfStorage", 32), ("BoolStorage", 64)]
        )
    )
    numel = draw(st.one_of(st.just(_int(fits)), st.just(_int(fits)), NUMBERS.map(_int), SCALARS))
    pid = _t(_s("storage"), _g("torch", storage), _s("0"), _s("cpu"), numel)
    if draw(st.integers(0, 9)) == 0:
        pid = _t(_s("storage"), draw(GLOBALS), draw(SCALARS), _s("cpu"), numel, draw(SCALARS))
    plain = draw(st.booleans())
    args = [
        pid + b"Q",
        _int(0) if plain else draw(st.one_of(NUMBERS.map(_int), SCALARS)),
        _t(_int(4)) if plain else draw(dims()),
        _t(_int(1)) if plain else draw(dims()),
        b"\x89" if plain else draw(st.sampled_from([b"\x88", b"\x89", _int(1), b"N"])),
        HOOKS if plain else draw(st.sampled_from([HOOKS, b"]", b"}", b"N"])),
    ]
    meta = draw(st.sampled_from([b"", b"}", b"}" + _s("conj") + b"\x88s", b"}" + _s("x") + b"Ns"]))
    if meta:
        args.append(meta)
    return _g("torch._utils", "_rebuild_tensor_v2") + _t(*args) + b"R"


@st.composite
def values(draw: st.DrawFn) -> bytes:
    """One self-contained piece that pushes exactly one value: benign or an attack."""
    kind = draw(st.integers(0, 11))
    g, s = draw(GLOBALS), draw(SCALARS)
    if kind == 0:
        return draw(tensors())
    if kind == 1:  # BUILD with a dict or a (dict, slots) state
        state = (
            b"}" + _s(draw(st.sampled_from(["dtype", "__class__", "_metadata", "x"]))) + s + b"s"
        )
        if draw(st.booleans()):
            state = b"N" + state + b"\x86"
        return draw(st.one_of(GLOBALS, tensors(), st.just(HOOKS), st.just(b"}"))) + state + b"b"
    if kind == 2:  # SETITEM / SETITEMS
        target = draw(st.one_of(GLOBALS, st.just(HOOKS), st.just(b"}"), st.just(b"]")))
        return (
            target + b"(" + _s("k") + s + b"u"
            if draw(st.booleans())
            else target + _s("k") + s + b"s"
        )
    if kind == 3:  # APPEND / APPENDS / ADDITEMS
        target = draw(st.one_of(GLOBALS, st.just(b"]"), st.just(b"}"), st.just(b"\x8f")))
        return target + draw(st.sampled_from([s + b"a", b"(" + s + b"e", b"(" + s + b"\x90"]))
    if kind == 4:  # NEWOBJ
        return g + _t(*draw(st.lists(SCALARS, max_size=2))) + b"\x81"
    if kind == 5:  # REDUCE
        return g + _t(*draw(st.lists(st.one_of(SCALARS, tensors()), max_size=3))) + b"R"
    if kind == 6:  # INST / OBJ / NEWOBJ_EX / EXT
        return draw(
            st.sampled_from(
                [
                    b"(icollections\nOrderedDict\n",
                    b"(" + g + b"o",
                    g + b")}\x92",
                    b"\x82\x01",
                    b"(itorch\nFloatStorage\n",
                ]
            )
        )
    if kind == 7:  # a parameter around a tensor, maybe with state
        state = draw(
            st.sampled_from([b"}", b"}" + _s("data") + b"Ns", b"}" + _s("tag") + _int(1) + b"s"])
        )
        if draw(st.booleans()):
            return (
                _g("torch._utils", "_rebuild_parameter")
                + _t(draw(tensors()), b"\x88", HOOKS)
                + b"R"
            )
        return (
            _g("torch._utils", "_rebuild_parameter_with_state")
            + _t(draw(tensors()), b"\x88", HOOKS, state)
            + b"R"
        )
    if kind == 8:  # rebuild_from_type with any function and type
        return (
            _g("torch._tensor", "_rebuild_from_type_v2") + _t(g, draw(GLOBALS), _t(), b"}") + b"R"
        )
    if kind == 9:  # memo tricks: store a value, fetch it back
        return s + b"q\x09" + b"0" + b"h\x09"
    if kind == 10:
        return g
    return s


@st.composite
def benign(draw: st.DrawFn) -> bytes:
    """A piece an ordinary checkpoint holds: a tensor, a parameter, a number, a container."""
    plain = (
        _g("torch._utils", "_rebuild_tensor_v2")
        + _t(
            _t(_s("storage"), _g("torch", "FloatStorage"), _s("0"), _s("cpu"), _int(16)) + b"Q",
            _int(draw(st.integers(0, 12))),
            _t(_int(draw(st.integers(0, 4)))),
            _t(_int(1)),
            draw(st.sampled_from([b"\x88", b"\x89"])),
            HOOKS,
        )
        + b"R"
    )
    return draw(
        st.sampled_from(
            [
                plain,
                _g("torch._utils", "_rebuild_parameter") + _t(plain, b"\x89", HOOKS) + b"R",
                _g("collections", "OrderedDict")
                + b")R("
                + _s("x")
                + plain
                + b"u}"
                + _s("_metadata")
                + b"}sb",
                _g("__builtin__", "set") + _t(b"(" + _int(1) + _int(2) + b"l") + b"R",
                _g("__builtin__", "complex") + _t(b"G" + struct.pack(">d", 1.5), _int(2)) + b"R",
                _g("torch", "Size") + _t(_t(_int(2), _int(3))) + b"R",
                b"]" + plain + b"a",
                _int(7),
                _s("text"),
            ]
        )
    )


@st.composite
def hostile_pickles(draw: st.DrawFn) -> bytes:
    """A state dict of benign pieces with now and then a hostile one among them."""
    pieces = st.one_of(benign(), benign(), benign(), values())
    body = b"".join(_s(f"k{i}") + draw(pieces) + b"s" for i in range(draw(st.integers(1, 4))))
    return b"\x80\x02}" + _s("w") + draw(st.one_of(benign(), tensors())) + b"s" + body + b"."


def torch_zip(path: Path, pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", b"little")
        z.writestr("archive/data/0", bytes(range(64)))  # 16 floats, 8 longs, 32 halves ...
        z.writestr("archive/version", b"3\n")
    return path


def judge_torch_file(path: Path) -> None:
    """The properties of this module, for one torch file."""
    _, err = attempt(lambda: paramscope.read_manifest(path))
    theirs, their_err = torch_values(path)
    event(f"paramscope {'refuses' if err else 'accepts'}, torch {type(their_err).__name__}")
    if isinstance(their_err, pickle.UnpicklingError):
        assert err is not None, f"torch refuses as unsafe, paramscope accepts: {their_err}"
    if err is not None:
        return
    pd, load_err = attempt(lambda: paramscope.load(path))
    if load_err is not None:
        return
    assert theirs is not None, f"paramscope loads what torch cannot: {their_err!r:.200}"
    for name, t in pd.items():
        if name in theirs:
            assert same(t, theirs[name]), name
    with SourceReader(path) as r:
        for e in r.entries:
            got, read_err = attempt(lambda e=e: r.read(e))
            if read_err is None:
                assert same(got, pd[e.name]), e.name  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- properties


@FUZZ
@given(raw=hostile_pickles())
def test_hostile_pickles_refused_cleanly_and_poison_nothing(work, control, raw):
    before = allowed_fingerprint()
    marker = work / "pwned"
    judge_torch_file(torch_zip(work / "hostile.pt", raw))
    assert not marker.exists()
    assert allowed_fingerprint() == before
    control_reads(control)


@SMALL
@given(raw=hostile_pickles())
def test_hostile_pickles_as_legacy_files(work, control, raw):
    magic = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}."
    keys = b"\x80\x02]" + _s("0") + b"a."
    path = work / "legacy.pt"
    path.write_bytes(magic + raw + keys + struct.pack("<q", 16) + bytes(64))
    attempt(lambda: paramscope.read_manifest(path))
    attempt(lambda: paramscope.load(path))
    control_reads(control)


DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.uint8,
    torch.bool,
    torch.complex64,
]


@st.composite
def state_dicts(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    out = {}
    for i in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from(DTYPES))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        n = math.prod(shape)
        base = torch.arange(n, dtype=torch.float64) * draw(st.sampled_from([1.0, -0.5, 1e3]))
        t = base.to(dtype).reshape(shape)
        if draw(st.booleans()) and t.dim() == 2:
            t = t.t()  # a strided view: no positioned read
        out[f"t{i}"] = t
    return out


def _swap(name: str, data: bytes, widths: dict[str, int]) -> bytes:
    """A storage member's bytes in the other byte order (complex: each part on its own)."""
    width = widths.get(name.rsplit("/", 1)[-1], 1)
    if width == 1:
        return data
    return np.frombuffer(data, f"<u{width}").byteswap().tobytes()


def rewrite(src: Path, dst: Path, change, method) -> Path:
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            data = change(info.filename, zi.read(info.filename))
            zo.writestr(zipfile.ZipInfo(info.filename), data, compress_type=method(info.filename))
    return dst


@SMALL
@given(
    sd=state_dicts(),
    big=st.booleans(),
    deflate=st.sets(st.integers(0, 9)),
    bzip2=st.sampled_from([None, None, None, None, *range(10)]),
)
def test_byte_order_and_compression_read_as_torch_reads(work, sd, big, deflate, bzip2):
    src = work / "plain.pt"
    torch.save(sd, src)
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
    widths = {
        str(i): 4 if t.dtype is torch.complex64 else t.element_size()
        for i, t in enumerate(sd.values())
    }

    def change(name: str, data: bytes) -> bytes:
        if big and name.endswith("/byteorder"):
            return b"big"
        if big and "/data/" in name:
            return _swap(name, data, widths)
        return data

    method = {
        n: zipfile.ZIP_BZIP2 if i == bzip2 else zipfile.ZIP_DEFLATED if i in deflate else 0
        for i, n in enumerate(names)
    }
    path = rewrite(src, work / "rewritten.pt", change, lambda n: method[n])
    judge_torch_file(path)
    if bzip2 is None or bzip2 >= len(names):  # torch reads it: so must paramscope
        want, err = torch_values(path)
        assert err is None
        pd = paramscope.load(path)
        for name, t in want.items():
            assert same(pd[name], t), name


@st.composite
def polyglots(draw: st.DrawFn) -> bytes:
    parts = {
        "legacy": legacy_bytes(),
        "zip": zip_bytes(),
        "npy": npy_bytes(),
        "npz": npz_bytes(),
        "junk": bytes(draw(st.binary(max_size=40))),
    }
    order = draw(st.lists(st.sampled_from(sorted(parts)), min_size=2, max_size=3, unique=True))
    return b"".join(parts[k] for k in order)


def _saved(fn: Callable[[io.BytesIO], None]) -> bytes:
    buf = io.BytesIO()
    fn(buf)
    return buf.getvalue()


def legacy_bytes() -> bytes:
    return _saved(
        lambda b: torch.save({"l": torch.arange(3.0)}, b, _use_new_zipfile_serialization=False)
    )


def zip_bytes() -> bytes:
    return _saved(lambda b: torch.save({"z": torch.arange(5)}, b))


def npy_bytes() -> bytes:
    return _saved(lambda b: np.save(b, np.arange(4, dtype=np.float32)))


def npz_bytes() -> bytes:
    return _saved(lambda b: np.savez(b, n=np.arange(2, dtype=np.int16)))


@SMALL
@given(raw=polyglots(), suffix=st.sampled_from([".pt", ".npz", ".npy", ".bin"]))
def test_polyglots_read_as_their_framework_reads_them(work, raw, suffix):
    path = work / f"poly{suffix}"
    path.write_bytes(raw)
    m, err = attempt(lambda: paramscope.read_manifest(path))
    event(f"polyglot: {'refused' if err else m.format.value}")  # type: ignore[union-attr]
    if err is not None:
        return
    pd, err = attempt(lambda: paramscope.load(path))
    if err is not None:
        return
    if m.format.value == "torch":
        want, their_err = torch_values(path)
        assert their_err is None, their_err
    else:
        loaded = np.load(path, allow_pickle=False)
        arrays = {path.stem: loaded} if isinstance(loaded, np.ndarray) else dict(loaded)
        want = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    assert sorted(pd) == sorted(want)
    for name in pd:
        assert same(pd[name], want[name]), name


@SMALL
@given(data=st.data())
def test_zip_member_surgery(work, data):
    """Renamed, duplicated, case-flipped or reordered members of a real torch zip."""
    src = work / "surgery-src.pt"
    torch.save({"a": torch.arange(4.0), "b": torch.arange(2)}, src)
    with zipfile.ZipFile(src) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(members) - 1))
        name, raw = members[i]
        op = data.draw(st.sampled_from(["upper", "dup", "move", "drop", "rename"]))
        if op == "upper":
            members[i] = (name.upper(), raw)
        elif op == "dup":
            members.append((name, data.draw(st.binary(max_size=16))))
        elif op == "move":
            members.append(members.pop(i))
        elif op == "drop" and len(members) > 1:
            members.pop(i)
        else:
            members[i] = ("other/" + name.split("/", 1)[-1], raw)
    path = work / "surgery.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w") as z:
            for name, raw in members:
                z.writestr(name, raw)
    judge_torch_file(path)
