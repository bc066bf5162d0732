"""The ``paramscope`` CLI entry point: maps errors to one stderr line and an exit code."""

from __future__ import annotations

import os
import sys

__all__ = ["BAD_INPUT", "INTERNAL", "OK", "VERDICT", "main"]


#: Exit codes, one meaning each.
OK, VERDICT, BAD_INPUT, INTERNAL = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code.

    Exit codes, one meaning each: ``0`` success; ``1`` a negative verdict (``match``: the
    checkpoint would not load cleanly, ``diff``: the sources differ, ``verify``: the checkpoint
    is not sound); ``2`` bad input (a :class:`ParamscopeError`, a usage error, an unreadable or
    missing file); ``3`` an internal error (a bug: set ``PARAMSCOPE_DEBUG=1`` for the
    traceback). Errors are one line on stderr.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code (the console script and ``python -m paramscope`` exit with it).

    Example:
        >>> main(["count", "no/such/file.safetensors"])  # one line on stderr, then the code
        2
    """
    from .._errors import ParamscopeError
    from ._app import app

    debug = os.environ.get("PARAMSCOPE_DEBUG") == "1"
    try:
        app(args=argv, prog_name="paramscope")  # click exits itself; usage errors with 2
    except SystemExit as exc:
        sys.stdout.flush()
        code = exc.code
        return code if isinstance(code, int) else (OK if code is None else BAD_INPUT)
    except ParamscopeError as exc:
        if debug:
            raise
        return _fail(str(exc), BAD_INPUT)
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _fail(f"{where}{exc.strerror or exc}", BAD_INPUT)
    except Exception as exc:
        if debug:
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} (set PARAMSCOPE_DEBUG=1 for a traceback)",
            INTERNAL,
        )
    return OK


def _fail(message: str, code: int) -> int:
    sys.stdout.flush()
    from .._text import printable

    sys.stderr.write(f"paramscope: error: {printable(message)}\n")  # one line, always
    return code
