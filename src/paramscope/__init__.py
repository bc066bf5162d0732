"""paramscope: see, store, change and shrink deep-learning parameters.

The one public contract of the package; implementation lives in private modules. Importing
paramscope never imports torch: functions that need it import it when called.

Example:
    >>> import paramscope
    >>> m = paramscope.read_manifest  # headers only, no torch
"""

from ._dtypes import DType as DType
from ._enums import Format as Format
from ._enums import Role as Role
from ._enums import RoleSource as RoleSource
from ._errors import DTypeMismatchError as DTypeMismatchError
from ._errors import DuplicateNameError as DuplicateNameError
from ._errors import FormatError as FormatError
from ._errors import HeaderError as HeaderError
from ._errors import IntegrityError as IntegrityError
from ._errors import InvalidNameError as InvalidNameError
from ._errors import MissingNameError as MissingNameError
from ._errors import ParamscopeError as ParamscopeError
from ._errors import ShapeMismatchError as ShapeMismatchError
from ._errors import ShardIndexError as ShardIndexError
from ._errors import SourceNotFoundError as SourceNotFoundError
from ._errors import UnknownFormatError as UnknownFormatError
from ._errors import UnsafePickleError as UnsafePickleError
from ._errors import UnsupportedDTypeError as UnsupportedDTypeError
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
from ._units import parse_size as parse_size
from ._verify import VerifyReport as VerifyReport
from ._verify import verify as verify
from .count import Count as Count
from .count import Group as Group
from .count import Node as Node
from .count import count as count
from .count import group as group
from .io import detect_format as detect_format
from .io import load as load
from .io import read_manifest as read_manifest
from .io import save as save

__version__ = "0.1.0"

__all__ = [
    "Count",
    "DType",
    "DTypeMismatchError",
    "DuplicateNameError",
    "Entry",
    "EntryMeta",
    "Format",
    "FormatError",
    "Group",
    "HeaderError",
    "IntegrityError",
    "InvalidNameError",
    "Location",
    "Manifest",
    "MissingNameError",
    "Node",
    "ParamDict",
    "ParamscopeError",
    "Role",
    "RoleSource",
    "ShapeMismatchError",
    "ShardIndexError",
    "SourceNotFoundError",
    "UnknownFormatError",
    "UnsafePickleError",
    "UnsupportedDTypeError",
    "VerifyReport",
    "__version__",
    "apply_renames",
    "compile_pattern",
    "count",
    "detect_format",
    "did_you_mean",
    "group",
    "infer_role",
    "load",
    "parse_size",
    "read_manifest",
    "save",
    "validate_name",
    "verify",
]
