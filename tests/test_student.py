"""Students from a teacher (issue 21): fewer blocks, initialised from the teacher's blocks,
embeddings and head, as DistilBERT from BERT. Oracles: the teacher's own tensors (bitwise),
its own modules run block by block, transformers' models built from the student's config
(``num_parameters``, outputs), and ``sum(p.numel())``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import paramscope
from paramscope._errors import ArgumentError, ArgumentTypeError, MissingNameError, TargetError
from paramscope.building import zoo
from paramscope.merging._student import (
    build_student,
    save_student,
    student,
    student_with_report,
)

EVEN = [0, 2, 4, 6, 8, 10]


def _params(m: nn.Module) -> int:
    return sum({id(p): p.numel() for p in m.parameters()}.values())


def _same(a: nn.Module, b: nn.Module) -> None:
    """Bitwise equal state dicts, in copies (not the same storage)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
        assert sa[k].data_ptr() != sb[k].data_ptr(), k


@pytest.fixture(scope="module")
def bert() -> nn.Module:
    torch.manual_seed(0)
    return zoo.build("bert-base").eval()


def test_bert_base_every_other_layer_is_66_955_008_and_copies_the_blocks(bert) -> None:
    s = student(bert, layers=EVEN)
    block = _params(bert.encoder.layer[0])
    assert block == 7_087_872
    assert _params(s) == sum(p.numel() for p in s.parameters())
    assert _params(s) == zoo.REFERENCE_PARAMS["bert-base"] - 6 * block == 66_955_008
    assert type(s) is type(bert) and s.config.num_hidden_layers == 6
    assert len(s.encoder.layer) == 6
    for i, j in enumerate(EVEN):
        _same(s.encoder.layer[i], bert.encoder.layer[j])
    _same(s.embeddings, bert.embeddings)
    _same(s.pooler, bert.pooler)
    assert bert.config.num_hidden_layers == 12 and len(bert.encoder.layer) == 12  # unchanged
    assert student(bert, every=2).state_dict().keys() == s.state_dict().keys()


def test_bert_student_runs_the_teachers_blocks(bert) -> None:
    s = student(bert, every=2).eval()
    ids = torch.randint(0, 30522, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden, pooled = s(ids)
        x = bert.embeddings(ids)
        for j in EVEN:
            x = bert.encoder.layer[j](x)
        assert torch.equal(hidden, x)
        assert torch.equal(pooled, bert.pooler(x))


def test_distilbert_drop_matches_transformers_distilbert(bert) -> None:
    import transformers

    with torch.device("meta"):
        distil = transformers.DistilBertModel(transformers.DistilBertConfig())
    r = student_with_report(bert, layers=EVEN, drop="distilbert")
    assert r.params_student == _params(r.model) == distil.num_parameters() == 66_362_880
    assert r.drop == ["pooler", "token_type_embeddings"]
    names = list(r.model.state_dict())
    assert not [n for n in names if "pooler" in n or "token_type" in n]
    ids = torch.randint(0, 30522, (1, 5), generator=torch.Generator().manual_seed(2))
    r.model.eval()
    with torch.no_grad():
        hidden, pooled = r.model(ids)
        e = bert.embeddings  # DistilBERT's embeddings: word + position, then LayerNorm
        x = e.LayerNorm(e.word_embeddings(ids) + e.position_embeddings(torch.arange(5)))
        for j in EVEN:
            x = bert.encoder.layer[j](x)
    assert pooled is None and torch.equal(hidden, x)


def test_gpt2_small_zoo_config_matches_transformers() -> None:
    import transformers

    r = student_with_report("zoo:gpt2", every=2, meta=True)
    with torch.device("meta"):
        ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=6))
    assert r.params_student == ref.num_parameters() == 124_439_808 - 6 * 7_087_872
    assert r.config == {"n_layer": 6} and r.model.config.n_layer == 6
    assert r.model.lm_head.weight is r.model.transformer.wte.weight  # the tie stays a tie
    assert r.model.transformer.wte.weight.is_meta


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(2, 5),
    data=st.data(),
)
def test_any_selection_of_gpt2_blocks(n: int, data: st.DataObject) -> None:
    torch.manual_seed(n)
    teacher = zoo.build("gpt2", n_layer=n, n_embd=16, n_head=2, vocab_size=50, n_positions=8)
    keep = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
    s = student(teacher, layers=keep)
    fresh = zoo.build("gpt2", n_layer=len(keep), n_embd=16, n_head=2, vocab_size=50, n_positions=8)
    assert _params(s) == _params(fresh) == sum(p.numel() for p in fresh.parameters())
    assert s.config == fresh.config
    for i, j in enumerate(keep):
        _same(s.transformer.h[i], teacher.transformer.h[j])
    assert s.lm_head.weight is s.transformer.wte.weight
    ids = torch.tensor([[1, 2, 3]])
    s.eval(), teacher.eval()
    with torch.no_grad():
        x = teacher.transformer.drop(
            teacher.transformer.wte(ids) + teacher.transformer.wpe(torch.arange(3))
        )
        for j in keep:
            x = teacher.transformer.h[j](x)
        logits = teacher.lm_head(teacher.transformer.ln_f(x))
        assert torch.equal(s(ids), logits)


