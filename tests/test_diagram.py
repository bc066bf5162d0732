"""Parameter-structure diagrams: Mermaid grammar, Graphviz rendering, counts, ties, depth, CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import paramscope
from paramscope import ArgumentError, ArgumentTypeError, SourceNotFoundError
from paramscope.reporting._diagram import diagram

_ID = r"[A-Za-z_][A-Za-z0-9_]*"
_DECL = re.compile(rf'^state "(?P<label>[^"{{}}:]*)" as (?P<id>{_ID})$')
_OPEN = re.compile(rf"^state (?P<id>{_ID}) \{{$")
_EDGE = re.compile(rf"^(?P<a>{_ID}) --> (?P<b>{_ID})(?: : (?P<label>[^\"{{}}:]*))?$")


@dataclass
class Mermaid:
    """What the validator read from a diagram."""

    labels: dict[str, str] = field(default_factory=dict)
    parent: dict[str, str | None] = field(default_factory=dict)
    composites: set[str] = field(default_factory=set)
    edges: list[tuple[str, str, str | None]] = field(default_factory=list)


def validate_mermaid(text: str) -> Mermaid:
    """Check the stateDiagram-v2 subset that paramscope emits; fail on anything else."""
    lines = text.splitlines()
    assert lines and lines[0] == "stateDiagram-v2", "first line must be the header"
    out = Mermaid()
    stack: list[str] = []
    for n, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        if m := _DECL.match(line):
            sid = m["id"]
            assert sid not in out.labels, f"line {n}: {sid} declared twice"
            assert m["label"].strip(), f"line {n}: empty label"
            out.labels[sid] = m["label"]
            out.parent[sid] = stack[-1] if stack else None
        elif m := _OPEN.match(line):
            sid = m["id"]
            assert sid in out.labels, f"line {n}: composite {sid} opened before it is declared"
            assert out.parent[sid] == (stack[-1] if stack else None), f"line {n}: wrong scope"
            assert sid not in out.composites, f"line {n}: {sid} opened twice"
            out.composites.add(sid)
            stack.append(sid)
        elif line == "}":
            assert stack, f"line {n}: unbalanced closing brace"
            stack.pop()
        elif m := _EDGE.match(line):
            out.edges.append((m["a"], m["b"], m["label"]))
        else:
            raise AssertionError(f"line {n}: not in the emitted grammar: {raw!r}")
    assert not stack, f"composite states left open: {stack}"
    assert text.count("{") == text.count("}"), "unbalanced braces"
    for a, b, _ in out.edges:
        assert a in out.labels and b in out.labels, f"edge {a} --> {b}: undeclared endpoint"
    for sid, label in out.labels.items():
        assert re.fullmatch(_ID, sid)
        assert '"' not in label and ":" not in label
    return out


def _tied_model() -> torch.nn.Module:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(50, 8)
            self.body = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
            self.head = torch.nn.Linear(8, 50, bias=False)
            self.head.weight = self.emb.weight

    return Tied()


def _shared_model() -> torch.nn.Module:
    class Shared(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = torch.nn.Linear(6, 6)
            self.again = torch.nn.Sequential(torch.nn.ReLU(), self.enc)
            self.norm = torch.nn.BatchNorm1d(6)

    return Shared()


@pytest.fixture(scope="module")
def gpt2() -> torch.nn.Module:
    return paramscope.resolve_target("zoo:gpt2")


@pytest.fixture(scope="module")
def tied_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("diagram") / "tied.safetensors"
    paramscope.save(_tied_model(), path, fsync=False)
    return path


@pytest.mark.parametrize(
    ("target", "depth"),
    [
        ("zoo:mlp", None),
        ("zoo:gpt2", 2),
        ("zoo:gpt2", 3),
        ("zoo:gpt2", None),
        ("zoo:resnet18", None),
    ],
)
def test_mermaid_grammar_zoo(target: str, depth: int | None) -> None:
    got = validate_mermaid(diagram(target, depth=depth))
    assert got.composites, "the root at least is composite"


def test_mermaid_tied_checkpoint(tied_file: Path) -> None:
    for source in (tied_file, str(tied_file), paramscope.read_manifest(tied_file)):
        got = validate_mermaid(diagram(source))
        assert ("e_head_weight", "e_emb_weight", "tied") in got.edges
        assert "= 400" in got.labels["e_emb_weight"]  # 50×8 stored once
        assert "(tied)" in got.labels["e_head_weight"]


def test_mermaid_shared_module() -> None:
    model = _shared_model()
    got = validate_mermaid(diagram(model))
    assert ("s_again_1", "s_enc", "shared") in got.edges
    assert "shared with enc" in got.labels["s_again_1"]
    assert "s_again_1" not in got.composites  # drawn once, under its first path
    n_enc = sum(p.numel() for p in model.enc.parameters())
    assert f"{n_enc:,} params" in got.labels["s_enc"]
    assert "(buffer)" in got.labels["e_norm_running_mean"]


def test_gpt2_tie_edge_and_counts(gpt2: torch.nn.Module) -> None:
    got = validate_mermaid(diagram(gpt2))
    assert ("e_lm_head_weight", "e_transformer_wte_weight", "tied") in got.edges
    wte = gpt2.transformer.wte.weight
    assert got.labels["e_transformer_wte_weight"] == (
        f"weight {'×'.join(map(str, wte.shape))} = {wte.numel():,}"
    )
    c_attn = gpt2.transformer.h[0].attn.c_attn.weight
    assert f"= {c_attn.numel():,}" in got.labels["e_transformer_h_0_attn_c_attn_weight"]
    total = paramscope.count(gpt2).params
    assert f"{total:,} params" in got.labels["s_root"]


def test_mlp_labels_carry_real_counts() -> None:
    model = paramscope.resolve_target("zoo:mlp")
    got = validate_mermaid(diagram(model))
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears[0][1].in_features == 784
    for name, lin in linears:
        params = sum(p.numel() for p in lin.parameters())
        assert f"{params:,} params" in got.labels[f"s_{name}"]
        assert (
            f"weight {lin.out_features}×{lin.in_features} = {lin.weight.numel():,}"
            == (got.labels[f"e_{name}_weight"])
        )
    assert "200,960 params" in got.labels["s_0"]  # Linear(784, 256)


def _dot_render(text: str) -> str:
    dot = shutil.which("dot")
    if dot is None:
        pytest.fail(
            "Graphviz `dot` is not on PATH: CI must install graphviz (apt-get install graphviz)"
        )
    proc = subprocess.run([dot, "-Tsvg"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"dot warned: {proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("target", ["zoo:gpt2", "zoo:resnet18"])
def test_dot_renders(target: str) -> None:
    text = diagram(target, format="dot", depth=2)
    assert text.startswith("digraph paramscope {")
    assert 'subgraph "cluster_s_root"' in text
    assert "<svg" in _dot_render(text)


def test_dot_ties_and_shared_render() -> None:
    text = diagram(_tied_model(), format="dot")
    assert '"e_head_weight" -> "e_emb_weight"' in text and "style=dashed" in text
    assert "<svg" in _dot_render(text)
    shared = diagram(_shared_model(), format="dot")
    assert 'label="shared"' in shared
    assert "<svg" in _dot_render(shared)


def test_depth_limits_and_collapses(gpt2: torch.nn.Module) -> None:
    shallow = validate_mermaid(diagram(gpt2, depth=1))
    deep = validate_mermaid(diagram(gpt2, depth=3))
    assert len(shallow.labels) < len(deep.labels)
    assert "s_transformer_h" not in shallow.labels  # below the depth
    assert "s_transformer" not in shallow.composites  # at the depth: one simple state
    assert (
        f"{paramscope.count(gpt2.transformer).params:,} params" in (shallow.labels["s_transformer"])
    )
    blocks = [label for label in deep.labels.values() if "×12" in label]
    assert len(blocks) == 1 and "h.0–11 ×12" in blocks[0]
    each = sum(p.numel() for p in gpt2.transformer.h[0].parameters())
    assert f"{each:,} params each" in blocks[0]
    assert not any(sid.startswith("s_transformer_h_1") for sid in deep.labels)
    only_root = validate_mermaid(diagram(gpt2, depth=0))
    assert list(only_root.labels) == ["s_root"] and not only_root.composites


def test_big_model_stays_small() -> None:
    for depth in (3, None):
        text = diagram("zoo:llama-2-7b", depth=depth)
        validate_mermaid(text)
        assert len(text.splitlines()) < 200


def test_bad_input() -> None:
    with pytest.raises(ArgumentError, match=r"diagram: format='svg': expected one of 'mermaid'"):
        diagram("zoo:mlp", format="svg")
    with pytest.raises(ArgumentError, match=r"diagram: depth=-1: expected >= 0"):
        diagram("zoo:mlp", depth=-1)
    with pytest.raises(SourceNotFoundError, match="no such file or folder"):
        diagram("no/such/checkpoint.safetensors")
    with pytest.raises(ArgumentTypeError, match=r"^diagram: expected a checkpoint path .* int 42$"):
        diagram(42)  # the message names diagram, not the inner count


def test_cli(cli, tmp_path: Path) -> None:
    code, out, _ = cli("diagram", "zoo:mlp", "--depth", "2")
    assert code == 0
    assert out == diagram("zoo:mlp", depth=2)
    validate_mermaid(out)

    dest = tmp_path / "sub" / "gpt2.dot"
    code, out, _ = cli("diagram", "zoo:gpt2", "--format", "dot", "-d", "2", "-o", dest)
    assert code == 0 and str(dest) in out
    text = dest.read_text("utf-8")
    assert text == diagram("zoo:gpt2", format="dot", depth=2)
    assert not list(dest.parent.glob(".*"))  # no temp file left behind

    code, out, _ = cli("diagram", "zoo:mlp", "--arg", "sizes=[5, 7, 2]")
    assert code == 0
    assert "weight 7×5 = 35" in validate_mermaid(out).labels.values()

    code, out, err = cli("diagram", "zoo:mlp", "--format", "svg")
    assert code == 2 and out == "" and "format='svg'" in err
    code, out, err = cli("diagram", "zoo:mlp", "--depth", "-1")
    assert code == 2 and out == "" and "-1 is not in the range x>=0" in err
