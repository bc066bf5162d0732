"""paramscope: see, store, change and shrink deep-learning parameters.

This module is the one public contract of the package; the implementation lives in private
modules. Names are loaded on first use (PEP 562), so ``import paramscope`` costs almost nothing
and never imports torch, numpy or rich: functions that need them import them when called.

Example:
    >>> import paramscope
    >>> paramscope.parse_size("5GB")
    5000000000
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_getattr

if TYPE_CHECKING:
    from ._convert import ConvertReport as ConvertReport
    from ._convert import convert as convert
    from ._diff import DiffReport as DiffReport
    from ._diff import diff as diff
    from ._dtypes import DType as DType
    from ._enums import Format as Format
    from ._enums import Role as Role
    from ._enums import RoleSource as RoleSource
    from ._errors import ArgumentError as ArgumentError
    from ._errors import ArgumentTypeError as ArgumentTypeError
    from ._errors import DTypeMismatchError as DTypeMismatchError
    from ._errors import DuplicateNameError as DuplicateNameError
    from ._errors import EntryError as EntryError
    from ._errors import FormatError as FormatError
    from ._errors import GGUFError as GGUFError
    from ._errors import HeaderError as HeaderError
    from ._errors import InferError as InferError
    from ._errors import IntegrityError as IntegrityError
    from ._errors import InvalidNameError as InvalidNameError
    from ._errors import MissingNameError as MissingNameError
    from ._errors import ParamscopeError as ParamscopeError
    from ._errors import QuantConfigError as QuantConfigError
    from ._errors import ShapeMismatchError as ShapeMismatchError
    from ._errors import ShardIndexError as ShardIndexError
    from ._errors import SourceNotFoundError as SourceNotFoundError
    from ._errors import SpecError as SpecError
    from ._errors import StrictLoadError as StrictLoadError
    from ._errors import TargetError as TargetError
    from ._errors import UnknownFormatError as UnknownFormatError
    from ._errors import UnsafePickleError as UnsafePickleError
    from ._errors import UnsupportedDTypeError as UnsupportedDTypeError
    from ._errors import WriteError as WriteError
    from ._loading import load as load
    from ._manifest import Entry as Entry
    from ._manifest import Location as Location
    from ._manifest import Manifest as Manifest
    from ._manifest import infer_role as infer_role
    from ._names import apply_renames as apply_renames
    from ._names import compile_pattern as compile_pattern
    from ._names import did_you_mean as did_you_mean
    from ._names import validate_name as validate_name
    from ._paramdict import EntryMeta as EntryMeta
    from ._paramdict import ParamDict as ParamDict
    from ._targets import read_manifest as read_manifest
    from ._targets import resolve_target as resolve_target
    from ._units import parse_size as parse_size
    from ._verify import VerifyReport as VerifyReport
    from ._verify import verify as verify
    from .building import BuildResult as BuildResult
    from .building import build as build
    from .building import build_with_report as build_with_report
    from .building import infer_model as infer_model
    from .building import model_spec as model_spec
    from .building import zoo as zoo
    from .compress import QuantReport as QuantReport
    from .compress import ShrinkReport as ShrinkReport
    from .compress import SparsityReport as SparsityReport
    from .compress import SubnetReport as SubnetReport
    from .compress import Supernet as Supernet
    from .compress import count_subnet as count_subnet
    from .compress import dequantize as dequantize
    from .compress import prune as prune
    from .compress import quantize as quantize
    from .compress import shrink as shrink
    from .compress import subnet as subnet
    from .compress import trace_supernet as trace_supernet
    from .counting import Count as Count
    from .counting import FlopsNode as FlopsNode
    from .counting import FlopsReport as FlopsReport
    from .counting import Formula as Formula
    from .counting import Group as Group
    from .counting import Inspection as Inspection
    from .counting import LoraSpec as LoraSpec
    from .counting import MemoryEstimate as MemoryEstimate
    from .counting import ModuleNode as ModuleNode
    from .counting import Node as Node
    from .counting import Summary as Summary
    from .counting import SweepFit as SweepFit
    from .counting import SweepReport as SweepReport
    from .counting import _formulas as formulas  # noqa: F401 - public submodule (__all__ is derived)
    from .counting import count as count
    from .counting import estimate_memory as estimate_memory
    from .counting import flops as flops
    from .counting import formula_for as formula_for
    from .counting import group as group
    from .counting import inspect as inspect
    from .counting import measure_activations as measure_activations
    from .counting import register_packed as register_packed
    from .counting import summary as summary
    from .counting import sweep as sweep
    from .io import detect_format as detect_format
    from .io import save as save
    from .lifecycle import FreezeCounts as FreezeCounts
    from .lifecycle import InitReport as InitReport
    from .lifecycle import LoadReport as LoadReport
    from .lifecycle import bind as bind
    from .lifecycle import eval_frozen_bn as eval_frozen_bn
    from .lifecycle import find_ties as find_ties
    from .lifecycle import freeze as freeze
    from .lifecycle import init as init
    from .lifecycle import init_schemes as init_schemes
    from .lifecycle import load_into as load_into
    from .lifecycle import match as match
    from .lifecycle import register_scheme as register_scheme
    from .lifecycle import tie as tie
    from .lifecycle import trainable_only as trainable_only
    from .lifecycle import unfreeze as unfreeze
    from .lifecycle import untie as untie
    from .merging import AdapterInfo as AdapterInfo
    from .merging import FactorizeReport as FactorizeReport
    from .merging import LoraExtractReport as LoraExtractReport
    from .merging import LoraMergeReport as LoraMergeReport
    from .merging import MergeReport as MergeReport
    from .merging import StudentResult as StudentResult
    from .merging import build_student as build_student
    from .merging import factorize as factorize
    from .merging import lora_extract as lora_extract
    from .merging import lora_merge as lora_merge
    from .merging import merge as merge
    from .merging import read_adapter as read_adapter
    from .merging import read_merge_spec as read_merge_spec
    from .merging import save_student as save_student
    from .merging import student as student
    from .merging import student_with_report as student_with_report
    from .reporting import ChangeReport as ChangeReport
    from .reporting import SpectralReport as SpectralReport
    from .reporting import StatsReport as StatsReport
    from .reporting import diagram as diagram
    from .reporting import layer_changes as layer_changes
    from .reporting import report as report
    from .reporting import spectral_stats as spectral_stats
    from .reporting import weight_stats as weight_stats

_LAZY: dict[str, str] = {
    "DType": "._dtypes",
    "Format": "._enums",
    "Role": "._enums",
    "RoleSource": "._enums",
    "ArgumentError": "._errors",
    "ArgumentTypeError": "._errors",
    "DTypeMismatchError": "._errors",
    "DuplicateNameError": "._errors",
    "EntryError": "._errors",
    "FormatError": "._errors",
    "GGUFError": "._errors",
    "HeaderError": "._errors",
    "InferError": "._errors",
    "IntegrityError": "._errors",
    "QuantConfigError": "._errors",
    "InvalidNameError": "._errors",
    "MissingNameError": "._errors",
    "ParamscopeError": "._errors",
    "ShapeMismatchError": "._errors",
    "ShardIndexError": "._errors",
    "SourceNotFoundError": "._errors",
    "SpecError": "._errors",
    "StrictLoadError": "._errors",
    "TargetError": "._errors",
    "UnknownFormatError": "._errors",
    "UnsafePickleError": "._errors",
    "UnsupportedDTypeError": "._errors",
    "WriteError": "._errors",
    "Entry": "._manifest",
    "Location": "._manifest",
    "Manifest": "._manifest",
    "infer_role": "._manifest",
    "apply_renames": "._names",
    "compile_pattern": "._names",
    "did_you_mean": "._names",
    "validate_name": "._names",
    "EntryMeta": "._paramdict",
    "ParamDict": "._paramdict",
    "parse_size": "._units",
    "VerifyReport": "._verify",
    "diagram": ".reporting",
    "report": ".reporting",
    "SpectralReport": ".reporting",
    "StatsReport": ".reporting",
    "spectral_stats": ".reporting",
    "weight_stats": ".reporting",
    "ChangeReport": ".reporting",
    "layer_changes": ".reporting",
    "ConvertReport": "._convert",
    "convert": "._convert",
    "DiffReport": "._diff",
    "diff": "._diff",
    "verify": "._verify",
    "Count": ".counting",
    "Group": ".counting",
    "Inspection": ".counting",
    "Node": ".counting",
    "count": ".counting",
    "group": ".counting",
    "inspect": ".counting",
    "MemoryEstimate": ".counting",
    "LoraSpec": ".counting",
    "FlopsNode": ".counting",
    "FlopsReport": ".counting",
    "flops": ".counting",
    "SweepFit": ".counting",
    "SweepReport": ".counting",
    "sweep": ".counting",
    "measure_activations": ".counting",
    "Formula": ".counting",
    "formula_for": ".counting",
    "ModuleNode": ".counting",
    "Summary": ".counting",
    "estimate_memory": ".counting",
    "register_packed": ".counting",
    "summary": ".counting",
    "resolve_target": "._targets",
    "detect_format": ".io",
    "MergeReport": ".merging",
    "merge": ".merging",
    "read_merge_spec": ".merging",
    "AdapterInfo": ".merging",
    "LoraExtractReport": ".merging",
    "LoraMergeReport": ".merging",
    "lora_extract": ".merging",
    "lora_merge": ".merging",
    "read_adapter": ".merging",
    "FactorizeReport": ".merging",
    "factorize": ".merging",
    "QuantReport": ".compress",
    "SparsityReport": ".compress",
    "ShrinkReport": ".compress",
    "shrink": ".compress",
    "SubnetReport": ".compress",
    "Supernet": ".compress",
    "count_subnet": ".compress",
    "subnet": ".compress",
    "trace_supernet": ".compress",
    "dequantize": ".compress",
    "prune": ".compress",
    "quantize": ".compress",
    "load": "._loading",
    "read_manifest": "._targets",
    "save": ".io",
    "LoadReport": ".lifecycle",
    "FreezeCounts": ".lifecycle",
    "InitReport": ".lifecycle",
    "freeze": ".lifecycle",
    "eval_frozen_bn": ".lifecycle",
    "init_schemes": ".lifecycle",
    "init": ".lifecycle",
    "register_scheme": ".lifecycle",
    "trainable_only": ".lifecycle",
    "unfreeze": ".lifecycle",
    "BuildResult": ".building",
    "build": ".building",
    "build_with_report": ".building",
    "StudentResult": ".merging",
    "build_student": ".merging",
    "save_student": ".merging",
    "student": ".merging",
    "student_with_report": ".merging",
    "infer_model": ".building",
    "model_spec": ".building",
    "bind": ".lifecycle",
    "find_ties": ".lifecycle",
    "load_into": ".lifecycle",
    "match": ".lifecycle",
    "tie": ".lifecycle",
    "untie": ".lifecycle",
}

# Public submodules, loaded on first use too.
_SUBMODULES: dict[str, str] = {
    "formulas": ".counting._formulas",
    "zoo": ".building.zoo",
}


_lazy_getattr = lazy_getattr(__name__, globals(), _LAZY, _SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in ("build", "build_with_report"):
        # a spec may describe a student, whose reader paramscope.merging registers
        importlib.import_module(".merging", __name__)
    return _lazy_getattr(name)


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

#: The public names: derived from the lazy tables, so the three lists cannot drift apart
#: (tests/test_exports.py checks the ``TYPE_CHECKING`` block against them).
__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])