def test_transformers_llama_teacher() -> None:
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    teacher = transformers.LlamaForCausalLM(cfg).eval()
    s = student(teacher, layers=[1, 3])
    assert type(s) is type(teacher) and s.config.num_hidden_layers == 2
    assert teacher.config.num_hidden_layers == 4
    ref = transformers.LlamaForCausalLM(s.config).eval()  # the library's model of that config
    assert s.num_parameters() == ref.num_parameters()
    sd = teacher.state_dict()
    mapped = {}
    for k in ref.state_dict():
        if k.startswith("model.layers.0."):
            src = "model.layers.1." + k[len("model.layers.0.") :]
        elif k.startswith("model.layers.1."):
            src = "model.layers.3." + k[len("model.layers.1.") :]
        else:
            src = k
        mapped[k] = sd[src]
    ref.load_state_dict(mapped, strict=True)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(s(ids).logits, ref(ids).logits)
    assert [m.self_attn.layer_idx for m in s.model.layers] == [0, 1]


def test_plain_sequential_teacher_round_trips_through_paramscope_build(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(*[nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(5)])
    r = student_with_report(teacher, layers=[0, 2, 4])
    assert [type(m[0]) for m in r.model] == [nn.Linear] * 3 and len(r.model) == 3
    for i, j in enumerate([0, 2, 4]):
        _same(r.model[i], teacher[j])
    _, spec = save_student(r, tmp_path / "s.safetensors")
    assert json.loads(spec.read_text())["load"] == "s.safetensors"
    rebuilt = paramscope.build(spec)  # an ordinary build spec
    _same(rebuilt, r.model)
    x = torch.randn(2, 4)
    assert torch.equal(rebuilt(x), teacher[4](teacher[2](teacher[0](x))))


def test_saved_zoo_student_is_rebuilt_and_counted(tmp_path: Path) -> None:
    torch.manual_seed(3)
    teacher = zoo.build("gpt2", n_layer=4, n_embd=16, n_head=2, vocab_size=50, n_positions=8)
    r = student_with_report(teacher, every=3)
    r.teacher, r.from_target, r.args = (
        "zoo:gpt2",
        True,
        {"n_layer": 4, "n_embd": 16, "n_head": 2, "vocab_size": 50, "n_positions": 8},
    )
    w, spec = save_student(r, tmp_path / "gpt.safetensors", tmp_path / "sub" / "gpt.json")
    back = build_student(spec)
    assert back.config.n_layer == 2 and back.lm_head.weight is back.transformer.wte.weight
    _same(back, r.model)
    assert paramscope.count(w).params == _params(back) == r.params_student


def test_errors_are_one_line(bert) -> None:
    t = nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.Tanh()) for _ in range(3)])
    cases = [
        (ArgumentError, dict(layers=[0, 3]), "block 3 does not exist; the teacher has 3 blocks"),
        (ArgumentError, dict(layers=[2, 1]), "strictly increasing"),
        (ArgumentError, dict(layers=[1, 1]), "strictly increasing"),
        (ArgumentError, dict(layers=[-1]), "block -1 does not exist"),
        (ArgumentError, dict(layers=[]), "keep at least one block"),
        (ArgumentError, dict(), "exactly one of layers"),
        (ArgumentError, dict(layers=[0], every=2), "exactly one of layers"),
        (ArgumentError, dict(every=0), "every=0"),
        (ArgumentTypeError, dict(layers=[True]), "True is not an int"),
        (ArgumentTypeError, dict(layers="0,1"), "expected a list of block indices"),
        (ArgumentError, dict(every=1, width=0.5), "width=0.5 is not supported"),
        (MissingNameError, dict(every=1, drop="pooler"), "pooler"),
    ]
    for cls, kwargs, text in cases:
        with pytest.raises(cls) as info:
            student(t, **kwargs)
        assert text in str(info.value) and "\n" not in str(info.value), (kwargs, info.value)

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.ModuleList(nn.Sequential(nn.Linear(2, 2)) for _ in range(2))
            self.b = nn.ModuleList(nn.Sequential(nn.Linear(2, 2)) for _ in range(2))

    with pytest.raises(TargetError, match="2 block stacks"):
        student(Two(), every=1)
    with pytest.raises(TargetError, match="no stack of identical blocks"):
        student(nn.Linear(2, 2), every=1)
    with pytest.raises(ArgumentTypeError, match="found int"):
        student(3, every=1)  # type: ignore[arg-type]


