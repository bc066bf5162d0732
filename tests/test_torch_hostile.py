"""Hostile torch and numpy checkpoints (issue 12): state poisoning through BUILD and friends,
unchecked values in rebuild arguments, byte order, compressed members, polyglots.

Every refusal is one ParamscopeError naming the file; every accepted file reads the same
through the manifest, positioned reads (SourceReader) and ``load``, and the same as
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import math
import pickle
import struct
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import paramscope
from _helpers import _g, _i, _s, _t, raises_exactly, run_cli
from conftest import CliResult
from paramscope import FormatError, UnsafePickleError
from paramscope.io import _numpy, _torch
from paramscope.io._reader import SourceReader

# ----------------------------------------------------------------------------- helpers


def _f(x: float) -> bytes:
    return b"G" + struct.pack(">d", x)


def _long(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8 or 1, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


HOOKS = _g("collections", "OrderedDict") + b")R"


def _pid(key="0", numel=4, storage="FloatStorage", extra=b"") -> bytes:
    return _t(_s("storage"), _g("torch", storage), _s(key), _s("cpu"), _i(numel), extra) + b"Q"


def _tensor(
    key="0",
    size=(4,),
    stride=(1,),
    numel=4,
    storage="FloatStorage",
    offset: bytes | None = None,
    size_raw: bytes | None = None,
    stride_raw: bytes | None = None,
    grad: bytes = b"\x89",
    hooks: bytes = HOOKS,
    metadata: bytes = b"",
    pid: bytes | None = None,
) -> bytes:
    sz = size_raw if size_raw is not None else _t(*map(_i, size))
    sd = stride_raw if stride_raw is not None else _t(*map(_i, stride))
    args = (
        pid if pid is not None else _pid(key, numel, storage),
        offset if offset is not None else _i(0),
        sz,
        sd,
        grad,
        hooks,
        metadata,
    )
    return _g("torch._utils", "_rebuild_tensor_v2") + _t(*args) + b"R"


def _state(proto: int = 2, **items: bytes) -> bytes:
    body = b"".join(_s(k) + v + b"s" for k, v in items.items())
    return b"\x80" + bytes([proto]) + b"}" + body + b"."


DATA = struct.pack("<4f", 0.0, 1.0, 2.0, 3.0)


def torch_zip(path: Path, pkl: bytes, members: dict[str, bytes] | None = None) -> Path:
    """A torch zip by hand: data.pkl first, a version record, storage members."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", b"3\n")
        for name, data in (members if members is not None else {"archive/data/0": DATA}).items():
            z.writestr(name, data)
    return path


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.pt"
    torch.save({"w": torch.arange(4.0), "i": torch.arange(3)}, path)
    return path


def reads_correctly(path: Path) -> None:
    """Manifest, positioned reads and load all give the values torch.load gives."""
    loaded = torch.load(path, weights_only=True)
    want = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    m = paramscope.read_manifest(path)
    assert list(m) == list(want)
    for name, t in want.items():
        assert m[name].shape == tuple(t.shape) and m[name].dtype.to_torch() == t.dtype, name
    pd = paramscope.load(path)
    with SourceReader(path) as r:
        streamed = {e.name: r.read(e).clone() for e in r.entries}
    for name, t in want.items():
        assert torch.equal(pd[name], t.resolve_conj().resolve_neg()), name
        assert torch.equal(streamed[name], t.resolve_conj().resolve_neg()), name


def one_line_exit_2(out: CliResult, *fragments: str) -> None:
    assert out.code == 2, (out.code, out.err[-2000:])
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("paramscope: error: "), lines
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


# ---------------------------------------------------------- 1. BUILD and state poisoning


def _build(target: bytes, state: bytes) -> bytes:
    """``target`` on the stack, ``state`` set on it with BUILD, then an ordinary result."""
    return b"\x80\x02" + target + state + b"b0" + b"}" + _s("w") + _tensor() + b"s."


DICT_STATE = b"}" + _s("dtype") + b"N" + b"s"
SLOT_STATE = b"N}" + _s("dtype") + b"N" + b"s\x86"  # (None, {"dtype": None})


