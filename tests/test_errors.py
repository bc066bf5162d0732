"""The exception hierarchy: every raise names a specific class, argument errors are also the
built-in errors Python users catch, and messages name the public function, what was given and
the fix — never an inner function's name."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import paramscope
from paramscope import (
    ArgumentError,
    ArgumentTypeError,
    EntryError,
    InferError,
    ParamscopeError,
    SpecError,
    StrictLoadError,
    TargetError,
    WriteError,
    _errors,
)

SRC = Path(paramscope.__file__).parent


def _bare_base_calls(tree: ast.AST) -> list[int]:
    """Lines that call ``ParamscopeError(...)`` itself (``X.ParamscopeError(...)`` too)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            if name == "ParamscopeError":
                lines.append(node.lineno)
        elif isinstance(node, ast.Raise) and node.exc is not None:
            e = node.exc  # ``raise ParamscopeError`` without a call
            if isinstance(e, ast.Name) and e.id == "ParamscopeError":
                lines.append(node.lineno)
    return lines


def test_no_source_raises_the_bare_base_class() -> None:
    found = [
        f"{path.relative_to(SRC.parent)}:{line}"
        for path in sorted(SRC.rglob("*.py"))
        for line in _bare_base_calls(ast.parse(path.read_text("utf-8"), str(path)))
    ]
    assert not found, (
        "raise a specific subclass of ParamscopeError (ArgumentError, ArgumentTypeError, "
        "TargetError, EntryError, WriteError, …), not the base class, at: " + ", ".join(found)
    )


def test_the_scan_finds_what_it_looks_for() -> None:
    code = (
        "def f(P):\n    raise ParamscopeError('x')\n\ndef g(P):\n    raise P.ParamscopeError('y')\n"
    )
    assert _bare_base_calls(ast.parse(code)) == [2, 5]
    assert _bare_base_calls(ast.parse("raise ArgumentError('x')")) == []


def test_every_class_is_a_documented_exported_paramscope_error() -> None:
    for name in _errors.__all__:
        cls = getattr(_errors, name)
        assert issubclass(cls, ParamscopeError), name  # the CLI maps every one to exit 2
        doc = cls.__dict__.get("__doc__") or ""  # its own, not one inherited
        assert len(doc.strip()) > 20, f"{name} has no docstring saying when it is raised"
        assert getattr(paramscope, name) is cls, f"paramscope.{name} is not exported"


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (ArgumentError, ValueError),
        (ArgumentTypeError, TypeError),
        (TargetError, ValueError),
        (EntryError, ValueError),
        (StrictLoadError, ValueError),
        (SpecError, ArgumentError),
        (InferError, TargetError),
    ],
)
def test_classes_are_the_builtin_errors_python_users_catch(cls: type, builtin: type) -> None:
    assert issubclass(cls, builtin) and issubclass(cls, ParamscopeError)


def test_spec_and_infer_errors_live_with_the_rest_and_keep_their_old_homes() -> None:
    from paramscope.building import InferError as building_infer
    from paramscope.building import SpecError as building_spec
    from paramscope.building._infer import InferError as old_infer
    from paramscope.building._spec_errors import SpecError as old_spec

    assert SpecError is _errors.SpecError is building_spec is old_spec
    assert InferError is _errors.InferError is building_infer is old_infer
    err = SpecError("layers[0].args[1]", 'expected int, got "ten"')
    assert (str(err), err.path, err.problem) == (
        'layers[0].args[1]: expected int, got "ten"',
        "layers[0].args[1]",
        'expected int, got "ten"',
    )
    assert str(SpecError("", "empty")) == "spec: empty"
    assert str(InferError("0.weight", "3-D")) == "'0.weight': 3-D"
    assert str(InferError("", "empty")) == "empty"


def _linear() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


VALUE_ERRORS: list[tuple[str, Callable[[], object], type, str]] = [
    (
        "prune amount",
        lambda: paramscope.prune(_linear(), 1.5),
        ArgumentError,
        r"^prune: amount=1\.5",
    ),
    (
        "prune scope",
        lambda: paramscope.prune(_linear(), 0.5, scope="all"),
        ArgumentError,
        r"scope='all'",
    ),
    (
        "quantize bits",
        lambda: paramscope.quantize(_linear(), bits=3),
        ArgumentError,
        r"^quantize: bits=3: expected 8 or 4",
    ),
    (
        "diagram format",
        lambda: paramscope.diagram(_linear(), format="svg"),
        ArgumentError,
        r"^diagram: format='svg'",
    ),
    (
        "memory stage",
        lambda: paramscope.estimate_memory(_linear(), zero_stage=5),
        ArgumentError,
        r"zero_stage=5",
    ),
    ("size", lambda: paramscope.parse_size("5XB"), ArgumentError, r"size '5XB'"),
    (
        "formula",
        lambda: paramscope.formulas.linear(0, 8),
        ArgumentError,
        r"^linear: in_features must be",
    ),
    (
        "save format",
        lambda: paramscope.save({"w": torch.ones(2)}, "x.sf", format="npz"),
        ArgumentError,
        r"^save: format='npz'",
    ),
    (
        "verify a model",
        lambda: paramscope.verify("zoo:gpt2"),
        TargetError,
        r"^zoo:gpt2: verify needs a checkpoint",
    ),
    (
        "quantize NaN",
        lambda: paramscope.quantize({"w": torch.full((2, 2), float("nan"))}),
        EntryError,
        r"entry 'w': contains NaN",
    ),
]


