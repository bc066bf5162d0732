"""New parameters from other models: merging, LoRA merge / extract, low-rank factorisation,
and students initialised from a teacher's blocks (``student``; the one part that knows a
model's block stack, found as ``shrink(unit="layers")`` finds it).

Everything else here is architecture-free: tensors are matched by name, shape and dtype, never by a
per-model template. The file functions stream one tensor (per source) at a time, so memory is
bounded by the largest tensor, not the model; every operation returns a report with numbers
(cosines, sign conflicts, density kept, relative errors). Names load on first use (PEP 562):
importing this package never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._lazy import lazy_getattr
from ..building._spec import register_spec_kind

if TYPE_CHECKING:
    from ._factorize import FactorizeReport as FactorizeReport
    from ._factorize import factorize as factorize
    from ._lora import AdapterInfo as AdapterInfo
    from ._lora import LoraExtractReport as LoraExtractReport
    from ._lora import LoraMergeReport as LoraMergeReport
    from ._lora import lora_extract as lora_extract
    from ._lora import lora_merge as lora_merge
    from ._lora import read_adapter as read_adapter
    from ._merge import MergeReport as MergeReport
    from ._merge import merge as merge
    from ._merge import read_merge_spec as read_merge_spec
    from ._student import StudentResult as StudentResult
    from ._student import build_student as build_student
    from ._student import save_student as save_student
    from ._student import student as student
    from ._student import student_with_report as student_with_report

_LAZY: dict[str, str] = {
    "StudentResult": "._student",
    "build_student": "._student",
    "save_student": "._student",
    "student": "._student",
    "student_with_report": "._student",
    "MergeReport": "._merge",
    "merge": "._merge",
    "read_merge_spec": "._merge",
    "AdapterInfo": "._lora",
    "LoraExtractReport": "._lora",
    "LoraMergeReport": "._lora",
    "lora_extract": "._lora",
    "lora_merge": "._lora",
    "read_adapter": "._lora",
    "FactorizeReport": "._factorize",
    "factorize": "._factorize",
}

__getattr__ = lazy_getattr(__name__, globals(), _LAZY)


def _read_student(raw: dict[str, Any], folder: Path | None, device: Any) -> tuple[Any, Any]:
    """The ``"student"`` spec kind of :func:`paramscope.build`."""
    from ..building._spec_errors import SpecError
    from ._student import student_from_spec

    if device is not None:
        raise SpecError(
            "student",
            f"device={device!r}: a student is built where its teacher is; build it, then move it",
        )
    return student_from_spec(raw, folder)


register_spec_kind("student", _read_student)

__all__ = [
    "AdapterInfo",
    "FactorizeReport",
    "LoraExtractReport",
    "LoraMergeReport",
    "MergeReport",
    "StudentResult",
    "build_student",
    "factorize",
    "lora_extract",
    "lora_merge",
    "merge",
    "read_adapter",
    "read_merge_spec",
    "save_student",
    "student",
    "student_with_report",
]