@pytest.mark.parametrize(
    ("target", "state"),
    [
        pytest.param(_g("torch", "FloatStorage"), DICT_STATE, id="storage-type-dict"),
        pytest.param(_g("torch", "FloatStorage"), SLOT_STATE, id="storage-type-slots"),
        pytest.param(
            _g("torch._utils", "_rebuild_tensor_v2"),
            b"N}" + _s("__defaults__") + b")s\x86",
            id="function-defaults",
        ),
        pytest.param(
            _g("torch._utils", "_rebuild_tensor_v2"),
            b"N}" + _s("call") + _g("builtins", "set") + b"s\x86",
            id="stand-in-call",
        ),
        pytest.param(_g("collections", "OrderedDict"), DICT_STATE, id="class-dict"),
        pytest.param(
            _g("torch.nn.parameter", "Parameter"),
            b"N}" + _s("__init__") + _g("builtins", "set") + b"s\x86",
            id="parameter-type",
        ),
        pytest.param(_g("torch", "Size"), SLOT_STATE, id="size"),
        pytest.param(_g("torch", "float32"), DICT_STATE, id="dtype"),
        pytest.param(_tensor(), b"}" + _s("foo") + _i(1) + b"s", id="tensor-stub"),
        pytest.param(
            _tensor(), b"N}" + _s("__class__") + _g("torch", "Size") + b"s\x86", id="stub-class"
        ),
        pytest.param(_tensor(), b"N}" + _s("__dict__") + b"}s\x86", id="stub-dict"),
        pytest.param(_tensor(), _t(_pid(), _i(0), _t(_i(2)), _t(_i(1))), id="stub-set_"),
        pytest.param(b"}", DICT_STATE, id="plain-dict"),
        pytest.param(b"]", DICT_STATE, id="list"),
        pytest.param(_g("builtins", "set") + b")R", DICT_STATE, id="set"),
    ],
)
def test_build_is_refused_on_everything_but_a_fresh_ordered_dict(tmp_path, good, target, state):
    path = torch_zip(tmp_path / "build.pt", _build(target, state))
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path), "BUILD")
    raises_exactly(UnsafePickleError, lambda: paramscope.load(path), str(path))
    # the same process still reads an ordinary checkpoint (no stand-in was changed)
    reads_correctly(good)
    assert paramscope.read_manifest(good)["w"].dtype.value == "F32"


def test_build_on_an_ordered_dict_sets_nothing_a_tensor_needs(tmp_path):
    od = _g("collections", "OrderedDict") + b")R" + b"(" + _s("w") + _tensor() + b"u"
    meta = b"}" + _s("_metadata") + b"}" + b"s" + b"b"
    path = torch_zip(tmp_path / "od.pt", b"\x80\x02" + od + meta + b".")
    reads_correctly(path)
    # a state that is not a dict of names is refused, as torch refuses it
    bad = torch_zip(tmp_path / "bad.pt", b"\x80\x02" + od + b"N}" + _s("x") + b"Ns\x86b.")
    raises_exactly(FormatError, lambda: paramscope.read_manifest(bad), str(bad), "OrderedDict")


def test_real_state_dict_with_metadata_reads(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    assert hasattr(model.state_dict(), "_metadata")
    reads_correctly(path)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_g("collections", "OrderedDict") + _s("k") + _i(1) + b"s", id="setitem-class"),
        pytest.param(_g("torch", "FloatStorage") + _s("k") + _i(1) + b"s", id="setitem-stand-in"),
        pytest.param(
            _g("torch._utils", "_rebuild_tensor_v2") + b"(" + _s("k") + _i(1) + b"u",
            id="setitems-function",
        ),
        pytest.param(_g("builtins", "set") + _i(1) + b"a", id="append-class"),
        pytest.param(b"}" + b"(" + _i(1) + b"e", id="appends-dict"),
        pytest.param(_g("builtins", "set") + b")R" + _i(1) + b"a", id="append-set"),
        pytest.param(_tensor() + _s("k") + _i(1) + b"s", id="setitem-tensor"),
        pytest.param(b"\x8f(" + _i(1) + b"e", id="appends-set"),
        pytest.param(_g("torch", "Size") + b"(" + _i(1) + b"\x90", id="additems-class"),
    ],
)
def test_container_opcodes_reach_only_fresh_containers(tmp_path, good, body):
    path = torch_zip(tmp_path / "c.pt", b"\x80\x02" + body + b"0}.")
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path), "on ")
    reads_correctly(good)


def test_shared_ordered_dict_class_is_not_a_dict(tmp_path, good):
    # SETITEM on the OrderedDict global must not reach collections.OrderedDict (or a shared
    # instance): afterwards a fresh OrderedDict() from the same global is still empty.
    poison = _g("collections", "OrderedDict") + _s("x") + _tensor() + b"s0"
    path = torch_zip(tmp_path / "p.pt", b"\x80\x02" + poison + b"}.")
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path))
    assert OrderedDict() == {}
    reads_correctly(good)


@pytest.mark.parametrize(
    "cls",
    [
        _g("collections", "OrderedDict"),
        _g("builtins", "set"),
        _g("torch", "FloatStorage"),
        _g("torch.nn.parameter", "Parameter"),
        _g("torch", "Size"),
        _g("torch._utils", "_rebuild_tensor_v2"),
    ],
    ids=["ordereddict", "set", "storage", "parameter", "size", "function"],
)
def test_newobj_only_builds_complex_numbers(tmp_path, cls):
    path = torch_zip(tmp_path / "n.pt", b"\x80\x02" + cls + b")\x81" + b"0}.")
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path), "NEWOBJ")
    ok = torch_zip(
        tmp_path / "c.pt",
        _state(w=_tensor(), c=_g("builtins", "complex") + _t(_f(1.0), _f(2.0)) + b"\x81"),
    )
    reads_correctly(ok)


