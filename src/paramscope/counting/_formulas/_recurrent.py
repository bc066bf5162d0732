"""Formulas of the recurrent layers: ``nn.RNN``, ``nn.LSTM`` (with projections) and ``nn.GRU``.

:func:`rnn` takes ``nn.RNNBase``'s signature (``mode`` first); :func:`lstm`, :func:`gru` and
:func:`rnn_tanh` take the signatures of ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN``.

Example:
    >>> rnn("LSTM", 10, 32).expression
    'layer 0: 4×(32×(10+32) + 2×32) = 5,632'
    >>> gru(10, 20, num_layers=2).params
    4440
"""

from __future__ import annotations

from typing import Any

from ..._errors import ArgumentError
from ._checks import _flag, _int
from ._formula import Formula, _done, _times

__all__ = ["gru", "lstm", "rnn", "rnn_tanh"]


_RNN_MODES = {"RNN": "RNN_TANH", "RNN_TANH": "RNN_TANH", "RNN_RELU": "RNN_RELU"}


_RNN_MODES |= {"LSTM": "LSTM", "GRU": "GRU"}


_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def rnn(
    mode: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    proj_size: int = 0,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``.

    Takes ``nn.RNNBase``'s signature (``mode`` first); ``batch_first``, ``dropout``,
    ``device`` and ``dtype`` are accepted in their positions and ignored. Per layer and
    direction, with ``G`` gates (RNN 1, GRU 3, LSTM 4), hidden size ``h`` and
    ``r = proj_size or h``: ``weight_ih (G·h, in)``, ``weight_hh (G·h, r)``, two bias vectors
    ``bias_ih`` and ``bias_hh`` of ``G·h`` each, and for an LSTM with projections
    ``weight_hr (proj_size, h)``. Layers after the first take ``r × directions`` inputs.

    Args:
        mode: ``"RNN"`` (= ``"RNN_TANH"``), ``"RNN_TANH"``, ``"RNN_RELU"``, ``"LSTM"`` or
            ``"GRU"``.
        input_size: features of the input.
        hidden_size: features of the hidden state.
        num_layers: stacked recurrent layers.
        bias: whether there are bias vectors.
        batch_first: ignored (does not change the count).
        dropout: ignored (does not change the count).
        bidirectional: whether each layer also runs backwards (doubles every count).
        proj_size: LSTM only: project the hidden state to this size (0: no projection).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula, e.g. ``layer 0: 4×(32×(10+32) + 2×32) = 5,632``.

    Example:
        >>> rnn("LSTM", 10, 32).expression
        'layer 0: 4×(32×(10+32) + 2×32) = 5,632'
    """
    if not isinstance(mode, str) or mode not in _RNN_MODES:
        raise ArgumentError(
            f"rnn: mode must be one of {', '.join(map(repr, _RNN_MODES))}, got {mode!r}"
        )
    mode = _RNN_MODES[mode]
    fn = mode.lower()
    i = _int(fn, "input_size", input_size)
    h = _int(fn, "hidden_size", hidden_size)
    layers = _int(fn, "num_layers", num_layers)
    b = _flag(fn, "bias", bias)
    bi = _flag(fn, "bidirectional", bidirectional)
    p = _int(fn, "proj_size", proj_size, minimum=0)
    if p and mode != "LSTM":
        raise ArgumentError(f"{fn}: proj_size must be 0 (projections are LSTM only), got {p}")
    if p >= h:
        raise ArgumentError(
            f"{fn}: proj_size must be smaller than hidden_size={h}, got proj_size={p}"
        )
    gates, dirs = _GATES[mode], 2 if bi else 1
    r = p or h

    def layer(inputs: int) -> tuple[int, str]:
        count = gates * (h * (inputs + r) + (2 * h if b else 0)) + p * h
        core = f"{h}×({inputs}+{r})"
        if b:
            core = f"{core} + 2×{h}"
            struct = f"{gates}×({core})" if gates > 1 else core
        else:
            struct = f"{gates}×{core}" if gates > 1 else core
        if p:
            struct += f" + {p}×{h}"
        return count, struct

    first, first_struct = layer(i)
    total, parts = first, [f"layer 0: {first_struct}"]
    if layers > 1:
        rest, rest_struct = layer(r * dirs)
        total += (layers - 1) * rest
        label = "layer 1" if layers == 2 else f"layers 1–{layers - 1}"
        parts.append(
            f"{label}: " + (rest_struct if layers == 2 else _times(layers - 1, rest_struct))
        )
    struct = " + ".join(parts)
    if bi:
        struct = f"2 directions×({struct})"
    name = "RNN" if mode.startswith("RNN") else mode
    return _done(name, dirs * total, struct)


def lstm(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    proj_size: int = 0,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.LSTM`` (its exact signature); see :func:`rnn`.

    Args:
        input_size: features of the input.
        hidden_size: features of the hidden state.
        num_layers: stacked recurrent layers.
        bias: whether there are bias vectors.
        batch_first: ignored (does not change the count).
        dropout: ignored (does not change the count).
        bidirectional: whether each layer also runs backwards.
        proj_size: project the hidden state to this size (0: no projection).
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> lstm(10, 32, proj_size=8).expression
        'layer 0: 4×(32×(10+8) + 2×32) + 8×32 = 2,816'
    """
    return rnn(
        "LSTM",
        input_size,
        hidden_size,
        num_layers,
        bias,
        bidirectional=bidirectional,
        proj_size=proj_size,
    )


def gru(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.GRU`` (its exact signature); see :func:`rnn`.

    Args:
        input_size: features of the input.
        hidden_size: features of the hidden state.
        num_layers: stacked recurrent layers.
        bias: whether there are bias vectors.
        batch_first: ignored (does not change the count).
        dropout: ignored (does not change the count).
        bidirectional: whether each layer also runs backwards.
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> gru(10, 20, num_layers=2).params
        4440
    """
    return rnn("GRU", input_size, hidden_size, num_layers, bias, bidirectional=bidirectional)


def rnn_tanh(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    nonlinearity: str = "tanh",
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    device: Any = None,
    dtype: Any = None,
) -> Formula:
    """Parameters of ``nn.RNN`` (its exact signature, either nonlinearity); see :func:`rnn`.

    Args:
        input_size: features of the input.
        hidden_size: features of the hidden state.
        num_layers: stacked recurrent layers.
        nonlinearity: ``"tanh"`` or ``"relu"`` (the count is the same).
        bias: whether there are bias vectors.
        batch_first: ignored (does not change the count).
        dropout: ignored (does not change the count).
        bidirectional: whether each layer also runs backwards.
        device: ignored (does not change the count).
        dtype: ignored (does not change the count).

    Returns:
        The formula.

    Example:
        >>> rnn_tanh(4, 8, bidirectional=True).expression
        '2 directions×(layer 0: 8×(4+8) + 2×8) = 224'
        >>> rnn_tanh(4, 8, 1, "relu").params
        112
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ArgumentError(
            f"rnn_tanh: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
        )
    mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
    return rnn(mode, input_size, hidden_size, num_layers, bias, bidirectional=bidirectional)
