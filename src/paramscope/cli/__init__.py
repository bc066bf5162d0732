"""The ``paramscope`` CLI entry point: maps errors to one stderr line and an exit code."""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI.

    Exit codes: 0 success, 2 bad input (a :class:`ParamscopeError`, a usage error, an
    unreadable file), 1 internal error. Set ``PARAMSCOPE_DEBUG=1`` for tracebacks.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code (also passed to ``sys.exit`` when run as a script).

    Example:
        >>> # main(["count", "model.safetensors", "--json"])
    """
    from .._errors import ParamscopeError
    from ._app import app

    debug = os.environ.get("PARAMSCOPE_DEBUG") == "1"
    try:
        app(args=argv, prog_name="paramscope")  # usage errors exit 2 inside (click convention)
    except SystemExit:
        sys.stdout.flush()
        raise
    except ParamscopeError as exc:
        if debug:
            raise
        return _fail(str(exc), 2)
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _fail(f"{where}{exc.strerror or exc}", 2)
    except Exception as exc:
        if debug:
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} (set PARAMSCOPE_DEBUG=1 for a traceback)",
            1,
        )
    return 0


def _fail(message: str, code: int) -> int:
    sys.stdout.flush()
    from .._text import printable

    sys.stderr.write(f"paramscope: error: {printable(message)}\n")  # one line, always
    raise SystemExit(code)