@pytest.mark.parametrize(
    "op",
    [
        b"(i" + b"collections\nOrderedDict\n",  # INST of an allowed class
        b"(itorch\nFloatStorage\n",
        b"(" + _g("collections", "OrderedDict") + b"o",  # OBJ
        _g("collections", "OrderedDict") + b")}\x92",  # NEWOBJ_EX
        b"\x82\x01",  # EXT1
        b"\x83\x01\x00",  # EXT2
        b"\x84\x01\x00\x00\x00",  # EXT4
        b"P0\n",  # PERSID (text)
    ],
    ids=["inst", "inst-storage", "obj", "newobj_ex", "ext1", "ext2", "ext4", "persid"],
)
def test_object_building_opcodes_are_refused(tmp_path, op):
    path = torch_zip(tmp_path / "o.pt", b"\x80\x02" + op + b".")
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path))


@pytest.mark.parametrize(
    "call",
    [
        _g("torch", "FloatStorage") + _t(_long(10**12)) + b"R",  # would allocate 4 TB in torch
        _g("torch", "float32") + b")R",
        b"})R",
        _g("torch.nn.parameter", "Parameter") + _t(_tensor()) + b"R",
    ],
    ids=["storage-type", "dtype", "dict", "parameter-class"],
)
def test_calling_what_is_not_a_function_is_refused(tmp_path, call):
    path = torch_zip(tmp_path / "r.pt", b"\x80\x02" + call + b"0}.")
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path), "calls")


@pytest.mark.parametrize(
    ("func", "new_type"),
    [
        (_g("collections", "OrderedDict"), _g("torch", "Tensor")),
        (_g("builtins", "set"), _g("torch", "Tensor")),
        (_g("torch._utils", "_rebuild_parameter"), _g("torch", "Tensor")),
        (_g("torch._utils", "_rebuild_tensor_v2"), _g("collections", "OrderedDict")),
    ],
    ids=["ordereddict", "set", "parameter-rebuild", "type-ordereddict"],
)
def test_rebuild_from_type_calls_only_tensor_rebuilders(tmp_path, func, new_type):
    args = _t(_pid(), _i(0), _t(_i(4)), _t(_i(1)), b"\x89", HOOKS)
    call = _g("torch._tensor", "_rebuild_from_type_v2") + _t(func, new_type, args, b"}") + b"R"
    path = torch_zip(tmp_path / "t.pt", _state(w=call))
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path))


@pytest.mark.parametrize(
    ("state", "cls"),
    [
        (b"}" + _s("data") + _tensor(key="1", size=(2,), numel=2) + b"s", UnsafePickleError),
        (b"}" + _s("requires_grad") + b"\x89s", UnsafePickleError),
        (b"N}" + _s("shape") + _t(_i(9)) + b"s\x86", UnsafePickleError),
        (b"}" + _s("__class__") + _g("torch", "Size") + b"s", FormatError),
        (b"}" + _s("x") + _g("torch", "Size") + b"s", FormatError),
        (b"]", FormatError),
    ],
    ids=["data", "requires_grad", "shape-slot", "class", "global-value", "list"],
)
def test_tensor_state_cannot_change_the_tensor(tmp_path, state, cls):
    call = _g("torch._utils", "_rebuild_parameter_with_state")
    call += _t(_tensor(), b"\x88", HOOKS, state) + b"R"
    members = {"archive/data/0": DATA, "archive/data/1": DATA[:8]}
    path = torch_zip(tmp_path / "s.pt", _state(w=call), members)
    raises_exactly(cls, lambda: paramscope.read_manifest(path), str(path))


def test_tensor_and_parameter_attributes_are_kept_plain(tmp_path):
    t = torch.arange(3.0)
    t.note = "x"
    p = nn.Parameter(torch.ones(2))
    p.tp_rank = 0
    path = tmp_path / "attrs.pt"
    torch.save({"t": t, "p": p}, path)
    reads_correctly(path)
    assert paramscope.read_manifest(path)["p"].role.value == "param"


def test_backward_hooks_filled_in_later_are_refused(tmp_path):
    hooks = _g("collections", "OrderedDict") + b")Rq\x07"  # memoised as 7
    t = _g("torch._utils", "_rebuild_tensor_v2")
    t += _t(_pid(), _i(0), _t(_i(4)), _t(_i(1)), b"\x89", hooks) + b"R"
    fill = b"h\x07" + _i(0) + _g("torch._utils", "_rebuild_tensor_v2") + b"s0"
    path = torch_zip(tmp_path / "h.pt", b"\x80\x02}" + _s("w") + t + b"s" + fill + b".")
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), str(path), "hooks")


