"""Helpers shared by the tests: a fresh ``paramscope`` or Python process (and what it
imported), a small GPT-2, exact exception checks and pickle opcodes.

In-process CLI runs go through the ``cli`` fixture (conftest.py); a subprocess is for what
needs a fresh process: torch not imported yet, a crash that must not take pytest down, a
hang bounded by a timeout, an environment, ``python -m paramscope`` or the console script.

Pickle opcodes are assembled by hand (protocol 2) for what no Python object pickles into.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import torch

#: The environment of a subprocess: without ``PARAMSCOPE_DEBUG`` (errors stay one line, no
#: traceback) and without colour.
ENV = {k: v for k, v in os.environ.items() if k not in ("PARAMSCOPE_DEBUG", "FORCE_COLOR")}
ENV.update({"NO_COLOR": "1", "TERM": "dumb"})


def run_python(
    code: str,
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """``python -c CODE ARGS...`` in a fresh interpreter (stdout and stderr captured).

    Args:
        code: the program.
        args: its ``sys.argv[1:]``.
        cwd: the folder to run in (default: this one).
        env: variables set over :data:`ENV`.
        timeout: seconds before the run fails (``subprocess.TimeoutExpired``): a hang fails.
    """
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    exe: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m paramscope ARGS...`` (or ``exe ARGS...``, e.g. the console script) in a
    fresh process; for everything else the in-process ``cli`` fixture is faster.

    Args:
        args: the command line after ``paramscope``.
        cwd: the folder to run in (default: this one).
        env: variables set over :data:`ENV`.
        timeout: seconds before the run fails: a hang fails.
        exe: run this program instead of ``python -m paramscope``.
    """
    cmd = [os.fspath(exe)] if exe is not None else [sys.executable, "-m", "paramscope"]
    return subprocess.run(
        [*cmd, *map(str, args)],
        cwd=cwd,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_RESULT = "@@paramscope-test-result@@ "

#: Heavy packages the header-only paths must not import.
HEAVY = ("torch", "numpy", "rich", "typer", "safetensors", "transformers")


def without_torch(
    code: str, *args: str | os.PathLike[str], absent: Iterable[str] = ("torch",)
) -> Any:
    """Run ``code`` in a fresh interpreter, check that it imported none of ``absent`` (torch
    by default; :data:`HEAVY` for all of them), and return what it left in ``result``.

    ``code`` sees ``sys`` and its arguments in ``sys.argv[1:]``; it may print (a CLI run
    does); ``result`` must be JSON-able (``None`` when the code sets none).

    Args:
        code: the program.
        args: its arguments.
        absent: modules that must not be in ``sys.modules`` when it ends.

    Returns:
        The value of ``result``, through JSON.
    """
    absent = tuple(absent)
    probe = (
        "import sys\n"
        f"{code}\n"
        "import json as _json\n"
        f"_loaded = sorted(m for m in {absent!r} if m in sys.modules)\n"
        "sys.stdout.flush()\n"
        f"print({_RESULT!r} + _json.dumps([globals().get('result'), _loaded]))\n"
    )
    r = run_python(probe, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    last = [line for line in r.stdout.splitlines() if line.startswith(_RESULT)]
    assert len(last) == 1, r.stdout[-3000:]
    result, loaded = json.loads(last[0][len(_RESULT) :])
    assert loaded == [], f"imported {loaded}; stderr: {r.stderr[-2000:]}"
    return result


#: A tiny GPT-2, as ``zoo:gpt2`` / ``transformers.GPT2Config`` keyword arguments: 2 layers,
#: width 32, 4 heads, a vocabulary of 50, 16 positions, the LM head tied.
SMALL_GPT2: dict[str, int] = {
    "n_layer": 2,
    "n_embd": 32,
    "n_head": 4,
    "vocab_size": 50,
    "n_positions": 16,
}


def small_gpt2(seed: int | None = 0, **overrides: int) -> torch.nn.Module:
    """paramscope's ``zoo:gpt2`` (the HF ``GPT2LMHeadModel`` layout) at :data:`SMALL_GPT2`
    size, ``overrides`` applied, its weights drawn after ``torch.manual_seed(seed)``."""
    import torch

    from paramscope.building import zoo

    if seed is not None:
        torch.manual_seed(seed)
    return zoo.build("gpt2", **{**SMALL_GPT2, **overrides})


def small_gpt2_config(**overrides: object) -> dict[str, object]:
    """:data:`SMALL_GPT2` as an HF ``config.json`` (``architectures``, ``model_type``)."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **SMALL_GPT2, **overrides}


def raises_exactly(cls: type[Exception], fn: Callable[[], object], *fragments: str) -> Exception:
    """``fn()`` raises exactly ``cls`` (not a subclass), its message holding every fragment."""
    with pytest.raises(cls) as info:
        fn()
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))
    return info.value


def _s(text: str) -> bytes:
    """BINUNICODE: a str."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(n: int) -> bytes:
    """BININT: a 32-bit int."""
    return b"J" + struct.pack("<i", n)


def _g(module: str, name: str) -> bytes:
    """GLOBAL: ``module.name``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _t(*items: bytes) -> bytes:
    """MARK items TUPLE."""
    return b"(" + b"".join(items) + b"t"


Snapshot = dict[int, tuple[object, dict[str, object]]]


def snapshot(targets: list[object]) -> Snapshot:
    """The ``vars`` of every target that has them (classes, singletons a file could poison)."""
    return {id(o): (o, dict(vars(o))) for o in targets if hasattr(o, "__dict__")}


def restore(snap: Snapshot) -> list[str]:
    """Put every target back as it was; the names of what had changed."""
    changed = []
    for obj, before in snap.values():
        now = dict(vars(obj))
        diff = [k for k in before.keys() | now.keys() if before.get(k, now) is not now.get(k)]
        if not diff:
            continue
        changed += [f"{getattr(obj, '__qualname__', obj)}.{k}" for k in sorted(diff)]
        if isinstance(obj, type):
            for k in diff:
                if k in before:
                    type.__setattr__(obj, k, before[k])
                else:
                    type.__delattr__(obj, k)
        else:
            vars(obj).clear()
            vars(obj).update(before)
    return changed
