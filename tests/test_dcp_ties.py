"""Ties through torch.distributed.checkpoint: paramscope's DCP loads with plain DCP, and
``count`` of DCP (and other) checkpoints that store a tie under every name.

The oracles are torch itself: ``sum(p.numel() for p in model.parameters())`` for counts, plain
``torch.distributed.checkpoint.load`` / ``save`` for the files.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file

import paramscope
from paramscope import DType, Entry, Manifest, ParamDict
from paramscope._errors import FormatError
from paramscope.counting import _count
from paramscope.io import _dcp

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

WTE, HEAD = "transformer.wte.weight", "lm_head.weight"
VOCAB, EMBD = 100, 32


def gpt2(seed: int):
    """A small real tied GPT-2 (transformers), on CPU, in eval mode."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=EMBD, n_head=2, vocab_size=VOCAB, n_positions=64
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    return model


def true_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # torch counts a tie once


def torch_dcp_save(state: dict[str, torch.Tensor], folder: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=folder, no_dist=True)
    return folder


def metadata_keys(folder: Path) -> list[str]:
    md = pickle.loads((folder / ".metadata").read_bytes())  # files these tests wrote: trusted
    return list(md.state_dict_metadata)


@pytest.fixture(scope="module")
def model():
    return gpt2(0)


@pytest.fixture(scope="module")
def torch_ckpt(model, tmp_path_factory) -> Path:
    """torch's own ``dcp.save(model.state_dict())`` of the tied GPT-2: no sidecar."""
    return torch_dcp_save(model.state_dict(), tmp_path_factory.mktemp("dcpt") / "ckpt")


@pytest.fixture(scope="module")
def ours(model, tmp_path_factory) -> Path:
    """``paramscope.save(..., format="dcp")`` of the same model."""
    folder = tmp_path_factory.mktemp("dcpp") / "ckpt"
    return paramscope.save(ParamDict.from_module(model), folder, format="dcp")


# --------------------------------------------------------------------------- writing ties


def test_paramscope_dcp_loads_with_plain_dcp_into_tied_model(model, ours):
    fresh = gpt2(1)
    assert not torch.equal(fresh.lm_head.weight, model.lm_head.weight)
    state = fresh.state_dict()
    dcp.load(state, checkpoint_id=ours, no_dist=True)  # plain torch, no paramscope reader
    for name, p in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], p), name
    assert fresh.lm_head.weight is fresh.transformer.wte.weight  # still one tensor
    x = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(fresh(x).logits, model(x).logits)
    # paramscope's own reading: the tie is one object and is counted once
    pd = paramscope.load(ours)
    assert pd[HEAD] is pd[WTE] and pd.ties() == [[WTE, HEAD]]
    c = paramscope.count(ours)
    assert c.params == true_params(model) and c.ties == [[WTE, HEAD]]
    assert not any("may be one tied tensor" in n for n in c.notes)  # the sidecar knows


def test_paramscope_dcp_stores_every_name_as_torch_dcp_does(model, ours, torch_ckpt):
    assert set(metadata_keys(ours)) >= set(metadata_keys(torch_ckpt)) >= {WTE, HEAD}
    md = _dcp.read_dcp_metadata(ours)
    assert md.state_dict_metadata[HEAD].size == md.state_dict_metadata[WTE].size
    side = json.loads((ours / _dcp.SIDECAR_NAME).read_text())
    assert side["version"] == 2 and side["aliases"] == {HEAD: WTE}


def write_v1(pd: ParamDict, folder: Path) -> Path:
    """The layout paramscope wrote before sidecar version 2: each tie stored once."""
    torch_dcp_save({n: pd[n] for n in pd.stored()}, folder)
    side = {
        "format": "paramscope-dcp",
        "version": 1,
        "entries": {n: pd.meta(n).to_json() for n in pd},
        "aliases": {n: pd.alias_of(n) for n in pd if pd.alias_of(n) is not None},
        "metadata": dict(pd.metadata),
    }
    (folder / _dcp.SIDECAR_NAME).write_text(json.dumps(side))
    return folder


