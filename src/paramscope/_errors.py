"""The one exception hierarchy of paramscope.

Every error a user can cause (a missing file, a malformed header, a refused pickle, a name
that does not exist) is a :class:`ParamscopeError`. The CLI turns it into one line on stderr
and exit code 2; anything else is a bug and exits 1.

Messages follow one rule: name the file or key, what was expected, what was found, and where
there is one, the fix.
"""

from __future__ import annotations

import os

__all__ = [
    "DTypeMismatchError",
    "DuplicateNameError",
    "FormatError",
    "HeaderError",
    "IntegrityError",
    "InvalidNameError",
    "MissingNameError",
    "ParamscopeError",
    "ShapeMismatchError",
    "ShardIndexError",
    "SourceNotFoundError",
    "UnknownFormatError",
    "UnsafePickleError",
    "UnsupportedDTypeError",
]


class ParamscopeError(Exception):
    """Base class of every error paramscope raises on purpose (bad input, refused data)."""


class SourceNotFoundError(ParamscopeError, FileNotFoundError):
    """A path given as a source does not exist."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(f"{os.fspath(path)}: no such file or folder")


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
        super().__init__(f"{self.path}: {problem}")


class HeaderError(FormatError):
    """A safetensors header violates the format (length, JSON, dtype, offsets, sizes)."""


class ShardIndexError(FormatError):
    """An index file and its shards disagree, or the index names an unsafe path."""


class UnsafePickleError(FormatError):
    """A pickle asks for something beyond plain tensors and containers: it is refused unrun."""


class IntegrityError(FormatError):
    """Stored bytes do not match the hash recorded when they were written."""


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
