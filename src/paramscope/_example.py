"""A small example checkpoint for the README and for trying the CLI without downloads."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["example_model", "write_example"]


def example_model() -> object:
    """The classic MNIST MLP (784 → 256 → 128 → 10) with a BatchNorm; layer 0 frozen.

    Returns:
        A deterministic ``torch.nn.Sequential`` (seed 0).

    Example:
        >>> m = example_model()
        >>> sum(p.numel() for p in m.parameters())
        235658
    """
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(784, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
    model[0].requires_grad_(False)
    return model


def write_example(path: str | os.PathLike[str]) -> Path:
    """Save :func:`example_model` as safetensors with paramscope metadata.

    Args:
        path: destination file.

    Returns:
        The path written.

    Example:
        >>> import tempfile, paramscope
        >>> path = write_example(Path(tempfile.mkdtemp()) / "example.safetensors")
        >>> path.name, paramscope.count(path).params
        ('example.safetensors', 235658)
    """
    from ._paramdict import ParamDict
    from .io import save

    pd = ParamDict.from_module(example_model())  # type: ignore[arg-type]
    pd.metadata["example"] = "MNIST MLP 784-256-128-10"
    return save(pd, path)
