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
        (ArgumentError, dict(every=1, width=0.5), "needs a teacher with a config"),
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


# ------------------------------------------------------------------ narrower students (width)
def _first(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The oracle of "first k" selection: the teacher tensor's leading block of that shape."""
    return t[tuple(slice(0, n) for n in shape)]


def _bert_cfg(**kw):
    import transformers

    base = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        vocab_size=100,
        max_position_embeddings=16,
    )
    return transformers.BertConfig(**{**base, **kw})


def test_zoo_bert_base_narrowed_counts_like_transformers_and_slices_consistently(bert) -> None:
    import dataclasses

    import transformers

    widths = {"hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 6}
    r = student_with_report(bert, every=2, width=widths)
    s = r.model
    assert r.width == widths and r.select == "first"
    assert s.config.hidden_size == 384 and s.config.num_hidden_layers == 6
    with torch.device("meta"):
        ref = transformers.BertModel(transformers.BertConfig(**dataclasses.asdict(s.config)))
    assert r.params_student == _params(s) == sum(p.numel() for p in ref.parameters())
    assert list(s.state_dict()) == list(
        k for k in ref.state_dict() if k in s.state_dict()
    )  # the same architecture, by name
    teacher = bert.state_dict()
    for k, v in s.state_dict().items():
        i = k.split(".")[2] if k.startswith("encoder.layer.") else None
        src = k if i is None else k.replace(f"encoder.layer.{i}.", f"encoder.layer.{2 * int(i)}.")
        assert torch.equal(v, _first(teacher[src], v.shape)), k
    b, t = s.encoder.layer[1], bert.encoder.layer[2]  # spelled out for the main tensors
    assert torch.equal(b.attention.self.query.weight, t.attention.self.query.weight[:384, :384])
    assert torch.equal(b.intermediate.dense.weight, t.intermediate.dense.weight[:1536, :384])
    assert torch.equal(b.output.dense.weight, t.output.dense.weight[:384, :1536])
    assert torch.equal(
        s.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight[:, :384]
    )
    ids = torch.randint(0, 30522, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        hidden, _pooled = s.eval()(ids)
    assert hidden.shape == (2, 7, 384) and torch.isfinite(hidden).all()
    assert "width    hidden_size=384" in r.to_text() and "Xu et al." in r.to_text()
    # the ratio form means the same sizes
    assert student_with_report(bert, every=2, width=0.5, meta=False).width == widths


def test_narrower_mlp_is_the_teacher_with_those_units_switched_off() -> None:
    """Consistency, functionally: keeping the first k intermediate units of every block is
    the teacher with the other units' weights zeroed (GELU(0) = 0 adds nothing)."""
    import transformers

    torch.manual_seed(5)
    teacher = transformers.BertModel(_bert_cfg(hidden_dropout_prob=0.0)).eval()
    s = student(teacher, every=1, width={"intermediate_size": 24})
    assert s.config.intermediate_size == 24 and s.config.hidden_size == 32
    masked = transformers.BertModel(teacher.config).eval()
    masked.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for layer in masked.encoder.layer:
            layer.intermediate.dense.weight[24:] = 0
            layer.intermediate.dense.bias[24:] = 0
        ids = torch.tensor([[3, 9, 27, 81, 5]])
        torch.testing.assert_close(
            s(ids).last_hidden_state, masked(ids).last_hidden_state, rtol=1e-5, atol=1e-5
        )
        assert not torch.allclose(
            teacher(ids).last_hidden_state, masked(ids).last_hidden_state, atol=1e-3
        )  # the masked units mattered: the test can fail


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_transformers_students_count_like_the_library_and_run(kind: str) -> None:
    import transformers

    torch.manual_seed(6)
    if kind == "bert":
        teacher = transformers.BertModel(_bert_cfg())
    elif kind == "gpt2":
        teacher = transformers.GPT2Model(
            transformers.GPT2Config(n_embd=32, n_head=4, n_layer=4, vocab_size=100, n_positions=16)
        )
    else:
        teacher = transformers.LlamaForCausalLM(
            transformers.LlamaConfig(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=100,
                max_position_embeddings=16,
            )
        )
    teacher.eval()
    r = student_with_report(teacher, layers=[1, 3], width=0.5)
    s = r.model
    ref = type(teacher)(s.config)  # the library's model of the student's config
    assert type(s) is type(teacher)
    assert r.params_student == _params(s) == sum(p.numel() for p in ref.parameters())
    assert {k: v.shape for k, v in s.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert s.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    hidden = s.config.hidden_size
    assert hidden == 16 and s.config.num_attention_heads == 2
    assert hidden // s.config.num_attention_heads == 8  # the head width is kept
    sd = teacher.state_dict()
    for k, v in s.state_dict().items():
        for stack in ("encoder.layer.", "h.", "model.layers."):
            if k.startswith(stack):
                i, rest = k[len(stack) :].split(".", 1)
                k = f"{stack}{[1, 3][int(i)]}.{rest}"
        if ".c_attn." in k:
            continue  # fused: chunk-wise, checked in the GPT-2 test below
        assert torch.equal(v, _first(sd[k], v.shape)), k
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        out = s(ids)
    first = out[0] if isinstance(out, tuple) else out.to_tuple()[0]
    assert torch.isfinite(first).all()
    if kind == "llama":
        assert s.config.num_key_value_heads == 1
        assert s.model.layers[0].self_attn.k_proj.weight.shape == (8, 16)


def test_gpt2_fused_qkv_is_sliced_chunk_by_chunk() -> None:
    import transformers

    torch.manual_seed(7)
    for teacher in (
        transformers.GPT2Model(
            transformers.GPT2Config(n_embd=32, n_head=4, n_layer=2, vocab_size=50, n_positions=8)
        ),
        zoo.build("gpt2", n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=8),
    ):
        s = student(teacher, every=1, width={"n_embd": 16, "n_head": 2})
        blocks = s.h if hasattr(s, "h") else s.transformer.h
        t_blocks = teacher.h if hasattr(teacher, "h") else teacher.transformer.h
        d, D = 16, 32
        for b, t in zip(blocks, t_blocks, strict=True):
            w, tw = b.attn.c_attn.weight, t.attn.c_attn.weight  # Conv1D: (in, out)
            assert w.shape == (d, 3 * d)
            for part in range(3):  # q, k and v separately
                assert torch.equal(w[:, part * d : (part + 1) * d], tw[:d, part * D : part * D + d])
                assert torch.equal(
                    b.attn.c_attn.bias[part * d : (part + 1) * d],
                    t.attn.c_attn.bias[part * D : part * D + d],
                )
            assert not torch.equal(w, tw[:d, : 3 * d])  # not the first 3d' of the fused axis
            assert torch.equal(b.attn.c_proj.weight, t.attn.c_proj.weight[:d, :d])
            assert torch.equal(b.mlp.c_fc.weight, t.mlp.c_fc.weight[:d, : 4 * d])
        with torch.no_grad():
            s.eval()(torch.tensor([[1, 2, 3]]))


def test_full_width_is_the_same_student_as_no_width(bert) -> None:
    base = student(bert, layers=[0, 5, 11])
    for width in (1.0, 1, {"hidden_size": 768, "num_attention_heads": 12}):
        r = student_with_report(bert, layers=[0, 5, 11], width=width)
        assert r.width == {} and r.config == {"num_hidden_layers": 3}
        _same(r.model, base)


def test_width_errors_are_one_line(bert) -> None:
    import transformers

    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=50,
        )
    )
    gpt = zoo.build(
        "gpt2", n_layer=2, n_embd=16, n_head=2, n_inner=48, vocab_size=50, n_positions=8
    )
    plain = nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.Tanh()) for _ in range(3)])
    cases = [
        (bert, {"hiden_size": 384}, "unknown key 'hiden_size'"),
        (bert, {"vocab_size": 100}, "'vocab_size' is not a width"),
        (bert, {"hidden_size": 1024}, "larger than the teacher's 768"),
        (bert, {"hidden_size": 384}, "makes heads of 32, the teacher's are 64"),
        (bert, {"hidden_size": 400, "num_attention_heads": 7}, "does not divide"),
        (bert, {"hidden_size": 0}, "expected an int >= 1"),
        (bert, 0.3, "is not a whole number"),
        (bert, 1.5, "expected a ratio in (0, 1]"),
        (bert, "half", "expected a ratio in (0, 1]"),
        (llama, {"num_attention_heads": 3}, "num_key_value_heads=2 does not divide"),
        (gpt, {"n_embd": 8, "n_head": 1, "n_inner": 24}, "is both"),  # 48 -> 24: c_fc or q|k|v
        (plain, 0.5, "paramscope.shrink"),
    ]
    for teacher, width, text in cases:
        with pytest.raises(ArgumentError) as info:
            student(teacher, every=1, width=width)
        msg = str(info.value)
        assert text in msg and "\n" not in msg, (width, msg)
    assert bert.config.hidden_size == 768 and bert.encoder.layer[0].output.dense.weight.shape == (
        768,
        3072,
    )