def test_a_parameter_rebuild_does_not_change_the_tensor_it_wraps(tmp_path):
    # one tensor, memoised, stored once as a buffer and once wrapped in a Parameter
    t = _tensor() + b"q\x05"
    param = _g("torch._utils", "_rebuild_parameter") + _t(b"h\x05", b"\x88", HOOKS) + b"R"
    path = torch_zip(tmp_path / "p.pt", _state(**{"bn.running_mean": t, "p": param}))
    m = paramscope.read_manifest(path)
    assert m["bn.running_mean"].role.value == "buffer"
    assert m["p"].role.value == "param"
    loaded = torch.load(path, weights_only=True)
    assert not isinstance(loaded["bn.running_mean"], nn.Parameter)
    assert isinstance(loaded["p"], nn.Parameter)


def test_stand_ins_are_frozen_and_the_table_read_only():
    from paramscope.io import _torch_globals

    for key, value in _torch_globals.ALLOWED.items():
        assert dataclasses.is_dataclass(value), key
        field = dataclasses.fields(value)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, None)
        with pytest.raises((AttributeError, TypeError)):
            value.__dict__  # noqa: B018 - slots: no instance dict a BUILD could fill
    with pytest.raises(TypeError):
        _torch_globals.ALLOWED[("os", "system")] = print  # type: ignore[index]


def test_tensor_attribute_denylist_covers_torch():
    from paramscope.io import _torch_globals

    found = set()
    for cls in (torch.Tensor, nn.Parameter, torch._C.TensorBase):
        for name in dir(cls):
            if hasattr(type(inspect.getattr_static(cls, name, None)), "__set__"):
                found.add(name)
    assert found <= _torch_globals.TENSOR_ATTRS, sorted(found - _torch_globals.TENSOR_ATTRS)


def test_python2_names_and_bytes_read_as_torch_reads_them(tmp_path):
    path = tmp_path / "extras.pt"
    torch.save(
        {"w": torch.ones(2), "c": 1j, "s": {1, 2}, "b": b"ab", "d": torch.device("cpu")}, path
    )
    raw = zipfile.ZipFile(path).read("extras/data.pkl")
    assert b"__builtin__" in raw and b"_codecs" in raw  # protocol 2 spellings
    reads_correctly(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_opcodes_torch_does_not_read_are_refused_like_torch(tmp_path):
    raw = pickle.dumps(OrderedDict(), protocol=4)  # STACK_GLOBAL, FRAME, MEMOIZE ...
    path = torch_zip(tmp_path / "p4.pt", raw)
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), "weights_only")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


# ------------------------------------------------------- 3. values taken from the pickle


@pytest.mark.parametrize(
    ("tensor", "cls", "fragment"),
    [
        (_tensor(offset=_f(math.inf)), FormatError, "storage offset"),
        (_tensor(offset=_f(1.0)), FormatError, "storage offset"),
        (_tensor(offset=_long(2**63)), FormatError, "2**63"),
        (_tensor(offset=b"\x88"), FormatError, "storage offset"),  # True
        (_tensor(size_raw=_t(_long(2**63))), FormatError, "size"),
        (_tensor(size_raw=_t(b"\x88")), FormatError, "size"),
        (_tensor(size_raw=_t(_f(4.0))), FormatError, "size"),
        (_tensor(stride_raw=_t(_f(1.0))), FormatError, "stride"),
        (_tensor(size_raw=_i(4)), FormatError, "size"),
        (_tensor(size=(2**31 - 1, 2**31 - 1, 2**31 - 1), stride=(0, 0, 0)), FormatError, "2**63"),
        (_tensor(size=(5,)), FormatError, "reaches element"),
        (_tensor(grad=_i(1)), FormatError, "requires_grad"),
        (_tensor(storage="LongStorage", grad=b"\x88"), FormatError, "requires_grad"),
        (_tensor(hooks=b"]"), FormatError, "backward_hooks"),
        (_tensor(metadata=b"}" + _s("evil") + b"\x88s"), FormatError, "metadata"),
        (_tensor(pid=_pid(numel=0) + b"0" + _pid(numel=4)), FormatError, "declared"),
        (_tensor(pid=_pid(extra=b"N")), FormatError, "fields"),
        (
            _tensor(
                pid=_t(_s("storage"), _g("torch", "FloatStorage"), _i(0), _s("cpu"), _i(4)) + b"Q"
            ),
            UnsafePickleError,
            "storage",
        ),
        (_tensor(pid=_pid(numel=0)[:-2] + b"0" + b"\x88tQ"), UnsafePickleError, "storage"),
        (
            _tensor(
                pid=_t(_s("storage"), _g("torch", "FloatStorage"), _s("0"), _s("cpu"), _long(2**64))
                + b"Q"
            ),
            UnsafePickleError,
            "storage",
        ),
    ],
    ids=[
        "offset-inf",
        "offset-float",
        "offset-2**63",
        "offset-bool",
        "size-2**63",
        "size-bool",
        "size-float",
        "stride-float",
        "size-int",
        "numel-overflow",
        "view-past-storage",
        "requires_grad-int",
        "requires_grad-on-int-tensor",
        "hooks-list",
        "metadata-unknown",
        "storage-redeclared",
        "pid-6-fields-in-zip",
        "key-int",
        "numel-bool",
        "numel-2**64",
    ],
)
def test_rebuild_values_are_checked_for_type_and_range(tmp_path, tensor, cls, fragment):
    path = torch_zip(tmp_path / "v.pt", _state(w=tensor))
    raises_exactly(cls, lambda: paramscope.read_manifest(path), str(path), fragment)
    raises_exactly(cls, lambda: paramscope.load(path), str(path))


