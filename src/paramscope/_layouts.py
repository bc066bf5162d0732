"""Named layout presets for :func:`paramscope.convert`: the conventions that differ between
frameworks, as renames plus axis moves.

Flax and Keras store a dense layer's matrix as ``kernel`` of shape ``(in, out)`` and a
convolution's as ``(*spatial, in, out)``; torch stores ``weight`` as ``(out, in)`` and
``(out, in, *spatial)``. Norm layers call their affine parameters ``scale`` (Flax) or
``gamma`` / ``beta`` (Keras), and running statistics ``mean`` / ``var`` (Flax) or
``moving_mean`` / ``moving_variance`` (Keras). A preset renames by these conventions and moves
the kernels' axes; module names (``Dense_0``, ``dense``) differ too and are the user's
``rename`` rules, applied after the preset's.

Presets:

- ``flax-to-torch``: a leading ``params.`` / ``batch_stats.`` dropped (a saved
  ``{"params": …, "batch_stats": …}``); ``kernel`` → ``weight`` (axes moved), ``scale`` →
  ``weight``, ``embedding`` → ``weight``, ``mean`` → ``running_mean``, ``var`` →
  ``running_var``.
- ``keras-to-torch``: ``kernel`` → ``weight`` (axes moved), ``gamma`` → ``weight``, ``beta`` →
  ``bias``, ``moving_mean`` → ``running_mean``, ``moving_variance`` → ``running_var``,
  ``embeddings`` → ``weight``.

Not covered: recurrent cells (gate orders differ), depthwise and transposed convolutions
(their torch layouts are not a plain axis move of the kernel), attention layers with per-head
kernels (Flax ``DenseGeneral``, Keras ``EinsumDense``). Their entries keep their names and
axes (the user's ``rename`` rules still apply), and the report says which they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ._errors import ArgumentError

__all__ = ["LAYOUTS", "Layout", "get_layout"]

#: The axis order that turns a ``(*spatial, in, out)`` kernel into ``(out, in, *spatial)``.
_KERNEL_TO_TORCH = {
    2: (1, 0),
    3: (2, 1, 0),
    4: (3, 2, 0, 1),
    5: (4, 3, 0, 1, 2),
}


@dataclass(frozen=True)
class Layout:
    """One preset.

    Attributes:
        name: its name (``--layout NAME``).
        renames: ``(regex, replacement)`` rules, applied in order to the names it covers.
        kernels: a regex of the (original) names whose axes move, kernel to torch order.
        uncovered: a regex of names the preset does not handle (said in a note).
    """

    name: str
    renames: tuple[tuple[str, str], ...]
    kernels: str
    uncovered: str = r"(?!)"
    always: tuple[tuple[str, str], ...] = ()  # applied first, to every name (file prefixes)
    _kernel_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _uncovered_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_kernel_re", re.compile(self.kernels))
        object.__setattr__(self, "_uncovered_re", re.compile(self.uncovered))

    def permutation(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The axis order for entry ``name`` (its original name) of ``shape``, or ``None``
        when it keeps its axes.

        Example:
            >>> get_layout("flax-to-torch").permutation("Dense_0.kernel", (4, 8))
            (1, 0)
            >>> get_layout("flax-to-torch").permutation("Dense_0.bias", (8,)) is None
            True
        """
        if self._kernel_re.search(name) is None:
            return None
        return _KERNEL_TO_TORCH.get(len(shape))

    def uncovered_names(self, names: list[str]) -> list[str]:
        """The names this preset leaves as they are although they look framework-specific:
        those its ``uncovered`` pattern matches, and every entry of a module that has a
        ``query`` projection (an attention block: its ``out`` projection too)."""
        blocks = {
            n.rsplit(".", 2)[0] + "."
            for n in names
            if n.count(".") >= 2 and n.rsplit(".", 2)[1] == "query"
        }
        return [
            n for n in names if self._uncovered_re.search(n) or any(map(n.startswith, blocks))
        ]


LAYOUTS: dict[str, Layout] = {
    "flax-to-torch": Layout(
        "flax-to-torch",
        (
            (r"\.kernel$", ".weight"),
            (r"\.scale$", ".weight"),
            (r"\.embedding$", ".weight"),
            (r"\.mean$", ".running_mean"),
            (r"\.var$", ".running_var"),
        ),
        kernels=r"\.kernel$",
        uncovered=r"(?i)(lstm|gru|cell|depthwise|transpose|attention|densegeneral)"
        r"|(^|\.)(query|key|value)\.kernel$",
        always=((r"^(?:params|batch_stats)\.", ""),),
    ),
    "keras-to-torch": Layout(
        "keras-to-torch",
        (
            (r"\.kernel$", ".weight"),
            (r"\.gamma$", ".weight"),
            (r"\.beta$", ".bias"),
            (r"\.moving_mean$", ".running_mean"),
            (r"\.moving_variance$", ".running_var"),
            (r"\.embeddings$", ".weight"),
        ),
        kernels=r"\.kernel$",
        uncovered=r"(?i)(recurrent_kernel|depthwise_kernel|pointwise_kernel|lstm|gru|cell"
        r"|transpose|attention|einsum)|(^|\.)(query|key|value)\.kernel$",
    ),
}


def get_layout(name: str) -> Layout:
    """The preset of that name.

    Args:
        name: ``"flax-to-torch"`` or ``"keras-to-torch"``.

    Returns:
        The :class:`Layout`.

    Raises:
        ArgumentError: an unknown name (the message lists the known ones).

    Example:
        >>> get_layout("keras-to-torch").renames[1]
        ('\\\\.gamma$', '.weight')
    """
    layout = LAYOUTS.get(name)
    if layout is None:
        raise ArgumentError(
            f"convert: layout={name!r} is not a known preset; expected one of "
            f"{', '.join(sorted(LAYOUTS))}"
        )
    return layout