def test_sidecar_versions_old_read_new_written_unknown_refused(model, tmp_path):
    pd = ParamDict.from_module(model)
    old = write_v1(pd, tmp_path / "v1")
    assert HEAD not in metadata_keys(old)
    back = _dcp.load_dcp(old)
    assert list(back) == list(pd) and back[HEAD] is back[WTE]
    assert torch.equal(back[WTE], model.transformer.wte.weight)
    assert paramscope.count(old).params == true_params(model)
    assert [n for n, _ in _dcp.iter_dcp_tensors(old, [HEAD])] == [HEAD]  # reads its target
    new = _dcp.save_dcp(pd, tmp_path / "v2")
    assert json.loads((new / _dcp.SIDECAR_NAME).read_text())["version"] == 2
    side = json.loads((old / _dcp.SIDECAR_NAME).read_text())
    side["version"] = 99
    (old / _dcp.SIDECAR_NAME).write_text(json.dumps(side))
    with pytest.raises(FormatError, match=r"paramscope\.json.*version 99"):
        _dcp.read_dcp_manifest(old)


def test_v2_alias_with_other_shape_is_refused(tmp_path):
    w = torch.randn(3, 4)
    folder = torch_dcp_save({"a": w, "b": torch.randn(4, 3)}, tmp_path / "c")
    side = {
        "format": "paramscope-dcp",
        "version": 2,
        "entries": {"a": {}, "b": {}},
        "aliases": {"b": "a"},
        "metadata": {},
    }
    (folder / _dcp.SIDECAR_NAME).write_text(json.dumps(side))
    with pytest.raises(FormatError, match=r"alias 'b' of 'a'.*\(3, 4\).*\(4, 3\)"):
        _dcp.read_dcp_manifest(folder)


# --------------------------------------------------------------------------- counting


def test_header_count_of_torch_dcp_notes_the_likely_tie(model, torch_ckpt):
    c = paramscope.count(torch_ckpt)
    assert c.params == true_params(model) + VOCAB * EMBD  # DCP stores the tie twice
    assert c.ties == []
    said = [n for n in c.notes if "may be one tied tensor" in n]
    assert said == [
        f"{WTE} and {HEAD} have the same shape and dtype and may be one tied tensor (DCP "
        "stores every name of a tie apart, so each name is counted here); count --values "
        "(values=True) checks by content"
    ]


def test_values_count_of_torch_dcp_finds_the_tie(model, torch_ckpt):
    c = paramscope.count(torch_ckpt, values=True)
    assert c.params == true_params(model)  # exact, against torch
    assert c.trainable == true_params(model)
    assert c.ties == [[WTE, HEAD]]
    assert c.entries == len(model.state_dict()) - 1
    # fresh LayerNorm weights (all ones) are equal but constant: not merged
    assert c.tree.children["transformer"].children["ln_f"].params == 2 * EMBD
    assert not any("may be one tied tensor" in n for n in c.notes)
    said = [n for n in c.notes if "found by content" in n]
    assert len(said) == 1 and f"{WTE} = {HEAD}" in said[0]
    assert "accidental equal copy would be merged too" in said[0]


def test_values_and_nonzero_compose(tmp_path):
    model = gpt2(2)
    with torch.no_grad():
        model.transformer.wte.weight[:10] = 0  # the tie has zeros
    state = model.state_dict()
    folder = torch_dcp_save(state, tmp_path / "c")
    both = paramscope.count(folder, values=True, nonzero=True)
    assert both.params == true_params(model) and both.ties == [[WTE, HEAD]]
    assert both.pruned[WTE] == {"params": VOCAB * EMBD, "nonzero": (VOCAB - 10) * EMBD}
    assert HEAD not in both.pruned  # the alias is not a second pruned tensor
    only_nz = paramscope.count(folder, nonzero=True)
    assert HEAD in only_nz.pruned and only_nz.ties == []
    assert {n: v for n, v in both.pruned.items()} == {
        n: v for n, v in only_nz.pruned.items() if n != HEAD
    }


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_values_finds_equal_copies_in_any_format(tmp_path, fmt):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 7, generator=g)
    state = {
        "emb.weight": w,
        "head.weight": w.clone(),  # an equal copy, not shared storage
        "fc.weight": torch.randn(5, 7, generator=g),
        "ln1.weight": torch.ones(7),
        "ln2.weight": torch.ones(7),  # equal but constant: an init value, not a tie
    }
    path = tmp_path / f"m.{fmt}"
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    true = sum(t.numel() for t in state.values()) - w.numel()
    assert paramscope.count(path).params == true + w.numel()  # headers cannot tell
    c = paramscope.count(path, values=True)
    assert c.params == true and c.ties == [["emb.weight", "head.weight"]]
    assert c.bytes == 4 * true