def test_inf_offset_is_one_line_and_exit_2_in_the_cli(cli, tmp_path):
    path = torch_zip(tmp_path / "inf.pt", _state(w=_tensor(offset=_f(math.inf))))
    for args in (["count", str(path)], ["inspect", str(path)]):
        one_line_exit_2(cli(*args), str(path), "storage offset")


# ------------------------------------------------------------------------- legacy files


def legacy_bytes(main: bytes, keys: bytes, data: bytes) -> bytes:
    magic = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
    proto = b"\x80\x02M\xe9\x03."
    info = b"\x80\x02}" + _s("little_endian") + b"\x88s."
    return magic + proto + info + main + keys + data


def legacy_tensor(key="0", numel=4, view=b"N") -> bytes:
    pid = _t(_s("storage"), _g("torch", "FloatStorage"), _s(key), _s("cpu"), _i(numel), view)
    pid += b"Q"
    return (
        _g("torch._utils", "_rebuild_tensor_v2")
        + _t(pid, _i(0), _t(_i(4)), _t(_i(1)), b"\x89", HOOKS)
        + b"R"
    )


KEYS_0 = b"\x80\x02]" + _s("0") + b"a."
DATA_0 = struct.pack("<q", 4) + DATA


def test_hand_built_legacy_file_matches_torch(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(legacy_bytes(_state(w=legacy_tensor()), KEYS_0, DATA_0))
    reads_correctly(path)


@pytest.mark.parametrize(
    ("main", "keys", "data", "fragment"),
    [
        (_state(w=legacy_tensor()), b"\x80\x02].", DATA_0, "uninitialised"),
        (_state(w=legacy_tensor()), b"\x80\x02](" + _s("0") + _s("9") + b"e.", DATA_0, "names no"),
        (_state(w=legacy_tensor()), KEYS_0, struct.pack("<q", 5) + DATA, "5 elements"),
        (_state(w=legacy_tensor()), KEYS_0, DATA_0[:-1], "ends after"),
        (_state(w=legacy_tensor(view=_t(_s("1"), _i(0), _i(2)))), KEYS_0, DATA_0, "view"),
        (_state(w=legacy_tensor()), b"\x80\x02" + _s("0") + b".", DATA_0, "not names"),
        (
            _state(w=legacy_tensor()),
            b"\x80\x02]" + _s("0") + _s("0") + b"\x86.",
            DATA_0,
            "not names",
        ),
    ],
    ids=[
        "key-missing",
        "key-extra",
        "numel-mismatch",
        "data-short",
        "view",
        "keys-str",
        "keys-tuple",
    ],
)
def test_legacy_storage_table_is_checked(tmp_path, main, keys, data, fragment):
    path = tmp_path / "bad.pt"
    path.write_bytes(legacy_bytes(main, keys, data))
    err = raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path))
    assert fragment in str(err)
    raises_exactly(FormatError, lambda: paramscope.load(path), str(path))


@pytest.fixture
def legacy_real(tmp_path) -> bytes:
    path = tmp_path / "real_legacy.pt"
    torch.save(
        {"w": torch.arange(100.0), "b": torch.ones(3)}, path, _use_new_zipfile_serialization=False
    )
    return path.read_bytes()


@pytest.mark.parametrize("cut", [10, 40, 300, -250, -1])
def test_truncated_legacy_file_is_one_error(tmp_path, legacy_real, cut):
    path = tmp_path / "cut.pt"
    path.write_bytes(legacy_real[:cut])
    ends = r"(pickle byte \d+ \(\w+\): |storage '\d+': expected \d+ bytes)"
    with pytest.raises(FormatError, match=ends) as info:
        paramscope.read_manifest(path)
    assert str(path) in str(info.value)
    with pytest.raises(FormatError, match=ends):
        paramscope.load(path)


