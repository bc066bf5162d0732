"""load_into / match / ties / bind: reports against hand-made cases, ties kept, no copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import paramscope
from _helpers import SMALL_GPT2, small_gpt2
from paramscope import ParamDict, ParamscopeError, StrictLoadError
from paramscope.building import zoo
from paramscope.lifecycle import bind, find_ties, load_into, match, tie, untie
from paramscope.lifecycle._load import collapse


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.fixture
def gpt(tmp_path: Path) -> tuple[nn.Module, Path]:
    src = small_gpt2().eval()
    path = tmp_path / "gpt.safetensors"
    paramscope.save(ParamDict.from_module(src), path)
    return src, path


def meta_gpt() -> nn.Module:
    with torch.device("meta"):
        return small_gpt2(seed=None).eval()


def test_meta_model_loads_by_assignment_without_copy_and_keeps_ties(gpt) -> None:
    src, path = gpt
    dst = meta_gpt()
    r = load_into(dst, path)
    assert r.ok and r.assigned and r.still_meta == [] and not r.casts
    assert r.tied == [["transformer.wte.weight", "lm_head.weight"]]
    assert dst.lm_head.weight is dst.transformer.wte.weight
    assert isinstance(dst.lm_head.weight, nn.Parameter)
    x = torch.randint(0, SMALL_GPT2["vocab_size"], (2, 8))
    assert torch.equal(logits(src, x), logits(dst, x))
    # no copy: the parameters are the loaded (memory-mapped) tensors themselves
    pd = paramscope.load(path)
    again = meta_gpt()
    load_into(again, pd)
    for name, p in again.named_parameters():
        assert p.data_ptr() == pd[name].data_ptr(), name


def test_torch_assign_breaks_ties_we_do_not(gpt) -> None:
    _, path = gpt
    sd = paramscope.load(path).state_dict()
    theirs = meta_gpt()
    theirs.load_state_dict(sd, assign=True)
    assert theirs.lm_head.weight is not theirs.transformer.wte.weight  # PyTorch's behaviour
    ours = meta_gpt()
    load_into(ours, sd)
    assert ours.lm_head.weight is ours.transformer.wte.weight


def test_tie_survives_from_module_save_load_load_into(tmp_path: Path) -> None:
    model = nn.ModuleDict({"emb": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
    tie(model, "head.weight", "emb.weight")
    path = paramscope.save(ParamDict.from_module(model), tmp_path / "t.safetensors")
    pd = paramscope.load(path)
    assert pd["head.weight"] is pd["emb.weight"]
    with torch.device("meta"):
        fresh = nn.ModuleDict({"emb": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
    tie(fresh, "head.weight", "emb.weight")
    load_into(fresh, pd)
    assert fresh["head"].weight is fresh["emb"].weight
    assert torch.equal(fresh["emb"].weight, model["emb"].weight)


def test_gradient_of_a_tied_weight_is_the_sum_of_both_uses() -> None:
    torch.manual_seed(0)
    model = nn.ModuleDict({"emb": nn.Embedding(6, 3), "head": nn.Linear(3, 6, bias=False)})
    tie(model, "head.weight", "emb.weight")
    x = torch.tensor([1, 4])

    def loss(emb_w: torch.Tensor, head_w: torch.Tensor) -> torch.Tensor:
        return (nn.functional.embedding(x, emb_w) @ head_w.T).square().sum()

    loss(model["emb"].weight, model["head"].weight).backward()
    w = model["emb"].weight.detach()
    e = w.clone().requires_grad_(True)
    h = w.clone().requires_grad_(True)
    loss(e, h).backward()
    assert torch.allclose(model["emb"].weight.grad, e.grad + h.grad)


def test_report_missing_unexpected_mismatched_casts_and_suggestions() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    src = {
        "0.weight": torch.randn(3, 4, dtype=torch.float64),  # cast
        "0.bias": torch.randn(3),
        "2.weight": torch.randn(5, 3),  # mismatch
        "module.2.bias": torch.randn(2),  # unexpected, suggestion 2.bias
        "extra.thing": torch.randn(1),  # unexpected, no suggestion
    }
    before = model[2].weight.detach().clone()
    r = load_into(model, src)
    assert r.loaded == ["0.weight", "0.bias"]
    assert r.missing == ["2.bias"]
    assert r.unexpected == ["module.2.bias", "extra.thing"]
    assert r.mismatched == [{"key": "2.weight", "checkpoint_shape": [5, 3], "model_shape": [2, 3]}]
    assert r.casts == [{"key": "0.weight", "from": "float64", "to": "float32"}]
    assert r.suggestions == {"module.2.bias": ["2.bias"]}
    assert not r.assigned and not r.ok
    assert torch.equal(model[2].weight, before)  # the mismatch was skipped, not raised
    assert torch.allclose(model[0].weight, src["0.weight"].float())
    d = r.to_dict()
    assert set(d) >= {"loaded", "missing", "unexpected", "mismatched", "casts", "suggestions"}
    json.dumps(d)


def test_strict_refuses_and_changes_nothing() -> None:
    model = nn.Linear(4, 2)
    before = model.weight.detach().clone()
    with pytest.raises(StrictLoadError, match=r"missing \(1\)") as info:
        load_into(model, {"weight": torch.zeros(2, 4)}, strict=True)
    assert torch.equal(model.weight, before)
    assert info.value.report.missing == ["bias"]  # the report itself, for code to read
    assert isinstance(info.value, ValueError) and isinstance(info.value, ParamscopeError)


def test_remap_and_prefix_fix() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    sd = {"module.0.weight": torch.ones(2, 2), "module.0.bias": torch.zeros(2)}
    r = load_into(model, sd)
    assert r.missing and r.unexpected and not r.prefix_fix
    r = load_into(model, sd, fix_prefix=True)
    assert r.ok and r.prefix_fix == "module. → (none)"
    assert torch.equal(model[0].weight, torch.ones(2, 2))
    r = load_into(model, {"enc.0.weight": torch.full((2, 2), 3.0), "enc.0.bias": torch.ones(2)},
                  remap=[(r"^enc\.", "")])
    assert r.ok and model[0].weight[0, 0].item() == 3.0


def test_dtype_loads_as_bf16_by_assignment(gpt) -> None:
    _, path = gpt
    dst = meta_gpt()
    r = load_into(dst, path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in dst.parameters())
    assert {(c["from"], c["to"]) for c in r.casts} == {("float32", "bfloat16")}
    assert dst.lm_head.weight is dst.transformer.wte.weight


def test_sources_path_paramdict_dict_module_agree(gpt) -> None:
    src, path = gpt
    for source in (path, str(path), paramscope.load(path), src.state_dict(), src):
        dst = small_gpt2(seed=1)  # other values than src's
        r = load_into(dst, source)
        assert r.ok, (type(source), r.format())
        assert all(torch.equal(a, b) for a, b in zip(dst.parameters(), src.parameters(),
                                                      strict=True))


def test_match_changes_nothing_and_reads_headers_only(gpt) -> None:
    _, path = gpt
    dst = meta_gpt()
    r = match(dst, path)
    assert r.ok and r.dry_run and len(r.loaded) == len(dst.state_dict())
    assert all(p.is_meta for p in dst.parameters())
    mm = nn.Linear(3, 3)
    r = match(mm, path)
    assert r.missing == ["weight", "bias"] and len(r.unexpected) == len(dst.state_dict())


def test_collapse_runs() -> None:
    names = [f"layers.{i}.attn.q.weight" for i in range(32)] + ["norm.weight", "layers.40.x"]
    assert collapse(names) == ["layers.{0..31}.attn.q.weight", "norm.weight", "layers.40.x"]
    assert collapse(["a.1.b", "a.3.b", "a.4.b"]) == ["a.{1,3..4}.b"]


def test_find_tie_untie_on_meta_and_errors() -> None:
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    assert find_ties(m) == []
    tie(m, "1.weight", "0.weight")
    assert find_ties(m) == [["0.weight", "1.weight"]]
    untie(m, "1.weight")
    assert find_ties(m) == [] and m[1].weight.is_meta
    with pytest.raises(paramscope.ShapeMismatchError):
        tie(m, "1.bias", "0.weight")
    with pytest.raises(paramscope.MissingNameError, match="did you mean"):
        tie(m, "1.weigth", "0.weight")
    lin = nn.Linear(2, 2)
    shared = nn.Sequential(lin, lin)
    with pytest.raises(paramscope.InvalidNameError, match="same instance"):
        untie(shared, "1.weight")


def test_bind_runs_with_external_params_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    own = [p.detach().clone() for p in net.parameters()]
    ext = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    out = bind(net, ext)(torch.randn(5, 3))
    assert torch.equal(out, torch.zeros(5, 1))
    assert all(torch.equal(a, b) for a, b in zip(own, net.parameters(), strict=True))
    with pytest.raises(paramscope.MissingNameError, match="did you mean"):
        bind(net, {"0.weigth": torch.zeros(4, 3)})
    with pytest.raises(paramscope.ShapeMismatchError):
        bind(net, {"0.weight": torch.zeros(3, 3)})
    with pytest.raises(paramscope.MissingNameError):
        bind(net, {"0.weight": torch.zeros(4, 3)}, partial=False)


def test_bind_honours_ties() -> None:
    model = nn.ModuleDict({"emb": nn.Embedding(5, 3), "head": nn.Linear(3, 5, bias=False)})
    tie(model, "head.weight", "emb.weight")

    class Run(nn.Module):
        def __init__(self, m: nn.ModuleDict) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m["head"](self.m["emb"](x))

    run = Run(model)
    w = torch.randn(5, 3, requires_grad=True)
    out = bind(run, {"m.emb.weight": w}, partial=False)(torch.tensor([0, 2]))
    assert torch.allclose(out, (w[[0, 2]] @ w.T))
    out.sum().backward()
    ref = w.detach().clone().requires_grad_()  # oracle: the same function, no module
    (ref[[0, 2]] @ ref.T).sum().backward()
    assert w.grad is not None and torch.allclose(w.grad, ref.grad)


def test_hypernetwork_trains_end_to_end_through_bind() -> None:
    torch.manual_seed(0)
    target = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    shapes = {n: p.shape for n, p in target.named_parameters()}
    sizes = {n: p.numel() for n, p in target.named_parameters()}
    hyper = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, sum(sizes.values())))
    z = torch.randn(1, 4)
    x = torch.randn(64, 2)
    y = (x[:, :1] * 2 - x[:, 1:]).tanh()
    opt = torch.optim.Adam(hyper.parameters(), lr=1e-2)
    target_before = [p.detach().clone() for p in target.parameters()]
    losses = []
    for _ in range(150):
        flat = hyper(z)[0]
        params, i = {}, 0
        for n, k in sizes.items():
            params[n] = flat[i:i + k].view(shapes[n])
            i += k
        loss = (bind(target, params)(x) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert all(torch.equal(a, b) for a, b in zip(target_before, target.parameters(),
                                                  strict=True))
    assert all(p.grad is None for p in target.parameters())


def test_cli_match(cli, tmp_path: Path, golden, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    m = zoo.build("mlp")
    paramscope.save({("module." + k): v for k, v in m.state_dict().items()},
                    tmp_path / "ddp.safetensors")
    r = cli("match", "zoo:mlp", "ddp.safetensors")
    assert r.code == 1
    golden("match_mlp_ddp.txt", r.out)
    r = cli("match", "zoo:mlp", "ddp.safetensors", "--fix-prefix", "--json")
    d = json.loads(r.out)
    assert r.code == 0 and d["prefix_fix"] == "module. → (none)"
    assert d["ok"] is True and sorted(d["loaded"]) == sorted(m.state_dict())
    r = cli("match", "zoo:mlp", "ddp.safetensors", "--remap", r"^module\.=", "--json")
    d = json.loads(r.out)
    assert r.code == 0 and d["ok"] is True and sorted(d["loaded"]) == sorted(m.state_dict())
    r = cli("match", "ddp.safetensors", "ddp.safetensors")
    assert r.code == 2 and "needs a model TARGET" in r.err
