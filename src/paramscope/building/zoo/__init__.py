"""The built-in model zoo: reference architectures in plain torch, by name.

Every zoo model has the exact ``state_dict`` names and shapes of its reference implementation
(torchvision, HF transformers, or the tutorial it comes from), so real checkpoints load into
it, and builds under ``with torch.device("meta"):`` without allocating, so even a 70B model
costs nothing to build. ``names``, ``describe``, ``REFERENCE`` and ``REFERENCE_PARAMS`` work
without importing torch; only :func:`build` imports it.

Example:
    >>> from paramscope.building import zoo
    >>> zoo.REFERENCE_PARAMS["gpt2"]
    124439808
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, NamedTuple

from ..._errors import ArgumentError, ArgumentTypeError, ParamscopeError
from ..._names import missing

if TYPE_CHECKING:
    import torch

__all__ = ["REFERENCE", "REFERENCE_PARAMS", "Listing", "build", "describe", "listing", "names"]


class _Spec(NamedTuple):
    """One zoo entry: where it is built, what it is, and its reference."""

    module: str  # family module in this package, e.g. "_gpt2"
    description: str
    reference: str
    params: int  # unique parameters of the reference implementation


_TV = "torchvision 0.29.1"
_HF = "transformers 5.24.0"

_ZOO: dict[str, _Spec] = {
    "mlp": _Spec(
        "_mlp",
        "MLP 784-256-128-10 with ReLU (MNIST), nn.Sequential layout",
        "nn.Sequential(Linear(784, 256), ReLU(), Linear(256, 128), ReLU(), Linear(128, 10))",
        235_146,
    ),
    "mlp-3-5-2": _Spec(
        "_mlp",
        "SimpleNN 3-5-2 with ReLU: modules hidden, relu, output",
        "SimpleNN(3, 5, 2) of the tutorial: hidden=Linear(3, 5), relu, output=Linear(5, 2)",
        32,
    ),
    "lenet5": _Spec(
        "_lenet",
        "LeNet-5 for 32x32x1 input, ReLU and max-pool (PyTorch tutorial Net layout)",
        "PyTorch 'Neural Networks' tutorial Net: conv1(1,6,5), conv2(6,16,5), fc1/fc2/fc3",
        61_706,
    ),
    "resnet18": _Spec(
        "_resnet",
        "ResNet-18 (11.7M), BasicBlock [2,2,2,2], torchvision layout",
        f"{_TV} torchvision.models.resnet18()",
        11_689_512,
    ),
    "resnet50": _Spec(
        "_resnet",
        "ResNet-50 (25.6M), Bottleneck v1.5 [3,4,6,3], torchvision layout",
        f"{_TV} torchvision.models.resnet50()",
        25_557_032,
    ),
    "vgg16": _Spec(
        "_vgg",
        "VGG-16 (138M), configuration D without batch norm, torchvision layout",
        f"{_TV} torchvision.models.vgg16()",
        138_357_544,
    ),
    "gpt2": _Spec(
        "_gpt2",
        "GPT-2 small (124M), tied LM head, HF GPT2LMHeadModel layout",
        f"{_HF} GPT2LMHeadModel(GPT2Config())",
        124_439_808,
    ),
    "gpt2-medium": _Spec(
        "_gpt2",
        "GPT-2 medium (355M), tied LM head, HF GPT2LMHeadModel layout",
        f"{_HF} GPT2LMHeadModel(GPT2Config(n_embd=1024, n_layer=24, n_head=16))",
        354_823_168,
    ),
    "gpt2-large": _Spec(
        "_gpt2",
        "GPT-2 large (774M), tied LM head, HF GPT2LMHeadModel layout",
        f"{_HF} GPT2LMHeadModel(GPT2Config(n_embd=1280, n_layer=36, n_head=20))",
        774_030_080,
    ),
    "gpt2-xl": _Spec(
        "_gpt2",
        "GPT-2 XL (1.5B), tied LM head, HF GPT2LMHeadModel layout",
        f"{_HF} GPT2LMHeadModel(GPT2Config(n_embd=1600, n_layer=48, n_head=25))",
        1_557_611_200,
    ),
    "bert-base": _Spec(
        "_bert",
        "BERT base uncased (110M) encoder with pooler, HF BertModel layout",
        f"{_HF} BertModel(BertConfig())",
        109_482_240,
    ),
    "llama-2-7b": _Spec(
        "_llama",
        "Llama 2 7B (6.7B), MHA, RMSNorm, SwiGLU, untied LM head, HF LlamaForCausalLM layout",
        f"{_HF} LlamaForCausalLM(LlamaConfig(hidden_size=4096, num_hidden_layers=32, "
        "num_attention_heads=32, num_key_value_heads=32, intermediate_size=11008, "
        "vocab_size=32000))",
        6_738_415_616,
    ),
    "llama-3-8b": _Spec(
        "_llama",
        "Llama 3 8B (8.0B), GQA 32/8 heads, 128k vocab, untied LM head, HF LlamaForCausalLM layout",
        f"{_HF} LlamaForCausalLM(LlamaConfig(hidden_size=4096, num_hidden_layers=32, "
        "num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336, "
        "vocab_size=128256))",
        8_030_261_248,
    ),
    "vit-b-16": _Spec(
        "_vit",
        "ViT-B/16 (86.6M) for 224x224 input, torchvision layout",
        f"{_TV} torchvision.models.vit_b_16()",
        86_567_656,
    ),
}

REFERENCE_PARAMS: dict[str, int] = {name: spec.params for name, spec in _ZOO.items()}
"""Unique parameter count of each reference implementation (a tied weight counts once)."""

REFERENCE: dict[str, str] = {name: spec.reference for name, spec in _ZOO.items()}
"""What each zoo model reproduces: library version and constructor call."""


def names() -> list[str]:
    """The names of the zoo models, small to large within each family.

    Returns:
        A new list of names.

    Example:
        >>> names()[:3]
        ['mlp', 'mlp-3-5-2', 'lenet5']
    """
    return list(_ZOO)


def _spec(name: str) -> _Spec:
    spec = _ZOO.get(name)
    if spec is None:
        raise missing(name, _ZOO, what="zoo model")
    return spec


def describe(name: str) -> str:
    """One line saying what the zoo model ``name`` is.

    Args:
        name: a zoo name (see :func:`names`).

    Returns:
        The description.

    Raises:
        MissingNameError: ``name`` is not in the zoo; the message suggests close names.

    Example:
        >>> describe("gpt2")
        'GPT-2 small (124M), tied LM head, HF GPT2LMHeadModel layout'
    """
    return _spec(name).description


class Listing(list):  # type: ignore[type-arg]
    """The zoo's models with their counts (:func:`listing`): a list of one dict per model,
    ``{"name", "params", "buffers", "ties", "description"}``, that renders as a report.

    Example:
        >>> rows = Listing([{"name": "zoo:x", "params": 7850, "buffers": 0, "ties": 0,
        ...                  "description": "a Linear"}])
        >>> print(rows.to_text())
        zoo:x            7,850    7.8 thousand  a Linear
    """

    def to_dict(self) -> list[dict[str, Any]]:
        """The JSON form (what ``paramscope zoo --json`` prints): the rows, copied.

        Returns:
            One dict per model.

        Example:
            >>> Listing([{"name": "zoo:x", "params": 1}]).to_dict()
            [{'name': 'zoo:x', 'params': 1}]
        """
        return [dict(r) for r in self]

    def to_text(self, width: int | None = None) -> str:
        """The human form ``paramscope zoo`` prints: name, exact and short count, description.

        Args:
            width: unused (the lines are never wider than their content); the same signature
                as every report's ``to_text``.

        Returns:
            One line per model, without a final newline.

        Example:
            >>> Listing().to_text()
            ''
        """
        from ..._text import printable_tree
        from ..._units import format_count, format_short_count

        rows = printable_tree(self.to_dict())
        width_ = max((len(r["name"]) for r in rows), default=0)
        return "\n".join(
            f"{r['name']:<{width_}}  {format_count(r['params']):>15}  "
            f"{format_short_count(r['params']):>14}  {r['description']}"
            for r in rows
        )


def listing() -> Listing:
    """Every zoo model with its counts, built on the meta device (what ``paramscope zoo`` shows).

    Returns:
        A :class:`Listing`: one ``{"name", "params", "buffers", "ties", "description"}`` per
        model, ``name`` with its ``zoo:`` prefix; ``params`` counts a tied weight once.

    Example:
        >>> rows = listing()
        >>> rows[0]["name"], rows[0]["params"]
        ('zoo:mlp', 235146)
    """
    import torch

    from ..._enums import Role
    from ..._modtree import scan_module  # counted as paramscope.count counts a module

    rows = []
    for name in names():
        with torch.device("meta"):
            m = scan_module(build(name)).manifest()
        stored = [e for e in m.values() if e.tie is None]
        rows.append(
            {
                "name": f"zoo:{name}",
                "params": sum(e.logical_numel for e in stored if e.role is Role.PARAM),
                "buffers": sum(e.numel for e in stored if e.role is not Role.PARAM),
                "ties": len(m.ties()),
                "description": describe(name),
            }
        )
    return Listing(rows)


def _check_override(name: str, key: str, value: Any, reference: Any) -> None:
    """Refuse an override of another type than the reference value (a ``str`` for an int)."""
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "True or False"),
        (int, "an int"),
        (float, "a number"),
        (str, "a string"),
        ((list, tuple), "a list"),
    ]
    for kind, text in kinds:
        if not isinstance(reference, kind):
            continue
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise ArgumentTypeError(
                f"zoo model {name!r}: {key}={value!r}: expected {text} (the reference has "
                f"{key}={reference!r})"
            )
        return


def build(name: str, **overrides: Any) -> torch.nn.Module:
    """Build the zoo model ``name`` with its reference config, some fields replaced.

    Only module constructors run: wrap the call in ``with torch.device("meta"):`` to get the
    full structure (names, shapes, ties) without allocating any memory.

    Args:
        name: a zoo name (see :func:`names`).
        **overrides: config fields to replace, e.g. ``n_layer=2, n_embd=64`` for GPT-2.

    Returns:
        The model, freshly initialised like its reference (a no-op on the meta device).

    Raises:
        MissingNameError: ``name`` is not in the zoo; the message suggests close names.
        ArgumentError: an override names no config field, or makes the config invalid.
        ArgumentTypeError: an override of another type than the field (``n_layer="2"``).

    Example:
        >>> import torch
        >>> with torch.device("meta"):
        ...     model = build("llama-3-8b")
        >>> sum(p.numel() for p in model.parameters())
        8030261248
    """
    spec = _spec(name)
    family = importlib.import_module(f".{spec.module}", __name__)
    config = family.PRESETS[name]
    valid = [f.name for f in dataclasses.fields(config)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ArgumentError(
            f"zoo model {name!r}: unknown config field(s) {', '.join(map(repr, unknown))}; "
            f"valid fields are {', '.join(valid)}"
        )
    for key, value in overrides.items():
        _check_override(name, key, value, getattr(config, key))
    if overrides:
        try:
            config = dataclasses.replace(config, **overrides)
        except ParamscopeError:  # the config's own check: it names the class and the fields
            raise
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"zoo model {name!r}: invalid override: {exc}") from None
    from ._meta import skip_init_on_meta

    with skip_init_on_meta():  # zoo models initialise only through torch.nn.init
        model: torch.nn.Module = family.build(config)
    return model