@pytest.mark.parametrize("command", ["count", "inspect", "convert", "verify"])
def test_truncated_legacy_file_exits_2_with_one_line(cli, tmp_path, legacy_real, command):
    path = tmp_path / "cut.pt"
    path.write_bytes(legacy_real[:-250])  # inside the storage data: torch.load would raise
    args = {
        "convert": ["convert", str(path), str(tmp_path / "out.safetensors")],
        "verify": ["verify", "--values", str(path)],
    }.get(command, [command, str(path)])
    out = cli(*args)
    if command == "verify":  # verify reports problems in its report: not sound, exit 1
        assert out.code == 1 and not out.err, out.err
        (problem,) = paramscope.verify(path, values=True).problems
        assert str(path) in problem and "ends after" in problem
        assert f"problem: {problem}" in out.out, out.out
    else:
        one_line_exit_2(out, str(path), "ends after")


# ----------------------------------------------------------------- 2. zip members, byte order


def rewrite_zip(src: Path, dst: Path, change=lambda name, data: data, method=lambda n: 0) -> Path:
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            data = change(info.filename, zi.read(info.filename))
            if data is not None:
                zo.writestr(
                    zipfile.ZipInfo(info.filename), data, compress_type=method(info.filename)
                )
    return dst


@pytest.fixture
def sample(tmp_path) -> Path:
    path = tmp_path / "sample.pt"
    torch.save(
        {
            "w": torch.arange(4, dtype=torch.float32),
            "i": torch.arange(3, dtype=torch.int64),
            "h": torch.arange(5, dtype=torch.float16).view(5, 1),
            "b": torch.tensor([1, 2], dtype=torch.uint8),
        },
        path,
    )
    return path


def _to_big(name: str, data: bytes) -> bytes:
    if name.endswith("/byteorder"):
        return b"big"
    widths = {"0": "f4", "1": "i8", "2": "f2"}
    key = name.rsplit("/", 1)[-1]
    if "/data/" in name and key in widths:
        return np.frombuffer(data, "<" + widths[key]).astype(">" + widths[key]).tobytes()
    return data


def test_big_endian_archive_reads_the_values_torch_reads(tmp_path, sample):
    big = rewrite_zip(sample, tmp_path / "big.pt", _to_big)
    want = torch.load(big, weights_only=True)
    assert want["w"].tolist() == [0.0, 1.0, 2.0, 3.0]  # torch swaps
    m = paramscope.read_manifest(big)
    assert m["w"].location is None and m["i"].location is None
    assert m["b"].location is not None  # one byte per element: nothing to swap
    assert any("big-endian" in n for n in m.notes)
    reads_correctly(big)
    out = tmp_path / "big.safetensors"
    paramscope.convert(big, out)
    again = paramscope.load(out)
    for name, t in want.items():
        assert torch.equal(again[name], t), name


def test_unknown_byteorder_is_refused(cli, tmp_path, sample):
    bad = rewrite_zip(
        sample, tmp_path / "mid.pt", lambda n, d: b"middle" if n.endswith("/byteorder") else d
    )
    raises_exactly(FormatError, lambda: paramscope.read_manifest(bad), str(bad), "byteorder")
    raises_exactly(FormatError, lambda: paramscope.load(bad), str(bad))
    one_line_exit_2(cli("count", str(bad)), "byteorder")


@pytest.mark.parametrize("what", ["storages", "pickle", "all"])
def test_deflated_members_read_the_values_torch_reads(tmp_path, sample, what):
    pick = {
        "storages": lambda n: "/data/" in n,
        "pickle": lambda n: n.endswith("data.pkl"),
        "all": lambda n: True,
    }[what]
    path = rewrite_zip(
        sample, tmp_path / "deflate.pt", method=lambda n: zipfile.ZIP_DEFLATED if pick(n) else 0
    )
    m = paramscope.read_manifest(path)
    if what != "pickle":
        assert all(e.location is None for e in m.values())
        assert any("deflate" in n for n in m.notes)
    reads_correctly(path)  # load reads without mmap: torch's mmap path would hand out zlib bytes


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_compression_torch_cannot_read_is_refused(tmp_path, sample, method):
    path = rewrite_zip(sample, tmp_path / "bz.pt", method=lambda n: method if "/data/" in n else 0)
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), "compression")


def test_encrypted_member_is_refused(tmp_path, sample):
    raw = bytearray(sample.read_bytes())
    with zipfile.ZipFile(sample) as z:
        info = z.getinfo("sample/data/0")
    raw[info.header_offset + 6] |= 1  # the "encrypted" flag, in the local header ...
    pos = 0  # ... and in the member's central directory entry
    while True:
        pos = raw.find(b"PK\x01\x02", pos)
        name_len = struct.unpack("<H", raw[pos + 28 : pos + 30])[0]
        if raw[pos + 46 : pos + 46 + name_len] == b"sample/data/0":
            raw[pos + 8] |= 1
            break
        pos += 4
    path = tmp_path / "enc.pt"
    path.write_bytes(bytes(raw))
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), "encrypted")