@pytest.mark.parametrize(
    ("call", "cls", "match"), [v[1:] for v in VALUE_ERRORS], ids=[v[0] for v in VALUE_ERRORS]
)
def test_argument_errors_are_value_errors(
    call: Callable[[], object], cls: type, match: str
) -> None:
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert type(info.value) is cls and isinstance(info.value, ParamscopeError)


TYPE_ERRORS: list[tuple[str, Callable[[], object], str]] = [
    ("prune", lambda: paramscope.prune(42, 0.5), r"^prune: expected a torch.nn.Module"),
    ("quantize", lambda: paramscope.quantize(42), r"^quantize: expected a ParamDict"),
    ("count", lambda: paramscope.count(42), r"^count: expected a checkpoint path"),
    ("diagram", lambda: paramscope.diagram(42), r"^diagram: expected a checkpoint path"),
    ("init", lambda: paramscope.init(42, []), r"^init: expected a torch.nn.Module"),
    ("formula", lambda: paramscope.formulas.linear("4", 8), r"^linear: in_features must be"),
    (
        "zoo override",
        lambda: paramscope.zoo.build("mlp", sizes="wide"),
        r"sizes='wide': expected a list",
    ),
]


@pytest.mark.parametrize(
    ("call", "match"), [v[1:] for v in TYPE_ERRORS], ids=[v[0] for v in TYPE_ERRORS]
)
def test_argument_type_errors_are_type_errors(call: Callable[[], object], match: str) -> None:
    with pytest.raises(TypeError, match=match) as info:
        call()
    assert type(info.value) is ArgumentTypeError and isinstance(info.value, ParamscopeError)


def test_strict_load_error_carries_the_report() -> None:
    model = torch.nn.Linear(4, 2)
    with pytest.raises(StrictLoadError, match=r"^load_into\(strict=True\) refused:\n") as info:
        paramscope.load_into(model, {"weight": torch.zeros(2, 4)}, strict=True)
    assert info.value.report.missing == ["bias"] and not info.value.report.ok


def test_messages_never_show_an_inner_function_name() -> None:
    with pytest.raises(ArgumentTypeError) as info:
        paramscope.diagram(42)
    assert "count" not in str(info.value)  # was "diagram: count: expected a path …"
    with pytest.raises(ArgumentError) as info:
        paramscope.zoo.build("gpt2", n_embd=64, n_head=5)
    assert (
        str(info.value).count(":") == 1
    )  # "GPT2Config: …", not "zoo model …: invalid override: …"


def test_dst_with_an_in_memory_target_says_what_was_given_and_the_fix(tmp_path: Path) -> None:
    dst = str(tmp_path / "out.safetensors")
    with pytest.raises(TargetError) as info:
        paramscope.quantize(_linear(), dst=dst)
    text = str(info.value)
    assert text.startswith(f"quantize: dst={dst!r}")
    assert "the target is a torch module (Sequential)" in text
    assert "omit dst=" in text and "paramscope.save" in text and "checkpoint path" in text
    with pytest.raises(TargetError, match=r"prune changes in place; omit dst="):
        paramscope.prune(_linear(), 0.5, dst=dst)
    src = paramscope.save(_linear(), tmp_path / "m.safetensors")
    with pytest.raises(ArgumentError, match=r"pass dst= \(e\.g\. dst='.*m-pruned\.safetensors'\)"):
        paramscope.prune(src, 0.5)


def test_write_errors_name_the_destination_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(WriteError, match=r"is a folder; give a file name"):
        paramscope.save({"w": torch.ones(2)}, tmp_path)
    src = paramscope.save({"w": torch.ones(2, 4)}, tmp_path / "m.safetensors")
    with pytest.raises(WriteError, match=r"is a folder; the output is one \.safetensors file"):
        paramscope.quantize(src, dst=tmp_path)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["prune", "{ck}", "{tmp}/o.safetensors", "--amount", "2"], "prune: amount=2.0"),
        (["quantize", "{ck}", "{tmp}", "--bits", "8"], "is a folder; the output is one"),
        (["diagram", "{ck}", "--format", "svg"], "diagram: format='svg'"),
        (["verify", "zoo:gpt2"], "verify needs a checkpoint"),
        (["count", "zoo:gpt2", "--arg", "n_layer=two"], "n_layer='two': expected an int"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(
    cli, tmp_path: Path, args: list[str], needle: str
) -> None:
    ck = paramscope.save(_linear(), tmp_path / "m.safetensors")
    code, out, err = cli(*(a.format(ck=ck, tmp=tmp_path) for a in args))
    assert code == 2 and out == ""
    assert err.startswith("paramscope: error: ") and err.count("\n") == 1, err
    assert needle in err


@pytest.mark.parametrize("select", [3, ["*.weight", 3], b"*.weight"])
def test_a_pattern_that_is_not_a_string_is_an_argument_type_error(select: object) -> None:
    import torch

    model = torch.nn.Linear(4, 4)
    with pytest.raises(ArgumentTypeError, match=r"expected a glob .* found (int|bytes)") as exc:
        paramscope.prune(model, 0.5, select=select)
    assert isinstance(exc.value, TypeError)
    with pytest.raises(ArgumentTypeError, match="one-shot iterator; pass a list"):
        paramscope.prune(model, 0.5, select=iter(["weight"]))  # would match the first name only
    for ok in ("weight", ["weight"], ("re:w.*",), {"weight"}):  # any collection of strings
        report = paramscope.prune(torch.nn.Linear(4, 4), 0.5, select=ok)
        assert [t["name"] for t in report.to_dict()["tensors"]] == ["weight"], ok