def test_narrow_student_spec_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(8)
    teacher = zoo.build("llama-2-7b", **_LLAMA_SMALL)
    r = student_with_report(
        teacher,
        every=2,
        width={"hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 2},
    )
    r.teacher, r.from_target, r.args = "zoo:llama-2-7b", True, dict(_LLAMA_SMALL)
    w, spec = save_student(r, tmp_path / "s.safetensors")
    recipe = json.loads(spec.read_text())["student"]
    assert recipe["width"] == r.width and recipe["select"] == "first"
    back = build_student(spec)
    assert back.config == r.model.config and back.config.hidden_size == 16
    _same(back, r.model)
    assert paramscope.count(w).params == _params(back) == r.params_student


_LLAMA_SMALL = dict(
    vocab_size=50,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=16,
)


def test_cli_student_width(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [f"--arg={k}={v}" for k, v in _LLAMA_SMALL.items()]
    r = cli(
        "student",
        "zoo:llama-2-7b",
        *args,
        "--every",
        "2",
        "--width",
        "hidden_size=16,intermediate_size=24,num_attention_heads=2,num_key_value_heads=2",
        "-o",
        "s.safetensors",
        "--json",
    )
    assert r.code == 0, r
    d = json.loads(r.out)
    want = {
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    }
    assert d["width"] == want and d["select"] == "first"
    spec = json.loads(Path("s.json").read_text())
    assert spec["student"]["width"] == want
    back = build_student("s.json")
    saved = paramscope.load("s.safetensors")
    assert back.config.hidden_size == 16 and back.config.num_hidden_layers == 2
    assert _params(back) == d["params_student"] == paramscope.count("s.safetensors").params
    for k, v in back.state_dict().items():
        assert torch.equal(v, saved[k]), k
    r = cli(
        "student",
        "zoo:bert-base",
        "--every",
        "3",
        "--width",
        "0.5",
        "--select",
        "l1",
        "-o",
        "b.safetensors",
    )
    assert r.code == 0, r
    assert json.loads(Path("b.json").read_text())["student"]["select"] == "l1"
    assert "width    hidden_size=384, intermediate_size=1536, num_attention_heads=6" in r.out
    assert build_student("b.json").config.hidden_size == 384


def test_cli_bad_width_is_one_line_exit_2(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for width, needle in [
        ("hidden_size=abc", "expected"),
        ("hidden_size", "expected"),
        ("2", "expected a ratio in (0, 1]"),
        ("hidden_size=2048", "larger than the teacher's 768"),
        ("nope=3", "unknown key 'nope'"),
        ("0.3", "not a whole number"),
        ("0.5 --select l3", "select='l3'"),
    ]:
        w, *rest = width.split()
        r = cli(
            "student", "zoo:bert-base", "--every", "2", "--width", w, *rest, "-o", "s.safetensors"
        )
        assert r.code == 2, (width, r)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (width, r.err)
    assert list(tmp_path.iterdir()) == []


def test_select_l1_keeps_each_blocks_strongest_units_in_every_tensor() -> None:
    import transformers

    torch.manual_seed(9)
    teacher = transformers.BertModel(_bert_cfg(hidden_dropout_prob=0.0)).eval()
    r = student_with_report(teacher, layers=[1, 3], width={"intermediate_size": 24}, select="l1")
    s = r.model
    assert r.select == "l1" and "L1 norm" in r.to_text()
    masked = transformers.BertModel(teacher.config).eval()
    masked.load_state_dict(teacher.state_dict())
    chosen = []
    for i, j in enumerate([1, 3]):
        t = teacher.encoder.layer[j]
        w_in, b_in = t.intermediate.dense.weight, t.intermediate.dense.bias
        w_out = t.output.dense.weight
        score = w_in.abs().sum(1) + b_in.abs() + w_out.abs().sum(0)  # each unit's weights
        idx = sorted(torch.argsort(score.double(), descending=True, stable=True)[:24].tolist())
        chosen.append(idx)
        b = s.encoder.layer[i]
        assert torch.equal(b.intermediate.dense.weight, w_in[idx])
        assert torch.equal(b.intermediate.dense.bias, b_in[idx])
        assert torch.equal(b.output.dense.weight, w_out[:, idx])
        assert torch.equal(b.output.dense.bias, t.output.dense.bias)
        off = [u for u in range(64) if u not in idx]
        with torch.no_grad():
            masked.encoder.layer[j].intermediate.dense.weight[off] = 0
            masked.encoder.layer[j].intermediate.dense.bias[off] = 0
    assert chosen[0] != chosen[1] and chosen[0] != list(range(24))  # block-local, not first k
    ids = torch.tensor([[3, 9, 27, 81, 5]])
    with torch.no_grad():
        e = masked.embeddings
        x = e(ids)
        for j in (1, 3):
            x = masked.encoder.layer[j](x)
        torch.testing.assert_close(s(ids).last_hidden_state, x, rtol=1e-5, atol=1e-5)
    # errors: a meta teacher has no values to rank; l1 needs a narrower intermediate size
    for kwargs, needle in [
        (dict(meta=True, width=0.5), "needs the teacher's values"),
        (dict(width={"hidden_size": 384, "num_attention_heads": 6}), "keeps the intermediate"),
        (dict(width=0.5, select="l2"), "select='l2'"),
        (dict(width=None), "give width"),
    ]:
        with pytest.raises(ArgumentError) as info:
            student("zoo:bert-base", every=6, **{"select": "l1", **kwargs})
        assert needle in str(info.value) and "\n" not in str(info.value), info.value


def test_select_l1_gpt2_conv1d_units(tmp_path: Path) -> None:
    torch.manual_seed(10)
    teacher = zoo.build("gpt2", n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=8)
    s = student(teacher, every=1, width=0.5, select="l1")
    for b, t in zip(s.transformer.h, teacher.transformer.h, strict=True):
        fc, proj = t.mlp.c_fc, t.mlp.c_proj  # Conv1D: c_fc (32, 128), c_proj (128, 32)
        score = fc.weight.abs().sum(0) + fc.bias.abs() + proj.weight.abs().sum(1)
        idx = sorted(torch.argsort(score.double(), descending=True, stable=True)[:64].tolist())
        assert torch.equal(b.mlp.c_fc.weight, fc.weight[:16][:, idx])
        assert torch.equal(b.mlp.c_fc.bias, fc.bias[idx])
        assert torch.equal(b.mlp.c_proj.weight, proj.weight[idx][:, :16])
        assert torch.equal(b.attn.c_proj.weight, t.attn.c_proj.weight[:16, :16])
    # the spec records the rule; the rebuilt student (on meta, then its weights) is the same
    r = student_with_report(teacher, every=1, width=0.5, select="l1")
    r.teacher, r.from_target = "zoo:gpt2", True
    r.args = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=8)
    _, spec = save_student(r, tmp_path / "s.safetensors")
    assert json.loads(spec.read_text())["student"]["select"] == "l1"
    back = build_student(spec)
    _same(back, s)