@pytest.mark.parametrize(
    ("rename", "fragment"),
    [
        (lambda n: n.replace("sample/data/1", "sample/data/0"), "two members"),
        (lambda n: n.replace("sample/data/1", "SAMPLE/data/0"), "share a name"),
    ],
    ids=["twice", "case"],
)
def test_member_names_torch_would_read_otherwise_are_refused(tmp_path, sample, rename, fragment):
    path = tmp_path / "dup.pt"
    with zipfile.ZipFile(sample) as zi, zipfile.ZipFile(path, "w") as zo:
        for info in zi.infolist():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zipfile warns of the duplicate: the point
                zo.writestr(zipfile.ZipInfo(rename(info.filename)), zi.read(info.filename))
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), fragment)


def test_bytes_before_the_archive_are_refused(tmp_path, sample):
    path = tmp_path / "pre.pt"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 60 + sample.read_bytes())
    with pytest.raises(RuntimeError):
        torch.load(path, weights_only=True)  # torch's reader does not skip them
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), "before")


def test_first_member_decides_the_folder_like_torch(tmp_path, sample):
    path = tmp_path / "order.pt"
    with zipfile.ZipFile(sample) as zi, zipfile.ZipFile(path, "w") as zo:
        zo.writestr("other/readme", b"x")
        for info in zi.infolist():
            zo.writestr(info.filename, zi.read(info.filename))
    with pytest.raises(RuntimeError):
        torch.load(path, weights_only=True)
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), "'other/'")
    # all members in the first member's folder, but no data.pkl there
    lone = tmp_path / "lone.pt"
    with zipfile.ZipFile(lone, "w") as z:
        z.writestr("other/readme", b"x")
    raises_exactly(FormatError, lambda: _torch.read_torch_manifest(lone), "other/data.pkl")


@pytest.mark.parametrize(
    ("record", "value", "fragment"),
    [
        ("/version", None, "version"),
        ("/version", b"abc\n", "version"),
        ("/version", b"0\n", "version"),
        ("/.storage_alignment", b"x", "alignment"),
    ],
    ids=["no-version", "version-abc", "version-0", "alignment-x"],
)
def test_records_torch_refuses_leave_no_values(cli, tmp_path, sample, record, value, fragment):
    path = rewrite_zip(sample, tmp_path / "nov.pt", lambda n, d: value if n.endswith(record) else d)
    with pytest.raises((RuntimeError, ValueError)):
        torch.load(path, weights_only=True)
    m = paramscope.read_manifest(path)  # shapes are readable ...
    assert m["w"].shape == (4,)
    assert all(e.location is None for e in m.values())  # ... values are not
    raises_exactly(FormatError, lambda: paramscope.load(path), str(path), fragment)
    one_line_exit_2(cli("convert", str(path), str(tmp_path / "o.safetensors")), fragment)


@pytest.mark.filterwarnings("ignore:'torch.load' received a zip file")
def test_torchscript_archive_is_refused(tmp_path, sample):
    path = tmp_path / "ts.pt"
    with zipfile.ZipFile(sample) as zi, zipfile.ZipFile(path, "w") as zo:
        for info in zi.infolist():
            zo.writestr(info.filename, zi.read(info.filename))
        zo.writestr("sample/constants.pkl", pickle.dumps(()))
    with pytest.raises(RuntimeError, match="TorchScript"):
        torch.load(path, weights_only=True)
    raises_exactly(UnsafePickleError, lambda: paramscope.read_manifest(path), "TorchScript")


def test_lazy_conj_and_neg_bits_read_as_torch_reads_them(tmp_path):
    path = tmp_path / "lazy.pt"
    c = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64)
    other = torch.tensor([5 + 6j], dtype=torch.complex64)
    torch.save({"conj": c.conj(), "neg": other.conj().imag, "plain": c}, path)
    m = paramscope.read_manifest(path)
    assert m["conj"].location is None and m["neg"].location is None
    assert m["plain"].location is not None
    reads_correctly(path)
    assert paramscope.load(path)["conj"].tolist() == [1 - 2j, 3 + 1j]


def test_legacy_bytes_with_a_zip_appended_read_as_legacy(tmp_path, legacy_real, sample):
    path = tmp_path / "poly.pt"
    path.write_bytes(legacy_real + sample.read_bytes())
    assert zipfile.is_zipfile(path)  # Python's test says zip; torch's (first bytes) says legacy
    want = torch.load(path, weights_only=True)
    assert set(want) == {"w", "b"}
    m = paramscope.read_manifest(path)
    assert list(m) == ["w", "b"]
    reads_correctly(path)


