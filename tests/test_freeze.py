"""freeze / unfreeze / trainable_only: counts against torch, ties, patterns, BN, ParamDict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from paramscope import MissingNameError, ParamDict, ParamscopeError
from paramscope.lifecycle import (
    FreezeCounts,
    eval_frozen_bn,
    freeze,
    trainable_only,
    unfreeze,
)


class Net(nn.Module):
    """Embedding tied to the head, a conv stem with BatchNorm, an MLP encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.stem = nn.Sequential(nn.Conv1d(8, 8, 3, padding=1), nn.BatchNorm1d(8))
        self.encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
        self.norm = nn.BatchNorm1d(8, affine=False)
        self.head = nn.Linear(8, 20)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.emb(ids).transpose(1, 2)).mean(-1)
        return self.head(self.norm(self.encoder(x)))


def oracle(model: nn.Module) -> tuple[int, int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total - trainable, total


def check(counts: FreezeCounts, model: nn.Module) -> None:
    assert (counts.trainable, counts.frozen, counts.total) == oracle(model)
    assert counts.trainable_pct == pytest.approx(100 * counts.trainable / counts.total)


def flags(model: nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


# ------------------------------------------------------------------------------ counts
@pytest.mark.parametrize(
    "patterns",
    [
        (),
        ("encoder.*",),
        ("re:encoder\\.[0-9]+\\.bias",),
        ("*.bias", "stem.*"),
        (["emb.*", "head.*"],),
    ],
)
def test_freeze_counts_match_torch(patterns: tuple[str, ...]) -> None:
    model = Net()
    counts = freeze(model, *patterns)
    check(counts, model)
    assert counts.frozen > 0
    assert set(counts.to_dict()) == {"trainable", "frozen", "total", "trainable_pct"}


def test_freeze_all_and_unfreeze() -> None:
    model = Net()
    counts = freeze(model)
    assert counts.trainable == 0 and counts.trainable_pct == 0.0
    assert not any(flags(model).values())
    counts = unfreeze(model, "encoder.0.*")
    check(counts, model)
    assert [n for n, f in flags(model).items() if f] == ["encoder.0.weight", "encoder.0.bias"]
    check(unfreeze(model), model)
    assert all(flags(model).values())


def test_tied_parameter_counted_once_and_frozen_by_alias() -> None:
    model = Net()
    counts = freeze(model, "head.weight")  # the alias of emb.weight
    assert model.emb.weight.requires_grad is False
    assert counts.frozen == 20 * 8  # once, not twice
    check(counts, model)
    assert model.head.bias.requires_grad is True


def test_glob_crosses_dots_and_regex_is_full_match() -> None:
    model = Net()
    freeze(model, "stem*")
    assert not model.stem[1].weight.requires_grad and model.encoder[0].weight.requires_grad
    with pytest.raises(MissingNameError):
        freeze(model, "re:encoder\\.0")  # full match: a module path names no parameter
    freeze(model, "re:encoder\\.0\\..*")
    assert not model.encoder[0].bias.requires_grad and model.encoder[2].weight.requires_grad


# ------------------------------------------------------------------------------ errors
def test_unmatched_pattern_is_an_error_and_changes_nothing() -> None:
    model = Net()
    with pytest.raises(MissingNameError) as info:
        freeze(model, "encoder.*", "encoder.0.wieght")
    assert "no parameter matching 'encoder.0.wieght'; did you mean 'encoder.0.weight'" in str(
        info.value
    )
    assert isinstance(info.value, ParamscopeError)
    assert all(flags(model).values())  # the matching pattern was not applied either


def test_module_prefix_hint() -> None:
    with pytest.raises(MissingNameError, match=r"did you mean 'encoder\.\*'"):
        freeze(Net(), "encoder")


def test_bad_target_and_pattern() -> None:
    with pytest.raises(ParamscopeError, match=r"expected a torch\.nn\.Module or a ParamDict"):
        freeze({"w": torch.zeros(1)})  # type: ignore[arg-type]
    with pytest.raises(ParamscopeError, match="expected a glob"):
        freeze(Net(), 3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ context manager
def test_trainable_only_restores_flags_exactly() -> None:
    model = Net()
    model.stem[0].bias.requires_grad_(False)  # frozen before entering
    before = flags(model)
    with trainable_only(model, "encoder.*") as counts:
        check(counts, model)
        assert [n for n, f in flags(model).items() if f] == [
            "encoder.0.weight",
            "encoder.0.bias",
            "encoder.2.weight",
            "encoder.2.bias",
        ]
    assert flags(model) == before
    assert model.stem[0].bias.requires_grad is False


def test_trainable_only_restores_on_exception() -> None:
    model = Net()
    model.emb.weight.requires_grad_(False)
    before = flags(model)
    with pytest.raises(RuntimeError, match="inside"), trainable_only(model, "head.bias"):
        assert model.stem[0].weight.requires_grad is False
        raise RuntimeError("inside")
    assert flags(model) == before


def test_trainable_only_bad_pattern_changes_nothing() -> None:
    model = Net()
    with pytest.raises(MissingNameError), trainable_only(model, "nope.*"):
        pass  # pragma: no cover
    assert all(flags(model).values())


# ------------------------------------------------------------------------------ BatchNorm
def forward_changes_running_mean(model: Net) -> bool:
    before = model.stem[1].running_mean.clone()
    model(torch.randint(0, 20, (4, 5)))
    return not torch.equal(before, model.stem[1].running_mean)


def test_bn_eval_stops_running_stats() -> None:
    torch.manual_seed(0)
    model = Net().train()
    freeze(model, "stem.*")
    assert forward_changes_running_mean(model)  # requires_grad alone does not stop them

    model = Net().train()
    freeze(model, "stem.*", bn_eval=True)
    assert model.stem[1].training is False and model.encoder.training is True
    assert model.norm.training is True  # non-affine, name not matched
    assert not forward_changes_running_mean(model)

    model.train()  # flips them back ...
    assert forward_changes_running_mean(model)
    assert eval_frozen_bn(model) == ["stem.1"]  # ... and this re-applies
    assert not forward_changes_running_mean(model)


def test_bn_eval_non_affine_by_name_and_all() -> None:
    model = Net().train()
    freeze(model, "encoder.*", "norm*", bn_eval=True)
    assert model.norm.training is False and model.stem[1].training is True
    model = Net().train()
    freeze(model, bn_eval=True)
    assert not model.norm.training and not model.stem[1].training


def test_trainable_only_bn_eval_restored() -> None:
    model = Net().train()
    with trainable_only(model, "encoder.*", bn_eval=True):
        assert model.stem[1].training is False and model.norm.training is False
        assert not forward_changes_running_mean(model)
    assert model.stem[1].training is True and model.norm.training is True
    with trainable_only(model, "encoder.*", "norm", bn_eval=True):  # names a plain BN: trains
        assert model.stem[1].training is False and model.norm.training is True
    assert forward_changes_running_mean(model)


# ------------------------------------------------------------------------------ ParamDict
def test_paramdict_target() -> None:
    pd = ParamDict({"fc.weight": torch.zeros(3, 2, requires_grad=True), "fc.bias": torch.zeros(3)})
    pd.add("bn.running_mean", torch.zeros(3), role="buffer")
    pd.tie("head.weight", "fc.weight")
    counts = freeze(pd, "head.*")
    assert pd.meta("fc.weight").trainable is False and pd.meta("head.weight").trainable is False
    assert pd["fc.weight"].requires_grad is False
    assert (counts.trainable, counts.frozen, counts.total) == (3, 6, 9)
    with pytest.raises(MissingNameError):
        freeze(pd, "bn.*")  # buffers are not parameters
    with pytest.raises(ParamscopeError, match="bn_eval"):
        freeze(pd, bn_eval=True)
    with trainable_only(pd, "fc.weight") as inside:
        assert inside.trainable == 6 and pd.meta("fc.bias").trainable is False
    assert pd.meta("fc.bias").trainable is True and pd.meta("fc.weight").trainable is False
    assert pd["fc.weight"].requires_grad is False
    assert unfreeze(pd).trainable == 9
    assert pd["fc.weight"].requires_grad is True

