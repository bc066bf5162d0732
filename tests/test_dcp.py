"""torch.distributed.checkpoint folders: restricted metadata reading, save/load, across ranks."""

from __future__ import annotations

import importlib.util
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from torch.distributed.checkpoint.api import CheckpointException

from paramscope import DType, ParamDict, UnsafePickleError
from paramscope._enums import Format, Role, RoleSource
from paramscope._errors import FormatError
from paramscope.io import _dcp

SCRIPTS = Path(__file__).parent / "dcp_scripts"
RANKS_SCRIPT = SCRIPTS / "dcp_ranks.py"


def _ranks_module():
    spec = importlib.util.spec_from_file_location("dcp_ranks", RANKS_SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
        return False
    return torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    )


def sample() -> ParamDict:
    g = torch.Generator().manual_seed(0)
    pd = ParamDict()
    pd.add("wte.weight", torch.randn(6, 4, generator=g), tags=("embed",))
    pd.add("blocks.0.attn.weight", torch.randn(4, 4, generator=g).to(torch.bfloat16))
    pd.add("blocks.0.attn.bias", torch.randn(4, generator=g), trainable=False, extra={"k": [1]})
    pd.add("bn.running_mean", torch.randn(4, generator=g, dtype=torch.float64), role="buffer")
    pd.add("bn.num_batches_tracked", torch.tensor(2**40 + 3), role="buffer")
    pd.add("steps", torch.arange(-3, 5, dtype=torch.int64), role="buffer")
    pd.tie("lm_head.weight", "wte.weight")
    pd.metadata["run"] = "r1"
    return pd


# --------------------------------------------------------------------------- one process


def test_is_dcp_dir(tmp_path):
    assert not _dcp.is_dcp_dir(tmp_path)
    _dcp.save_dcp({"w": torch.zeros(2)}, tmp_path / "c")
    assert _dcp.is_dcp_dir(tmp_path / "c")
    assert not _dcp.is_dcp_dir(tmp_path / "c" / ".metadata")


def test_save_writes_dcp_layout_and_sidecar(tmp_path):
    _dcp.save_dcp(sample(), tmp_path / "c")
    names = sorted(os.listdir(tmp_path / "c"))
    assert names == [".metadata", "__0_0.distcp", "paramscope.json"]
    md = pickle.loads((tmp_path / "c" / ".metadata").read_bytes())  # our own file: trusted
    # every name of the tie has its own item, as DCP writes a tied state_dict
    assert list(md.state_dict_metadata) == list(sample())


def test_manifest_names_shapes_dtypes_roles(tmp_path):
    _dcp.save_dcp(sample(), tmp_path / "c")
    m = _dcp.read_dcp_manifest(tmp_path / "c")
    assert m.format is Format.DCP
    assert m.roles is RoleSource.EXACT
    assert list(m) == list(sample())
    assert m["wte.weight"].shape == (6, 4) and m["wte.weight"].dtype is DType.F32
    assert m["blocks.0.attn.weight"].dtype is DType.BF16
    assert m["bn.running_mean"].dtype is DType.F64
    assert m["bn.num_batches_tracked"].shape == () and m["steps"].dtype is DType.I64
    assert m["lm_head.weight"].tie == "wte.weight"
    assert m["wte.weight"].tags == ("embed",)
    assert m["blocks.0.attn.bias"].trainable is False
    assert m["blocks.0.attn.bias"].extra == {"k": [1]}
    assert m["bn.running_mean"].role is Role.BUFFER
    assert m.metadata == {"run": "r1"}
    assert any(f.endswith("__0_0.distcp") for f in m.files)


def test_round_trip_bitwise_with_ties_and_metadata(tmp_path):
    pd = sample()
    _dcp.save_dcp(pd, tmp_path / "c")
    out = _dcp.load_dcp(tmp_path / "c")
    assert list(out) == list(pd)
    for n in pd:
        assert bitwise_equal(out[n], pd[n]), n
        assert out.meta(n) == pd.meta(n), n
    assert out.ties() == [["wte.weight", "lm_head.weight"]]
    assert out["lm_head.weight"] is out["wte.weight"]
    assert out.metadata == {"run": "r1"}


def test_load_select(tmp_path):
    pd = sample()
    _dcp.save_dcp(pd, tmp_path / "c")
    out = _dcp.load_dcp(tmp_path / "c", select="blocks.*")
    assert list(out) == ["blocks.0.attn.weight", "blocks.0.attn.bias"]
    assert bitwise_equal(out["blocks.0.attn.weight"], pd["blocks.0.attn.weight"])
    alias_only = _dcp.load_dcp(tmp_path / "c", select="lm_head.*")
    assert list(alias_only) == ["lm_head.weight"]
    assert bitwise_equal(alias_only["lm_head.weight"], pd["wte.weight"])


