"""The one exception hierarchy of paramscope.

Every error a user can cause (a missing file, a malformed header, a refused pickle, a name
that does not exist) is a :class:`ParamscopeError`. The CLI turns it into one line on stderr
and exit code 2; anything else is a bug and exits 3.

Messages follow one rule: name the file or key, what was given, what was expected, and where
there is one, the fix; a message never shows an inner function's name.

The hierarchy (a class is also the built-in error Python users would catch for it)::

    ParamscopeError
    ├── ArgumentError (ValueError)          a bad value of an argument or option
    │   └── SpecError                       a model spec is invalid, at a place in the spec
    ├── ArgumentTypeError (TypeError)       an argument of a type the function does not take
    ├── TargetError (ValueError)            a TARGET of the wrong kind, or one that cannot be built
    │   └── InferError                      a state dict does not describe a rebuildable stack
    ├── EntryError (ValueError)             one tensor that cannot go through the operation
    ├── StrictLoadError (ValueError)        load_into(strict=True) refused; carries the report
    ├── WriteError                          a checkpoint cannot be written where or as asked
    ├── SourceNotFoundError (FileNotFoundError)
    ├── UnknownFormatError
    ├── FormatError                         a file breaks the rules of its format
    │   └── HeaderError, ShardIndexError, UnsafePickleError, IntegrityError, QuantConfigError,
│       GGUFError
    ├── UnsupportedDTypeError
    ├── InvalidNameError (ValueError)
    ├── DuplicateNameError, MissingNameError (KeyError)
    ├── ShapeMismatchError (ValueError)
    └── DTypeMismatchError (TypeError)
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "DTypeMismatchError",
    "DuplicateNameError",
    "EntryError",
    "FormatError",
    "GGUFError",
    "HeaderError",
    "InferError",
    "IntegrityError",
    "InvalidNameError",
    "MissingNameError",
    "ParamscopeError",
    "QuantConfigError",
    "ShapeMismatchError",
    "ShardIndexError",
    "SourceNotFoundError",
    "SpecError",
    "StrictLoadError",
    "TargetError",
    "UnknownFormatError",
    "UnsafePickleError",
    "UnsupportedDTypeError",
    "WriteError",
]


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]*@")
_QUERY = re.compile(r"(://[^\s?#]*)[?#]\S*?(?=:\s|\s|$)")


def shown(text: str | os.PathLike[str]) -> str:
    """``text`` with the secrets a URL may carry removed: ``user:password@`` and the query
    string (signatures, tokens) of every URL in it.

    Example:
        >>> shown("https://me:pw@host/m.safetensors?X-Amz-Signature=abc: not found")
        'https://host/m.safetensors?…: not found'
    """
    s = os.fspath(text)
    if "://" not in s:
        return s
    return _QUERY.sub(lambda m: m.group(1) + "?…", _USERINFO.sub(r"\1", s))


class ParamscopeError(Exception):
    """Base class of every error paramscope raises on purpose (bad input, refused data)."""


class ArgumentError(ParamscopeError, ValueError):
    """An argument or option has a value the function does not accept.

    Raised for a value out of range (``prune(model, amount=1.5)``), not one of the choices
    (``diagram(format="svg")``), missing where another argument needs it, or contradicting
    another argument (``structure="rows"`` with ``scope="global"``). The message names the
    argument and the value given, what it accepts, and the fix.

    Example:
        >>> isinstance(ArgumentError("amount=1.5: expected 0 <= amount < 1"), ValueError)
        True
    """


class ArgumentTypeError(ParamscopeError, TypeError):
    """An argument is of a type the function does not take (``prune(42)``).

    The message names the argument, the types it takes and the type found.

    Example:
        >>> isinstance(ArgumentTypeError("prune: target: found int"), TypeError)
        True
    """


class TargetError(ParamscopeError, ValueError):
    """What an operation was given to work on is of a kind it cannot take, or cannot be built.

    Raised for a model TARGET (``zoo:``, ``module:callable``, a ``config.json``) where values
    are needed (it builds on the meta device), a checkpoint where a module tree is needed, a
    module an option needs but a ParamDict was given (``bn_eval=True``, ``as_masks=True``), a
    module :meth:`ParamDict.from_module` cannot share (lazy or packed weights), and a model
    TARGET that cannot be built (an import that fails, a callable that returns no module, a
    config.json transformers cannot build). The message names the target and what takes it.

    Example:
        >>> isinstance(TargetError("zoo:gpt2: verify needs a checkpoint"), ValueError)
        True
    """


class EntryError(ParamscopeError, ValueError):
    """One entry (tensor) cannot go through the operation; the message names it.

    Raised for a shape that does not fit (a last dimension not divisible by the quantisation
    group size or by ``m`` of ``n:m`` pruning), values that cannot be used (NaN or Inf), a
    tensor with no values (on the meta device), a dtype the operation does not compute with,
    and a malformed quantisation record.

    Example:
        >>> str(EntryError("entry 'w': contains NaN values; cannot quantise"))
        "entry 'w': contains NaN values; cannot quantise"
    """


class StrictLoadError(ParamscopeError, ValueError):
    """``load_into(strict=True)`` refused to load; nothing was changed.

    Args:
        report: the :class:`~paramscope.LoadReport` of what was missing, unexpected or
            mismatched; its text is the message.
        message: the message, if not the report's text.

    Example:
        >>> err = StrictLoadError("missing: 'fc.bias'")
        >>> str(err), err.report
        ("missing: 'fc.bias'", "missing: 'fc.bias'")
    """

    def __init__(self, report: Any, message: str | None = None) -> None:
        self.report = report
        super().__init__(message if message is not None else str(report))


class WriteError(ParamscopeError):
    """A checkpoint cannot be written where or as asked; nothing was written.

    Raised for a destination in the way (a folder where the file goes, a file where the folder
    goes, a DCP checkpoint in a folder meant for safetensors shards), a header over the
    format's limit, and a writer that fails. The message names the destination and the fix.
    (Not an ``OSError``: those keep their errno, and the writers rename them to the
    destination; this one has no errno to keep.)

    Example:
        >>> str(WriteError("out: is a folder; give a file name"))
        'out: is a folder; give a file name'
    """


class SourceNotFoundError(ParamscopeError, FileNotFoundError):
    """A path given as a source does not exist."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(f"{shown(path)}: no such file or folder")