def test_values_on_in_memory_sources():
    w = torch.randn(3, 4)
    c = paramscope.count({"a": w, "b": w.clone(), "c": torch.randn(3, 4)}, values=True)
    assert c.params == 24 and c.ties == [["a", "b"]]
    model = gpt2(3)  # a module's tie is known from storage; nothing more is merged
    c = paramscope.count(model, values=True)
    assert c.params == true_params(model) and c.ties == [[WTE, HEAD]]
    m = Manifest([Entry("a", (3, 4), DType.F32), Entry("b", (3, 4), DType.F32)])
    c = paramscope.count(m, values=True)
    assert c.params == 24 and any("values not read" in n for n in c.notes)


def test_tie_candidates_rule_skips_per_layer_repeats(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {"tok_embeddings.weight": torch.randn(16, 8, generator=g)}
    for i in range(3):
        for part in ("wq", "wk", "wv", "wo"):
            state[f"layers.{i}.attention.{part}.weight"] = torch.randn(8, 8, generator=g)
        state[f"layers.{i}.attention.output.weight"] = torch.randn(16, 8, generator=g)
    state["norm.weight"] = torch.ones(8)
    state["output.weight"] = torch.randn(16, 8, generator=g)
    state["pos.weight"] = torch.randn(8, 8, generator=g)  # shares q/k/v's shape, no head name
    folder = torch_dcp_save(state, tmp_path / "c")
    m = paramscope.read_manifest(folder)
    assert _count.tie_candidates(m) == [["tok_embeddings.weight", "output.weight"]]
    notes = [n for n in paramscope.count(folder).notes if "may be one tied tensor" in n]
    assert len(notes) == 1 and notes[0].startswith(
        "tok_embeddings.weight and output.weight have the same shape and dtype"
    )
    # a content check answers it: these are different tensors
    c = paramscope.count(folder, values=True)
    assert c.ties == [] and c.params == sum(t.numel() for t in state.values())
    assert not any("may be one tied tensor" in n for n in c.notes)


def test_iter_dcp_tensors_reads_each_tensor_bitwise(torch_ckpt, model):
    state = model.state_dict()
    got = dict(_dcp.iter_dcp_tensors(torch_ckpt))
    assert list(got) == metadata_keys(torch_ckpt)
    for n, t in got.items():
        assert torch.equal(t, state[n]), n
    with pytest.raises(FormatError, match="'nope'"):
        list(_dcp.iter_dcp_tensors(torch_ckpt, ["nope"]))


# --------------------------------------------------------------------------- CLI


def test_cli_count_dcp_note_and_values(cli, model, torch_ckpt):
    r = cli("count", torch_ckpt)
    assert r.code == 0 and r.err == "", r
    assert f"{WTE} and {HEAD} have the same shape and dtype and may be one tied tensor" in (
        r.out.replace("\n", " ")
    )
    r = cli("count", torch_ckpt, "--values", "--json")
    assert r.code == 0 and r.err == "", r
    d = json.loads(r.out)
    assert d["params"] == true_params(model) and d["ties"] == [[WTE, HEAD]]
    r = cli("count", torch_ckpt, "--values", "--nonzero")
    assert r.code == 0 and r.err == "", r
    assert f"tied       {WTE} = {HEAD}" in r.out
    lines = [ln.split()[:2] for ln in r.out.splitlines()]
    assert ["params", f"{true_params(model):,}"] in lines