def test_plain_dict_with_shared_tensor_is_a_tie(tmp_path):
    w = torch.randn(3, 3)
    _dcp.save_dcp({"a": w, "b": w, "c": torch.ones(2)}, tmp_path / "c")
    out = _dcp.load_dcp(tmp_path / "c")
    assert out["a"] is out["b"] and bitwise_equal(out["a"], w)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_foreign_checkpoint_without_sidecar(tmp_path):
    state = {
        "fc.weight": torch.randn(3, 2),
        "bn.running_var": torch.rand(3),
        "ids": torch.arange(4),
        "step": 7,
        "opt": {"lr": 0.1},
    }
    dcp.save(state, checkpoint_id=tmp_path / "c", no_dist=True)
    m = _dcp.read_dcp_manifest(tmp_path / "c")
    assert m.roles is RoleSource.INFERRED
    assert list(m) == ["fc.weight", "bn.running_var", "ids"]
    assert m["bn.running_var"].role is Role.BUFFER and m["ids"].role is Role.BUFFER
    assert m["fc.weight"].role is Role.PARAM
    assert sorted(m.notes) == [
        "skipped 'opt.lr': not a tensor (BytesStorageMetadata)",
        "skipped 'step': not a tensor (BytesStorageMetadata)",
    ]
    out = _dcp.load_dcp(tmp_path / "c")
    assert bitwise_equal(out["fc.weight"], state["fc.weight"])
    assert bitwise_equal(out["ids"], state["ids"])


def test_not_a_dcp_folder(tmp_path):
    with pytest.raises(FormatError, match=r"\.metadata"):
        _dcp.read_dcp_manifest(tmp_path)


def test_sidecar_for_other_data_is_refused(tmp_path):
    _dcp.save_dcp({"a": torch.zeros(1)}, tmp_path / "c")
    (tmp_path / "c" / "paramscope.json").write_text(
        '{"format": "paramscope-dcp", "version": 1, "entries": {"zzz": {}}, "aliases": {}}'
    )
    with pytest.raises(FormatError, match="zzz"):
        _dcp.read_dcp_manifest(tmp_path / "c")


def test_truncated_chunk_file_is_format_error(tmp_path):
    _dcp.save_dcp({"w": torch.randn(8, 8)}, tmp_path / "c")
    chunk = tmp_path / "c" / "__0_0.distcp"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(FormatError, match="DCP load failed"):
        _dcp.load_dcp(tmp_path / "c")


def test_garbage_metadata_is_format_error(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".metadata").write_bytes(pickle.dumps({"not": "metadata"}))
    with pytest.raises(FormatError, match="Metadata"):
        _dcp.read_dcp_manifest(tmp_path / "c")


# --------------------------------------------------------------------------- unsafe pickles


class OpenMarker:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class SystemMarker:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_payload(folder: Path, payload: object, nested: bool) -> None:
    """A DCP folder whose ``.metadata`` carries ``payload`` (inside a real Metadata if nested)."""
    _dcp.save_dcp({"w": torch.randn(2, 2)}, folder)
    meta = folder / ".metadata"
    if nested:
        md = pickle.loads(meta.read_bytes())  # our own file: trusted
        md.planner_data["evil"] = payload
        meta.write_bytes(pickle.dumps(md))
    else:
        meta.write_bytes(pickle.dumps(payload))


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize(("cls", "global_name"), [(OpenMarker, "open"), (SystemMarker, "system")])
def test_malicious_metadata_refused_unrun(tmp_path, cls, global_name, nested):
    marker = tmp_path / "pwned"
    write_payload(tmp_path / "c", cls(str(marker)), nested)
    with pytest.raises(UnsafePickleError, match=rf"\w+\.{global_name}\b"):
        _dcp.read_dcp_manifest(tmp_path / "c")
    with pytest.raises(UnsafePickleError, match=global_name):
        _dcp.load_dcp(tmp_path / "c")
    with pytest.raises(UnsafePickleError):
        _dcp.read_dcp_metadata(tmp_path / "c" / ".metadata")
    assert not marker.exists()