def test_cli_student_bert_base_every_2(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = cli("student", "zoo:bert-base", "--every", "2", "-o", "student.safetensors", "--json")
    assert r.code == 0, r
    d = json.loads(r.out)
    assert d["params_student"] == 66_955_008 and d["layers"] == EVEN
    assert d["params_teacher"] == zoo.REFERENCE_PARAMS["bert-base"]
    assert paramscope.count("student.safetensors").params == 66_955_008
    spec = json.loads(Path("student.json").read_text())
    assert spec["student"]["teacher"] == "zoo:bert-base" and spec["load"] == "student.safetensors"
    back = build_student("student.json")
    assert _params(back) == 66_955_008 and back.config.num_hidden_layers == 6
    saved = paramscope.load("student.safetensors")
    for k, v in back.state_dict().items():
        assert torch.equal(v, saved[k]), k
    # DistilBERT-style, human output
    r = cli(
        "student",
        "zoo:bert-base",
        "--layers",
        "0,2,4,6,8,10",
        "--drop",
        "distilbert",
        "-o",
        "distil.safetensors",
    )
    assert r.code == 0, r
    assert "66,362,880" in r.out and "dropped  pooler, token_type_embeddings" in r.out
    assert _params(build_student("distil.json")) == 66_362_880


def test_cli_bad_input_is_one_line_exit_2(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args, needle in [
        (("--layers", "0,12"), "block 12 does not exist"),
        (("--layers", "a,b"), "expected comma-separated block indices"),
        ((), "exactly one of layers"),
        (("--every", "2", "--drop", "nope"), "nope"),
    ]:
        r = cli("student", "zoo:bert-base", *args, "-o", "s.safetensors")
        assert r.code == 2, (args, r)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, r.err)
    assert list(tmp_path.iterdir()) == []


def test_transformers_bert_teacher_with_distilbert_drop(tmp_path: Path) -> None:
    import transformers

    cfg = transformers.BertConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        vocab_size=100,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    teacher = transformers.BertModel(cfg).eval()
    r = student_with_report(teacher, every=2, drop="distilbert")
    s = r.model
    assert s.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    full = transformers.BertModel(s.config)  # the library's count for that config
    dropped = _params(teacher.pooler) + _params(teacher.embeddings.token_type_embeddings)
    assert r.params_student == full.num_parameters() - dropped
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        out = s(ids)
        e = teacher.embeddings
        x = e.LayerNorm(e.word_embeddings(ids) + e.position_embeddings(torch.arange(4)))
        for j in (0, 2):
            x = teacher.encoder.layer[j](x)
    assert out.pooler_output is None
    torch.testing.assert_close(out.last_hidden_state, x, rtol=0, atol=1e-6)
    with pytest.raises(TargetError, match="pass the teacher as a TARGET"):
        r.spec()


def test_a_teacher_without_config_is_copied_with_its_blocks_renumbered() -> None:
    class Block(nn.Module):
        def __init__(self, i: int) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.layer_idx = i

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.fc(x)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(2, 3)
            self.blocks = nn.ModuleList(Block(i) for i in range(4))
            self.head = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.inp(x)
            for b in self.blocks:
                x = b(x)
            return self.head(x)

    torch.manual_seed(0)
    teacher = Net()
    r = student_with_report(teacher, layers=[1, 2])
    s = r.model
    assert [b.layer_idx for b in s.blocks] == [0, 1]
    assert [b.layer_idx for b in teacher.blocks] == [0, 1, 2, 3]
    assert list(s.state_dict()) == [
        k for k in teacher.state_dict() if "blocks.2" not in k and "blocks.3" not in k
    ]
    _same(s.blocks[0], teacher.blocks[1])
    assert _params(s) == _params(teacher) - 2 * _params(teacher.blocks[0])
    x = torch.randn(2, 2)
    with torch.no_grad():
        want = teacher.head(teacher.blocks[2](teacher.blocks[1](teacher.inp(x))))
        assert torch.equal(s(x), want)
    with pytest.raises(TargetError, match="pass the teacher as a TARGET"):
        r.spec()


def test_cli_config_json_teacher_rebuilt_from_another_folder(
    cli, tmp_path: Path, monkeypatch
) -> None:
    import transformers

    cfg = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "max_position_embeddings": 16,
    }
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    r = cli("student", "cfg/config.json", "--layers", "1,3", "-o", "out/s.safetensors", "--json")
    assert r.code == 0, r
    d = json.loads(r.out)
    ref = transformers.BertModel(transformers.BertConfig(**{**cfg, "num_hidden_layers": 2}))
    assert d["params_student"] == ref.num_parameters()
    assert json.loads(Path("out/s.json").read_text())["student"]["teacher"] == "../cfg/config.json"
    monkeypatch.chdir(tmp_path / "cfg")
    back = build_student(tmp_path / "out" / "s.json")
    assert type(back) is type(ref) and back.config.num_hidden_layers == 2
    saved = paramscope.load(tmp_path / "out" / "s.safetensors")
    for k, v in back.state_dict().items():
        assert torch.equal(v, saved[k]), k