class UnknownFormatError(ParamscopeError):
    """The bytes of a file match no format paramscope reads."""


class FormatError(ParamscopeError):
    """A file breaks the rules of its format.

    Args:
        path: the file.
        problem: what is wrong, naming the entry, the expected and the found value.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{shown(self.path)}: {problem}")


class HeaderError(FormatError):
    """A safetensors header violates the format (length, JSON, dtype, offsets, sizes)."""


class GGUFError(FormatError):
    """A GGUF file (llama.cpp) breaks its format: magic, version, a metadata value type,
    a length or an offset past the end, misaligned or overlapping tensor data, a ggml type
    that does not exist, a split set that does not add up.

    Example:
        >>> str(GGUFError("m.gguf", "bad magic b'GGUX' (expected b'GGUF')"))
        "m.gguf: bad magic b'GGUX' (expected b'GGUF')"
    """


class ShardIndexError(FormatError):
    """An index file and its shards disagree, or the index names an unsafe path."""


class UnsafePickleError(FormatError):
    """A pickle asks for something beyond plain tensors and containers: it is refused unrun."""


class IntegrityError(FormatError):
    """Stored bytes do not match the hash recorded when they were written."""


class QuantConfigError(FormatError, ValueError):
    """A quantisation config (``config.json``'s ``quantization_config``,
    ``quantize_config.json``, a ``quantization_map``) contradicts the tensors it describes:
    bits or shapes that do not fit. The message names the entry and both values.

    Args:
        path: the checkpoint (file or folder).
        problem: the entry, what the config says and what the tensors say.

    Example:
        >>> err = QuantConfigError("ckpt/", "x.qweight: config.json says bits=4, its shape fits 8")
        >>> isinstance(err, ValueError), str(err)
        (True, 'ckpt/: x.qweight: config.json says bits=4, its shape fits 8')
    """


class UnsupportedDTypeError(ParamscopeError):
    """A dtype has no counterpart in the format or framework asked for."""


class InvalidNameError(ParamscopeError, ValueError):
    """A parameter name breaks the naming rules (non-empty dot-separated segments)."""


class DuplicateNameError(ParamscopeError, KeyError):
    """A name is already taken."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingNameError(ParamscopeError, KeyError):
    """A name is not present; the message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0])


class ShapeMismatchError(ParamscopeError, ValueError):
    """A value has another shape than the entry it should replace."""


class DTypeMismatchError(ParamscopeError, TypeError):
    """A value has another dtype than the entry it should replace."""


class SpecError(ArgumentError):
    """A model spec is invalid; the message starts with the place in the spec.

    Raised by :func:`paramscope.build` and :func:`paramscope.read_spec`.

    Args:
        path: where in the spec, e.g. ``layers[3].kwargs.out_features`` (``""``: the root).
        problem: what was expected and what was found.

    Example:
        >>> str(SpecError("layers[3].args[1]", 'expected int, got "ten"'))
        'layers[3].args[1]: expected int, got "ten"'
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path or 'spec'}: {problem}")


class InferError(TargetError):
    """A state dict does not describe a stack :func:`paramscope.infer_model` can rebuild.

    Args:
        entry: the first entry that breaks the pattern (``""`` for the dict as a whole).
        problem: why, and where there is one, the fix.

    Example:
        >>> str(InferError("0.weight", "3-D weight (8, 4, 3)"))
        "'0.weight': 3-D weight (8, 4, 3)"
    """

    def __init__(self, entry: str, problem: str) -> None:
        self.entry = entry
        self.problem = problem
        super().__init__(f"{entry!r}: {problem}" if entry else problem)