@pytest.mark.parametrize("cls", [OpenMarker, SystemMarker])
def test_payloads_are_live(tmp_path, cls):
    """The payloads above do create the marker when unpickled plainly (as DCP would)."""
    marker = tmp_path / "pwned"
    write_payload(tmp_path / "c", cls(str(marker)), nested=True)
    with open(tmp_path / "c" / ".metadata", "rb") as f:
        evil = pickle.load(f).planner_data["evil"]
    if hasattr(evil, "close"):  # the file object open() returned
        evil.close()
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_safe_reader_refuses_before_dcp_load(tmp_path):
    marker = tmp_path / "pwned"
    write_payload(tmp_path / "c", OpenMarker(str(marker)), nested=True)
    state = {"w": torch.empty(2, 2)}
    # DCP wraps the reader's error in its CheckpointException (a BaseException)
    with pytest.raises(CheckpointException, match=r"refused: the DCP metadata asks for \w+\.open"):
        dcp.load(state, storage_reader=_dcp.SafeFileSystemReader(tmp_path / "c"), no_dist=True)
    assert not marker.exists()


def test_allowlist_is_exactly_dcp_metadata():
    modules = {m for m, _ in _dcp.ALLOWED_GLOBALS}
    assert modules == {
        "torch.distributed.checkpoint.metadata",
        "torch.distributed.checkpoint.filesystem",
        "torch",
        "torch.serialization",
        "pathlib",
        "collections",
        "builtins",
    }
    torch_names = {n for m, n in _dcp.ALLOWED_GLOBALS if m == "torch"}
    assert all(n == "Size" or isinstance(getattr(torch, n), torch.dtype) for n in torch_names)
    assert {n for m, n in _dcp.ALLOWED_GLOBALS if m == "builtins"} <= {
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
    }


# --------------------------------------------------------------------------- across ranks


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(nproc: int, *args: str) -> None:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    said = []
    for _ in range(2):  # gloo on a loaded 2-core machine can abort a rank: one retry
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            str(RANKS_SCRIPT),
            *args,
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90, check=False)
        if proc.returncode == 0:
            return
        said.append(f"{cmd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    raise AssertionError("\n\n".join(said))  # failed twice: a real failure


@pytest.fixture(scope="module")
def two_rank_ckpt(tmp_path_factory) -> Path:
    ckpt = tmp_path_factory.mktemp("dcp2") / "ckpt"
    run_ranks(2, "save", str(ckpt))
    return ckpt


@pytest.fixture(scope="module")
def originals() -> dict[str, torch.Tensor]:
    return _ranks_module().full_tensors()


def test_two_rank_save_is_row_sharded(two_rank_ckpt, originals):
    md = _dcp.read_dcp_metadata(two_rank_ckpt)
    for name, t in originals.items():
        item = md.state_dict_metadata[name]
        rows = t.shape[0]
        first = (rows + 1) // 2
        assert [tuple(c.offsets) for c in item.chunks] == [
            (0,) * t.dim(),
            (first,) + (0,) * (t.dim() - 1),
        ], name
        assert [c.sizes[0] for c in item.chunks] == [first, rows - first], name
    m = _dcp.read_dcp_manifest(two_rank_ckpt)
    assert {n: (e.shape, e.dtype) for n, e in m.items()} == {
        n: (tuple(t.shape), DType.from_torch(t.dtype)) for n, t in originals.items()
    }
    assert sorted(Path(f).name for f in m.files) == [".metadata", "__0_0.distcp", "__1_0.distcp"]


def test_two_rank_save_loads_in_one_process(two_rank_ckpt, originals):
    pd = _dcp.load_dcp(two_rank_ckpt)
    assert list(pd) == list(originals)
    for name, t in originals.items():
        assert bitwise_equal(pd[name], t), name
    part = _dcp.load_dcp(two_rank_ckpt, select="layers.*")
    assert list(part) == ["layers.0.proj.weight", "layers.0.proj.bias"]
    assert bitwise_equal(part["layers.0.proj.bias"], originals["layers.0.proj.bias"])


def test_two_rank_save_loads_on_three_ranks(two_rank_ckpt, originals, tmp_path):
    out = tmp_path / "gathered.safetensors"
    run_ranks(3, "load", str(two_rank_ckpt), str(out))
    gathered = load_file(out)
    assert sorted(gathered) == sorted(originals)
    for name, t in originals.items():
        assert bitwise_equal(gathered[name], t), name


def test_two_rank_save_streams_tensor_by_tensor_and_counts_by_content(two_rank_ckpt, originals):
    got = list(_dcp.iter_dcp_tensors(two_rank_ckpt))
    assert [n for n, _ in got] == list(originals)
    for name, t in got:
        assert bitwise_equal(t, originals[name]), name  # chunks of both ranks stitched
    from paramscope import count

    c = count(two_rank_ckpt, values=True, nonzero=True)
    assert c.params == count(two_rank_ckpt).params  # nothing there is an equal copy
    assert c.ties == []