def test_local_header_naming_another_member_is_refused(tmp_path, sample):
    raw = bytearray(sample.read_bytes())
    with zipfile.ZipFile(sample) as z:
        off = z.getinfo("sample/data/0").header_offset
    raw[off + 30 : off + 30 + len("sample/data/0")] = b"sample/data/9"
    path = tmp_path / "lh.pt"
    path.write_bytes(bytes(raw))
    raises_exactly(FormatError, lambda: paramscope.read_manifest(path), str(path), "local header")


# ----------------------------------------------------------------------------- 4. npz / npy


def _npy(header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    raw = header.encode("latin1")
    fmt = "<H" if version == (1, 0) else "<I"
    raw += b" " * (-(8 + struct.calcsize(fmt) + len(raw) + 1) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(raw)) + raw + data


HEAD = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"


def test_npy_with_a_zip_appended_is_an_npy(tmp_path):
    inner = io.BytesIO()
    np.savez(inner, other=np.arange(7, dtype=np.int64))
    path = tmp_path / "poly.npy"
    path.write_bytes(_npy(HEAD, struct.pack("<2f", 1.5, 2.5)) + inner.getvalue())
    assert zipfile.is_zipfile(path)
    assert np.load(path).tolist() == [1.5, 2.5]  # numpy decides by the first bytes
    m = paramscope.read_manifest(path)
    assert list(m) == ["poly"] and m["poly"].shape == (2,)
    pd = paramscope.load(path)
    assert pd["poly"].tolist() == [1.5, 2.5]


def test_npz_member_names_that_numpy_confuses_read_by_member(tmp_path):
    path = tmp_path / "names.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.npy", _npy(HEAD, struct.pack("<2f", 1.0, 2.0)))
        z.writestr("a.npy.npy", _npy(HEAD.replace("(2,)", "(3,)"), struct.pack("<3f", 7, 8, 9)))
    m = paramscope.read_manifest(path)
    assert m["a"].shape == (2,) and m["a.npy"].shape == (3,)
    pd = paramscope.load(path)
    assert pd["a"].tolist() == [1.0, 2.0]
    assert pd["a.npy"].tolist() == [7.0, 8.0, 9.0]


@pytest.mark.parametrize(
    ("header", "version", "fragment"),
    [
        (HEAD.replace("}", "'extra': 1}"), (1, 0), "exactly keys"),
        (HEAD.replace("False", "0"), (1, 0), "fortran_order"),
        (HEAD.replace("(2,)", "(True, 2)"), (1, 0), "shape"),
        (HEAD, (9, 0), "version"),
        (HEAD, (1, 1), "version"),
        (HEAD.replace("'fortran_order'", " " * 10_100 + "'fortran_order'"), (2, 0), "10000"),
    ],
    ids=["extra-key", "fortran-int", "shape-bool", "version-9", "version-1.1", "too-long"],
)
def test_npy_headers_numpy_refuses_are_refused(tmp_path, header, version, fragment):
    path = tmp_path / "h.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", _npy(header, b"\0" * 8, version))
    err = raises_exactly(FormatError, lambda: paramscope.read_manifest(path), "w.npy")
    assert fragment in str(err)


@pytest.mark.parametrize("version", [(2, 0), (3, 0)])
def test_npy_versions_2_and_3_read(tmp_path, version):
    path = tmp_path / "v.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", _npy(HEAD, struct.pack("<2f", 1.0, 2.0), version))
    assert paramscope.load(path)["w"].tolist() == [1.0, 2.0]


def test_npz_member_problems_are_format_errors(tmp_path):
    other = tmp_path / "other.npz"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("w.npy", _npy(HEAD, b"\0" * 8))
        z.writestr("notes.txt", b"hello")
    raises_exactly(FormatError, lambda: _numpy.read_npz_manifest(other), "notes.txt")
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", _npy(HEAD, b"\0" * 8))
    raw = bytearray(bomb.read_bytes())
    pos = raw.find(b"PK\x01\x02")
    raw[pos + 24 : pos + 28] = struct.pack("<I", 2**31)  # claimed size in the directory
    bomb.write_bytes(bytes(raw))
    raises_exactly(FormatError, lambda: paramscope.read_manifest(bomb), "w.npy", "deflate")



def test_a_deeply_nested_dict_key_is_refused_not_a_crash(tmp_path) -> None:
    """Hashing a tuple nested a million deep recurses in C without a check (a segfault): in
    a subprocess, so that a crash fails this test and not the whole run."""
    ops = bytearray(b"\x80\x02})")
    ops += b"\x85" * 1_000_000  # TUPLE1, a million times
    ops += b"K\x01s."  # the tuple as a key: SETITEM
    path = tmp_path / "deep.pt"
    path.write_bytes(bytes(ops))
    r = run_cli("count", path, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "as a dict key or set member" in r.stderr
