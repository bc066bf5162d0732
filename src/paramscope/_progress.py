"""A progress bar on stderr for long work (streaming convert, prune, quantize), torch-free.

Shared by the rooms that stream checkpoints (``compress/``, the checkpoint operations), so it
lives one floor below both. ``rich`` is imported only once a bar is actually shown.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["progress"]


@contextlib.contextmanager
def progress(
    total: int, label: str, *, enabled: bool | None = None
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for work that lasts over a second.

    Silent when ``enabled`` is False, or (by default) when stderr is not a terminal.

    Args:
        total: units of work (bytes).
        label: what is being done.
        enabled: force on or off; ``None`` shows it only on a terminal.

    Yields:
        ``advance(n)``.

    Example:
        >>> with progress(100, "copy", enabled=False) as advance:
        ...     advance(100)
    """
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        yield lambda n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    start = time.monotonic()
    bar: Any = None
    task: Any = None
    done = 0

    def advance(n: int) -> None:
        nonlocal bar, task, done
        done += n
        if bar is None and time.monotonic() - start > 1.0:
            from rich.console import Console

            bar = Progress(
                TextColumn(label),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            bar.start()
            task = bar.add_task(label, total=total, completed=done)
        elif bar is not None:
            bar.update(task, completed=done)

    try:
        yield advance
    finally:
        if bar is not None:
            bar.stop()
