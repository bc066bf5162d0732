"""The quantisation config of a checkpoint, found next to it or inside it (evidence first).

Looked for, in this order; the first found is the evidence (its file named as the source):

1. ``config.json`` in the checkpoint's folder: its ``quantization_config`` (transformers:
   GPTQ, AWQ, bitsandbytes, FP8, compressed-tensors, MXFP4, quanto ...; ``compression_config``
   is the older compressed-tensors name), or MLX's ``quantization`` ``{group_size, bits}``;
2. ``quantize_config.json`` (AutoGPTQ / GPTQModel);
3. ``quant_config.json`` (AutoAWQ);
4. ``quantization_map`` in the safetensors metadata, or ``quanto_qmap.json`` (optimum-quanto).

:func:`with_small_values` reads the one kind of tensor *values* a layout needs: small integer
entries that hold a shape or a state (bitsandbytes' ``*.quant_state.bitsandbytes__nf4|fp4``
JSON blob, compressed-tensors' ``*.weight_shape``), at most :data:`SMALL_LIMIT` bytes each,
only when the manifest may be quantised, through the same positioned reads as every reader.

A config that cannot be read (not JSON, too large) is not evidence: the layouts are then
recognised from names, and a note says why. A config whose fields have the wrong types
(``"bits": "four"``) is a :class:`~paramscope.QuantConfigError`.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._enums import Format
from .._errors import QuantConfigError
from .._manifest import Manifest
from .._quantlayouts import SMALL_VALUES_KEY, QuantConfig
from ._source import opened

__all__ = [
    "ConfigTooLarge",
    "find_quant_config",
    "parse_quant_config",
    "read_config_json",
    "with_small_values",
]

_MAX_BYTES = 10_000_000  # a config.json is a few kB; a hostile one is not read whole

_SIDE_FILES = (("quantize_config.json", "gptq"), ("quant_config.json", "awq"))


class ConfigTooLarge(Exception):
    """A config file past :data:`_MAX_BYTES`: not read (``args[0]`` is its size)."""


def read_config_json(path: Path) -> Any:
    """The JSON of a small config file next to a checkpoint, read whole only when it is small.

    The one reader of the side files (``config.json``, ``quantize_config.json``, ...) for the
    quantisation and mixture-of-experts evidence; each caller says in its own words why a file
    was not used.

    Args:
        path: the file.

    Returns:
        The parsed JSON, or ``None`` when there is no such file.

    Raises:
        ConfigTooLarge: the file is over 10 MB (a config is a few kB; a hostile one is not
            read whole).
        OSError, ValueError, RecursionError: it cannot be read or is not JSON.

    Example:
        >>> read_config_json(Path("no/such/config.json")) is None
        True
    """
    if not path.is_file():
        return None
    size = path.stat().st_size
    if size > _MAX_BYTES:
        raise ConfigTooLarge(size)
    return json.loads(path.read_bytes().decode("utf-8"))


def _read_json(path: Path, notes: list[str]) -> Any:
    try:
        return read_config_json(path)
    except ConfigTooLarge as exc:
        notes.append(f"{path.name}: {exc.args[0]:,} bytes, too large to be a config; not read")
    except (OSError, ValueError, RecursionError) as exc:
        notes.append(f"{path.name}: not readable as JSON ({exc}); quantisation not taken from it")
    return None


def _number(raw: Mapping[str, Any], keys: tuple[str, ...], where: str) -> float | None:
    for key in keys:
        if key in raw and raw[key] is not None:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise QuantConfigError(where, f"{key}: expected a number, found {v!r}")
            return int(v) if float(v).is_integer() else float(v)
    return None


def parse_quant_config(
    raw: Mapping[str, Any], source: str, method: str | None = None, where: str | None = None
) -> QuantConfig:
    """A :class:`QuantConfig` from a config dict as written.

    Args:
        raw: the ``quantization_config`` (or a side file's) dict.
        source: the file it came from, as the output names it.
        method: the method when the file implies it (``quantize_config.json``: gptq).
        where: the path for error messages (default ``source``).

    Returns:
        The config: method lower case, bits and group size when the dict says.

    Raises:
        QuantConfigError: bits or group size that are not numbers.

    Example:
        >>> c = parse_quant_config({"quant_method": "gptq", "bits": 4, "group_size": 128},
        ...                        "config.json")
        >>> c.method, c.bits, c.group_size, c.source
        ('gptq', 4, 128, 'config.json')
    """
    where = where or source
    qm = raw.get("quant_method")
    name = (qm if isinstance(qm, str) and qm else method or "unknown").lower()
    bits = _number(raw, ("bits", "w_bit", "weight_bits", "num_bits"), where)
    group = _number(raw, ("group_size", "q_group_size"), where)
    if name == "bitsandbytes" or (qm is None and ("load_in_4bit" in raw or "load_in_8bit" in raw)):
        name = "bitsandbytes"
        bits = 4 if raw.get("load_in_4bit") else 8 if raw.get("load_in_8bit") else bits
    elif name == "fp8" and bits is None:
        bits = 8
    elif name == "mxfp4":
        bits, group = bits or 4, group or 32
    return QuantConfig(
        method=name,
        bits=bits,
        group_size=None if group is None else int(group),
        source=source,
        raw=dict(raw),
    )


def find_quant_config(file: Path, fmt: Format, m: Manifest) -> tuple[QuantConfig | None, list[str]]:
    """The quantisation config of a checkpoint, if it has one (see the module docstring).

    Args:
        file: the resolved checkpoint file (a weights file or an ``*.index.json``).
        fmt: its format.
        m: its manifest (for the safetensors metadata).

    Returns:
        ``(config or None, notes on configs that could not be read)``.

    Raises:
        QuantConfigError: a config's bits or group size are not numbers.
    """
    notes: list[str] = []
    if fmt not in (Format.SAFETENSORS, Format.SHARDED, Format.TORCH):
        return None, notes
    folder = file.parent
    cfg = _read_json(folder / "config.json", notes)
    if isinstance(cfg, dict):
        where = str(folder / "config.json")
        for key in ("quantization_config", "compression_config"):
            q = cfg.get(key)
            if isinstance(q, dict) and q:
                if "quant_method" not in q and isinstance(cfg.get("quantization"), dict):
                    return parse_quant_config(q, "config.json", "mlx", where), notes
                return parse_quant_config(q, "config.json", None, where), notes
        q = cfg.get("quantization")
        if isinstance(q, dict) and q:
            return parse_quant_config(q, "config.json", "mlx", where), notes
    for name, method in _SIDE_FILES:
        side = _read_json(folder / name, notes)
        if isinstance(side, dict) and side:
            return parse_quant_config(side, name, method, str(folder / name)), notes
    qmap_text = m.metadata.get("quantization_map")
    qmap: Any = None
    source = "safetensors metadata"
    if isinstance(qmap_text, str):
        try:
            qmap = json.loads(qmap_text)
        except (ValueError, RecursionError) as exc:
            notes.append(f"safetensors metadata quantization_map: not JSON ({exc}); not used")
    if qmap is None:
        qmap = _read_json(folder / "quanto_qmap.json", notes)
        source = "quanto_qmap.json"
    if isinstance(qmap, dict) and qmap:
        return QuantConfig(method="quanto", source=source, raw=qmap), notes
    return None, notes


#: The most bytes :func:`with_small_values` reads for one entry (bnb's blobs are ~80-200 B).
SMALL_LIMIT = 4096

_SMALL_NAMES = re.compile(r"\.quant_state\.bitsandbytes__[a-z0-9]+$|\.weight_shape$")
_INT_CODES = {"U8": "B", "I8": "b", "U16": "H", "I16": "h", "U32": "I", "I32": "i",
              "U64": "Q", "I64": "q"}  # fmt: skip


def with_small_values(m: Manifest) -> Manifest:
    """``m`` with the values of its small shape/state entries in ``extra["values"]``.

    Entries named ``*.quant_state.bitsandbytes__<type>`` or ``*.weight_shape``, of an integer
    dtype, stored in at most :data:`SMALL_LIMIT` bytes, get their values as a list of ints
    (little endian, as safetensors stores them) in ``extra["values"]``
    (:data:`paramscope._quantlayouts.SMALL_VALUES_KEY`); larger ones, and entries without
    a location, are left as they are (a layout then says what it could not know).

    Args:
        m: the manifest of a checkpoint read from files.

    Returns:
        ``m`` itself when no entry qualifies, else a new manifest.
    """
    wanted = [n for n in m if _SMALL_NAMES.search(n)]
    if not wanted:
        return m
    values: dict[str, list[int]] = {}
    by_file: dict[str, list[tuple[str, int, int, str]]] = {}
    for n in wanted:
        e = m[n]
        code = _INT_CODES.get(e.dtype.value)
        loc = e.location
        if code is None or loc is None or e.tie is not None or e.nbytes > SMALL_LIMIT:
            continue
        if loc.member is not None or loc.length != e.nbytes:  # zip members: not read here
            continue
        by_file.setdefault(loc.file, []).append((n, loc.offset, loc.length, code))
    for file, items in by_file.items():
        with opened(file) as src:
            for n, offset, length, code in items:
                raw = src.read_at(offset, length)
                if len(raw) != length:
                    continue
                size = struct.calcsize(code)
                values[n] = list(struct.unpack(f"<{length // size}{code}", raw))
    if not values:
        return m
    entries = [
        replace(e, extra={**e.extra, SMALL_VALUES_KEY: values[e.name]}) if e.name in values else e
        for e in m.values()
    ]
    out = m._with(entries)
    out.notes = list(m.notes)
    return out
