"""Building models: from a spec (:func:`build`), from a bare state dict (:func:`infer_model`),
and the built-in model zoo (:mod:`paramscope.building.zoo`).

Names load on first use (PEP 562): importing this package never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .._errors import InferError as InferError
    from .._errors import SpecError as SpecError
    from . import zoo as zoo
    from ._infer import infer_model as infer_model
    from ._spec import BuildResult as BuildResult
    from ._spec import build as build
    from ._spec import build_with_report as build_with_report
    from ._spec_export import model_spec as model_spec
    from ._spec_module import SpecModule as SpecModule
    from ._spec_read import read_spec as read_spec

_LAZY: dict[str, str] = {
    "InferError": ".._errors",
    "infer_model": "._infer",
    "BuildResult": "._spec",
    "SpecError": ".._errors",
    "SpecModule": "._spec_module",
    "build": "._spec",
    "build_with_report": "._spec",
    "read_spec": "._spec_read",
    "model_spec": "._spec_export",
}

__getattr__ = lazy_getattr(__name__, globals(), _LAZY, {"zoo": ".zoo"})

__all__ = [
    "BuildResult",
    "InferError",
    "SpecError",
    "SpecModule",
    "build",
    "build_with_report",
    "infer_model",
    "model_spec",
    "read_spec",
    "zoo",
]
