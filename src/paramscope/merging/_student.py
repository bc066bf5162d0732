"""Students from a teacher: the parameter side of distillation.

:func:`student` makes a model of the teacher's family with fewer blocks, initialised from the
teacher's chosen blocks, its embeddings and its head, as DistilBERT was initialised from BERT
(every other layer of ``bert-base``, without the pooler and the token-type embeddings).

The block stack is found as :func:`paramscope.shrink` finds it (``unit="layers"``): an
``nn.ModuleList`` / ``nn.Sequential`` of at least two blocks of one class with identical
parameters. When the teacher holds a ``config`` whose layer count (``num_hidden_layers``,
``n_layer`` …) equals the stack's length (zoo models, transformers models), the student is a
new model of the teacher's class built from a copy of that config with the new count (and
``layer_types`` sliced), on the meta device, and the teacher's tensors are then put in it by
name: so the student *is* a model of the family, the one its config describes. A teacher
without such a config is copied with only the kept blocks in its stack.

Weights are copies (the teacher is never changed); a meta teacher gives a meta student
(counting a student of a 70B model costs nothing). Ties inside the kept part stay ties.

``width`` makes the student narrower too (a config teacher only): the config copy gets the
new sizes (``hidden_size``, ``intermediate_size``, head counts, or all of them times a
ratio) and the teacher's tensors are sliced by consistent weight selection (Xu et al.,
"Initializing Models with Larger Ones", ICLR 2024): each narrowed dimension, recognised by
its teacher and student sizes, keeps the same indices in every tensor that has it, so what
flows between layers stays aligned; by default the first k (whole heads, since heads keep
their width), a fused q|k|v axis chunk by chunk; ``select="l1"`` keeps each block's MLP
units of largest L1 norm instead. A size that two dimensions share but slice differently
is refused rather than guessed.

``drop`` removes submodules DistilBERT-style: each is replaced by a stand-in without
parameters (an embedding by zeros, anything else by ``None``), so the forward still runs.

A student written with :func:`save_student` is a ``.safetensors`` file and a JSON spec beside
it, which :func:`paramscope.build` (and :func:`build_student`) reads to rebuild the student
with its weights. For a teacher made of plain ``torch.nn`` layers the spec is an ordinary
layer spec; for a zoo / transformers teacher it has a ``"student"`` entry naming the teacher
TARGET and the selection (a layer spec names ``torch.nn`` classes only), read by
:func:`student_from_spec`, which :mod:`paramscope.merging` registers with the building floor
as the ``"student"`` spec kind.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ArgumentError, ArgumentTypeError, TargetError

if TYPE_CHECKING:
    import torch

__all__ = ["StudentResult", "build_student", "save_student", "student", "student_with_report"]

#: ``drop="distilbert"``: what DistilBERT does not have that BERT has.
DISTILBERT_DROP = ("pooler", "token_type_embeddings")


@dataclass
class StudentResult:
    """A student and what it was made from.

    Attributes:
        model: the student.
        teacher: the teacher's TARGET string, or its class name when given as a module.
        args: the TARGET's arguments (zoo overrides …), for rebuilding it.
        stack: the name of the block stack (``encoder.layer``).
        layers: the teacher's block indices the student's blocks come from, in order.
        teacher_blocks: how many blocks the teacher has.
        drop: the submodules replaced by stand-ins without parameters.
        params_teacher: unique parameters of the teacher.
        params_student: unique parameters of the student.
        config: the student's config changes (``{"num_hidden_layers": 6}``); empty when the
            student was copied without a config.
        notes: what the user should know (how it was built, what was written).
        from_target: ``teacher`` is a TARGET string that rebuilds the teacher (else a class
            name).
        width: the config sizes the student was narrowed to (``{"hidden_size": 384, …}``);
            empty when it keeps the teacher's width.
        select: how the kept indices of each narrowed dimension were chosen (``"first"``:
            the first k, the same in every tensor).
    """

    model: torch.nn.Module
    teacher: str
    args: dict[str, Any]
    stack: str
    layers: list[int]
    teacher_blocks: int
    drop: list[str] = field(default_factory=list)
    params_teacher: int = 0
    params_student: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    from_target: bool = False
    width: dict[str, int] = field(default_factory=dict)
    select: str = "first"

    def spec(self, weights: str | None = None) -> dict[str, Any]:
        """The JSON spec that :func:`build_student` rebuilds this student from.

        Args:
            weights: the weights file, as the spec's ``"load"`` (relative to the spec's folder).

        Returns:
            ``{"student": {"teacher", "args", "layers", "drop"[, "width", "select"]},
            "load": weights}``; for a teacher of plain ``torch.nn`` layers, an ordinary build
            spec with ``"load"``.

        Raises:
            TargetError: the teacher was given as a module of classes a spec cannot name
                (pass it as a TARGET string to get a spec).

        Example:
            >>> import torch
            >>> block = lambda: torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
            >>> t = torch.nn.Sequential(*[block() for _ in range(4)])
            >>> spec = student_with_report(t, every=2).spec("s.safetensors")
            >>> len(spec["layers"]), spec["layers"][1]["layers"][0], spec["load"]
            (2, {'type': 'Linear', 'in_features': 2, 'out_features': 2}, 's.safetensors')
        """
        try:
            from ..building._spec_export import model_spec

            out = model_spec(self.model)
        except TargetError:
            if not self.from_target:  # a module, not a TARGET: nothing names its class
                raise TargetError(
                    f"student: the teacher is a {self.teacher} module, which a spec cannot "
                    "name; pass the teacher as a TARGET (zoo:NAME, package.module:callable, "
                    "config.json) to get a spec"
                ) from None
            out = {
                "description": f"student of {self.teacher}: blocks {self.layers} of {self.stack}",
                "student": {
                    "teacher": self.teacher,
                    "args": dict(self.args),
                    "layers": list(self.layers),
                    "drop": list(self.drop),
                },
            }
            if self.width:
                out["student"]["width"] = dict(self.width)
                out["student"]["select"] = self.select
                out["description"] += f", narrowed to {self.width}"
        if weights is not None:
            out["load"] = weights
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``paramscope student --json`` prints).

        Returns:
            Every attribute but the model.
        """
        return {
            "teacher": self.teacher,
            "args": dict(self.args),
            "stack": self.stack,
            "layers": list(self.layers),
            "teacher_blocks": self.teacher_blocks,
            "drop": list(self.drop),
            "params_teacher": self.params_teacher,
            "params_student": self.params_student,
            "config": dict(self.config),
            "width": dict(self.width),
            "select": self.select,
            "notes": list(self.notes),
        }

    def to_text(self, width: int | None = None) -> str:
        """The human form ``paramscope student`` prints.

        Args:
            width: unused (the same signature as every report's ``to_text``).

        Returns:
            A few lines, without a final newline.
        """
        from .._text import printable
        from .._units import format_count, format_short_count

        def n(x: int) -> str:
            return f"{format_count(x)} ({format_short_count(x)})"

        ratio = self.params_student / self.params_teacher if self.params_teacher else 0.0
        lines = [
            f"teacher  {self.teacher}: {n(self.params_teacher)} parameters, "
            f"{self.teacher_blocks} blocks in {self.stack}",
            f"student  {n(self.params_student)} parameters ({ratio:.1%} of the teacher), "
            f"blocks {', '.join(map(str, self.layers))}",
        ]
        if self.drop:
            lines.append(f"dropped  {', '.join(self.drop)}")
        if self.width:
            lines.append(
                "width    "
                + ", ".join(f"{k}={v}" for k, v in self.width.items())
                + (
                    " (select l1: MLP units by L1 norm in each block, the rest the first k)"
                    if self.select == "l1"
                    else " (select first: the first k, the same indices in every tensor)"
                )
            )
        if self.config:
            lines.append("config   " + ", ".join(f"{k}={v}" for k, v in self.config.items()))
        lines += [f"note     {x}" for x in self.notes]
        return "\n".join(printable(x) for x in lines)


# ------------------------------------------------------------------------------ helpers
def _unique_params(model: torch.nn.Module) -> int:
    return sum({id(p): p.numel() for p in model.parameters()}.values())


def _indices(n: int, layers: Sequence[int] | None, every: int | None) -> list[int]:
    if (layers is None) == (every is None):
        raise ArgumentError("student: give exactly one of layers=[indices] and every=k")
    if every is not None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ArgumentError(f"student: every={every!r}: expected an int >= 1")
        return list(range(0, n, every))
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise ArgumentTypeError(
            f"student: layers={layers!r}: expected a list of block indices such as [0, 2, 4]"
        )
    out = list(layers)
    bad = [i for i in out if not isinstance(i, int) or isinstance(i, bool)]
    if bad:
        raise ArgumentTypeError(f"student: layers: {bad[0]!r} is not an int block index")
    if not out:
        raise ArgumentError("student: layers=[]: keep at least one block")
    outside = [i for i in out if not 0 <= i < n]
    if outside:
        raise ArgumentError(
            f"student: layers: block {outside[0]} does not exist; the teacher has {n} blocks "
            f"(0..{n - 1})"
        )
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ArgumentError(
            f"student: layers={out}: expected strictly increasing block indices (each once, "
            "in the teacher's order)"
        )
    return out


def _stack(model: torch.nn.Module) -> tuple[str, Any]:
    from ..compress._stacks import find_stacks  # the stack `shrink` removes layers of

    found, refused = find_stacks(model)
    if not found:
        why = f" ({refused[0][1]})" if refused else ""
        raise TargetError(
            f"student: the teacher ({type(model).__name__}) has no stack of identical blocks "
            f"(an nn.ModuleList / nn.Sequential of two or more){why}"
        )
    if len(found) > 1:
        names = ", ".join(f.name or "the model" for f in found)
        raise TargetError(
            f"student: the teacher ({type(model).__name__}) has {len(found)} block stacks "
            f"({names}); a student keeps blocks of one stack"
        )
    return found[0].name, found[0].stack


def _teacher_config(model: torch.nn.Module, n: int) -> Any:
    """The teacher's config when its layer count is the stack's length ``n``, else None."""
    from ..compress._stacks import LAYER_COUNT_KEYS

    config = model.__dict__.get("config")
    if config is None or not any(getattr(config, k, None) == n for k in LAYER_COUNT_KEYS):
        return None
    return config


def _new_config(
    model: torch.nn.Module, n: int, keep: list[int], extra: Mapping[str, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """A copy of the teacher's config describing ``len(keep)`` blocks (and the ``extra``
    changes: widths), and what changed; or ``(None, {})`` when the teacher has no config whose
    layer count is the stack's length."""
    from ..compress._stacks import LAYER_COUNT_KEYS

    config = _teacher_config(model, n)
    if config is None:
        return None, {}
    changes: dict[str, Any] = {k: len(keep) for k in LAYER_COUNT_KEYS if hasattr(config, k)}
    changes = {k: v for k, v in changes.items() if getattr(config, k) == n}
    changes.update(extra or {})
    types = getattr(config, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == n:
        changes["layer_types"] = type(types)(types[i] for i in keep)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        try:
            return dataclasses.replace(config, **changes), changes
        except (TypeError, ValueError) as exc:
            raise TargetError(
                f"student: {type(config).__name__} refuses {changes}: {exc}"
            ) from None
    new = copy.deepcopy(config)
    for k, v in changes.items():
        setattr(new, k, v)
    return new, changes


def _from_config(teacher: torch.nn.Module, config: Any) -> torch.nn.Module | None:
    """The teacher's class built from ``config`` on the meta device, or None if it cannot be."""
    import torch

    from ..building.zoo._meta import skip_init_on_meta

    try:
        with torch.device("meta"), skip_init_on_meta():
            return type(teacher)(config)
    except Exception:  # a class whose constructor takes something else: copy instead
        return None


def _copied(teacher: torch.nn.Module, name: str, stack: Any, keep: list[int]) -> torch.nn.Module:
    """A deep copy of the teacher with only the kept blocks in its stack (renumbered)."""
    from ..compress._stacks import reindex, renumbering

    keys = list(stack._modules)
    saved = stack._modules
    renumber = renumbering(keys)
    stack._modules = type(saved)(
        ((renumber(pos) if renumber else keys[i]), saved[keys[i]]) for pos, i in enumerate(keep)
    )
    try:
        new = copy.deepcopy(teacher)
    finally:
        stack._modules = saved
    blocks = list(new.get_submodule(name)) if name else list(new)
    for pos, (i, block) in enumerate(zip(keep, blocks, strict=True)):
        reindex(block, i, pos)  # as shrink(unit="layers") renumbers them
    return new


def _fill(
    student: torch.nn.Module, teacher: torch.nn.Module, name_map: Any, narrow: Any = None
) -> None:
    """Put copies of the teacher's tensors in the student, by mapped name, keeping ties;
    ``narrow(name, teacher tensor, student shape)`` slices a teacher tensor whose shape
    differs (a narrower student)."""
    import torch

    t_params = dict(teacher.named_parameters(remove_duplicate=False))
    t_buffers = dict(teacher.named_buffers(remove_duplicate=False))
    made: dict[int, Any] = {}
    for mod_name, mod in student.named_modules(remove_duplicate=False):
        for kind, table, source in (
            ("parameter", mod._parameters, t_params),
            ("buffer", mod._buffers, t_buffers),
        ):
            for attr, value in list(table.items()):
                if value is None:
                    continue
                name = f"{mod_name}.{attr}" if mod_name else attr
                src = source.get(name_map(name))
                if src is not None and narrow is not None and src.shape != value.shape:
                    cut = narrow(name, src.detach(), tuple(value.shape), name_map(name))
                    src = src if cut is None else cut
                if src is None or tuple(src.shape) != tuple(value.shape):
                    found = "nothing" if src is None else f"shape {tuple(src.shape)}"
                    raise TargetError(
                        f"student: the student's {kind} {name!r} {tuple(value.shape)} has no "
                        f"counterpart in the teacher ({name_map(name)!r}: {found})"
                    )
                if id(value) not in made:
                    data = src.detach().clone(memory_format=torch.contiguous_format)
                    if kind == "parameter":
                        data = torch.nn.Parameter(data, requires_grad=src.requires_grad)
                    made[id(value)] = data
                table[attr] = made[id(value)]


def _stand_in(mod: Any) -> Any:
    import torch

    class DroppedEmbedding(torch.nn.Module):
        """A dropped embedding: adds nothing (zeros), holds no parameters."""

        def __init__(self, dim: int, dtype: torch.dtype) -> None:
            super().__init__()
            self.embedding_dim = dim
            self.dtype = dtype

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return ids.new_zeros((*ids.shape, self.embedding_dim), dtype=self.dtype)

        def extra_repr(self) -> str:
            return f"dim={self.embedding_dim} (dropped: zeros)"

    class Dropped(torch.nn.Module):
        """A dropped submodule: returns None, holds no parameters."""

        def forward(self, *args: Any, **kwargs: Any) -> None:
            return None

        def extra_repr(self) -> str:
            return "dropped"

    if isinstance(mod, torch.nn.Embedding):
        return DroppedEmbedding(mod.embedding_dim, mod.weight.dtype)
    return Dropped()


def _drop(model: torch.nn.Module, drop: Sequence[str]) -> list[str]:
    """Replace every submodule named (full name or last part) by a stand-in; the names."""
    names = [n for n, _ in model.named_modules() if n]
    dropped: list[str] = []
    for pattern in drop:
        hits = [n for n in names if n == pattern or n.rsplit(".", 1)[-1] == pattern]
        hits = [n for n in hits if not any(n.startswith(d + ".") for d in dropped)]
        if not hits:
            from .._names import missing

            raise missing(pattern, names, what="submodule to drop")
        for n in hits:
            owner, _, attr = n.rpartition(".")
            parent = model.get_submodule(owner) if owner else model
            setattr(parent, attr, _stand_in(getattr(parent, attr)))
            dropped.append(n)
    return dropped


def _resolve(teacher: Any, args: Mapping[str, Any] | None, meta: bool) -> tuple[Any, str]:
    import torch

    if isinstance(teacher, torch.nn.Module):
        if args:
            raise ArgumentError("student: args= applies to a TARGET string, not a module")
        return teacher, type(teacher).__name__
    if not isinstance(teacher, (str, os.PathLike)):
        raise ArgumentTypeError(
            f"student: teacher: expected a torch.nn.Module or a TARGET (zoo:NAME, "
            f"package.module:callable, config.json), found {type(teacher).__name__}"
        )
    from .._targets import resolve_target

    model = resolve_target(teacher, dict(args or {}), meta=meta)
    if isinstance(model, str):
        raise TargetError(
            f"student: {model} is a checkpoint; a teacher is a model TARGET (zoo:NAME, "
            "package.module:callable, config.json), or a module with the weights loaded"
        )
    return model, os.fspath(teacher)


# ------------------------------------------------------------------------------ width
#: Config keys ``width`` may change, by role (the first present key of a role is used for a
#: ratio; a mapping may name any of them).
_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
_INTER_KEYS = ("intermediate_size", "n_inner", "ffn_dim")
_HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads")
_KV_KEYS = ("num_key_value_heads",)
WIDTH_KEYS = _HIDDEN_KEYS + _INTER_KEYS + _HEAD_KEYS + _KV_KEYS
#: Modules whose output is q|k|v concatenated (GPT-2's ``c_attn`` …): that axis is 3 chunks.
_FUSED_QKV = ("c_attn", "qkv", "qkv_proj", "query_key_value", "Wqkv")
#: ``select``: how the kept indices of a shrunk dimension are chosen.
SELECTIONS = ("first", "l1")


@dataclass(frozen=True)
class _Dim:
    """A dimension that shrinks: its teacher and student sizes, what it is, and in how many
    equal chunks (q|k|v) it is sliced."""

    label: str
    old: int
    new: int
    chunks: int = 1
    role: str = ""
    select: str = "first"

    def runs(self) -> tuple[tuple[int, int], ...]:
        """``(start, length)`` of the kept indices: the first ``new / chunks`` of each chunk."""
        step, keep = self.old // self.chunks, self.new // self.chunks
        return tuple((c * step, keep) for c in range(self.chunks))


def _role_key(config: Any, keys: tuple[str, ...]) -> str | None:
    """The config's key for a role: its own field first (GPT-2's ``n_embd``), an alias of
    transformers' ``attribute_map`` (``hidden_size``) only when there is no such field."""
    aliases = getattr(config, "attribute_map", None) or {}
    present = [k for k in keys if _has(config, k)]
    return next((k for k in present if k not in aliases), present[0] if present else None)


def _has(config: Any, key: str) -> bool:
    try:
        getattr(config, key)
    except AttributeError:
        return False
    return True


def _width_changes(
    config: Any, width: Any, fused: bool
) -> tuple[dict[str, int], list[_Dim], list[str]]:
    """The config changes ``width`` asks for, the dimensions that shrink, and notes.

    Raises one-line :class:`ArgumentError` for a bad ratio, an unknown key, a size larger than
    the teacher's, heads that do not divide, or a head width that changes.
    """
    cls = type(config).__name__
    present = [k for k in WIDTH_KEYS if _has(config, k)]
    hidden_k = _role_key(config, _HIDDEN_KEYS)
    inter_k = _role_key(config, _INTER_KEYS)
    head_k = _role_key(config, _HEAD_KEYS)
    kv_k = _role_key(config, _KV_KEYS)
    if hidden_k is None or getattr(config, hidden_k) is None:
        raise ArgumentError(
            f"student: width: the teacher's config ({cls}) has no hidden size "
            f"({', '.join(_HIDDEN_KEYS)}); narrow it with paramscope.shrink or paramscope.subnet"
        )
    H = int(getattr(config, hidden_k))
    inter_raw = getattr(config, inter_k) if inter_k else None
    I = int(inter_raw) if inter_raw is not None else (4 * H if inter_k else None)  # noqa: E741
    nh = int(getattr(config, head_k)) if head_k else None
    kv_raw = getattr(config, kv_k) if kv_k else None
    nkv = int(kv_raw) if kv_raw is not None else nh
    hd_attr = getattr(config, "head_dim", None)
    fixed_hd = isinstance(hd_attr, int) and not isinstance(hd_attr, bool)
    hd = hd_attr if fixed_hd else (H // nh if nh else None)
    teacher = {hidden_k: H, inter_k: I, head_k: nh, kv_k: nkv}
    teacher.pop(None, None)  # type: ignore[call-overload]

    changes: dict[str, int] = {}
    if isinstance(width, Mapping):
        if not width:
            raise ArgumentError("student: width={}: name at least one size, e.g. hidden_size")
        roles: dict[str, str] = {}
        for key, value in width.items():
            if not isinstance(key, str) or not _has(config, key):
                raise ArgumentError(
                    f"student: width: unknown key {key!r}; {cls} has "
                    f"{', '.join(present) or 'no width keys'}"
                )
            if key not in WIDTH_KEYS:
                raise ArgumentError(
                    f"student: width: {key!r} is not a width; expected one of {', '.join(present)}"
                )
            group = next(g for g in (_HIDDEN_KEYS, _INTER_KEYS, _HEAD_KEYS, _KV_KEYS) if key in g)
            if group[0] in roles:
                raise ArgumentError(
                    f"student: width: {roles[group[0]]!r} and {key!r} name the same size; give one"
                )
            roles[group[0]] = key
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ArgumentError(f"student: width: {key}={value!r}: expected an int >= 1")
            old = teacher[_role_key(config, group)]  # type: ignore[index]
            if value > old:
                raise ArgumentError(
                    f"student: width: {key}={value} is larger than the teacher's {old}; a "
                    "student is not wider than its teacher"
                )
            if value != old or getattr(config, key) is None:
                changes[key] = value
        new = {
            _role_key(config, g): width[roles[g[0]]]
            for g in (_HIDDEN_KEYS, _INTER_KEYS, _HEAD_KEYS, _KV_KEYS)
            if g[0] in roles
        }
    else:
        if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0 < width <= 1:
            raise ArgumentError(
                f"student: width={width!r}: expected a ratio in (0, 1] or a mapping of config "
                "keys to sizes, e.g. {'hidden_size': 384}"
            )
        new = {}
        for key, old in teacher.items():
            if old is None or (key == kv_k and kv_raw is None):
                continue
            exact = old * width
            if abs(exact - round(exact)) > 1e-9 or round(exact) < 1:
                raise ArgumentError(
                    f"student: width={width}: {key} {old} x {width} = {exact:g} is not a whole "
                    "number; choose a ratio that divides the sizes (heads keep their width)"
                )
            new[key] = round(exact)
            if new[key] != old and not (key == inter_k and inter_raw is None):
                changes[key] = new[key]
    H2 = new.get(hidden_k, H)
    nh2 = new.get(head_k, nh) if head_k else None
    nkv2 = new.get(kv_k, nkv if kv_raw is not None else nh2) if kv_k else nh2
    if inter_k is None:
        I2 = None
    elif inter_k in new:
        I2 = new[inter_k]
    else:
        I2 = int(inter_raw) if inter_raw is not None else 4 * H2
    notes: list[str] = []
    if nh is not None and nh2 is not None and not fixed_hd:
        if H2 % nh2:
            raise ArgumentError(f"student: width: {head_k}={nh2} does not divide {hidden_k}={H2}")
        if H2 // nh2 != hd:
            hint = f": give {head_k}={H2 // hd}" if hd and H2 % hd == 0 else ""
            raise ArgumentError(
                f"student: width: {hidden_k}={H2} with {head_k}={nh2} makes heads of "
                f"{H2 // nh2}, the teacher's are {hd}; a student keeps the head width{hint}"
            )
    if kv_k and nh2 is not None and nkv2 is not None:
        if nh2 % nkv2:
            raise ArgumentError(
                f"student: width: {kv_k}={nkv2} does not divide {head_k}={nh2}"
                + ("" if kv_k in new else f"; give {kv_k} too")
            )
        if nh is not None and nkv and nh2 // nkv2 != nh // nkv:
            notes.append(
                f"query heads per key/value head: {nh // nkv} in the teacher, "
                f"{nh2 // nkv2} in the student"
            )
    dims = [_Dim(hidden_k, H, H2)]
    if I is not None and I2 is not None:
        dims.append(_Dim(inter_k or "", I, I2, role="intermediate"))
    if nh is not None and nh2 is not None and hd:
        dims.append(_Dim(f"{head_k} x head width", nh * hd, nh2 * hd))
        if fused:
            dims.append(
                _Dim(f"fused q|k|v (3 x {head_k} x head width)", 3 * nh * hd, 3 * nh2 * hd, 3)
            )
        if kv_k and nkv is not None and nkv2 is not None:
            dims.append(_Dim(f"{kv_k} x head width", nkv * hd, nkv2 * hd))
    return changes, [d for d in dims if d.new != d.old], notes


def _l1_units(
    dim: _Dim, block: str, params: Mapping[str, torch.Tensor], shapes: Mapping[str, Any]
) -> list[int]:
    """``select="l1"``: the ``dim.new`` intermediate units of one block with the largest L1
    norm of their weights (every teacher tensor of the block with that axis, summed over its
    other axes), in the teacher's order; ties keep the lower index."""
    import torch

    score = torch.zeros(dim.old, dtype=torch.float64)
    for tname, shape in shapes.items():
        t = params.get(tname)
        if t is None or not tname.startswith(block) or t.dim() != len(shape):
            continue
        if t.is_meta:
            raise ArgumentError(
                "student: select='l1' needs the teacher's values; this teacher is on the meta "
                "device (build it with meta=False)"
            )
        axes = [
            a
            for a, (o, n) in enumerate(zip(t.shape, shape, strict=True))
            if (o, n) == (dim.old, dim.new)
        ]
        if len(axes) > 1:
            raise ArgumentError(
                f"student: select='l1': {tname!r} has {dim.label} ({dim.old} -> {dim.new}) on "
                "more than one axis; choose sizes that tell them apart or select='first'"
            )
        if axes:
            x = t.detach().abs().to(torch.float64).movedim(axes[0], 0)
            score += x.reshape(dim.old, -1).sum(1).cpu()
    order = torch.sort(score, descending=True, stable=True).indices[: dim.new]
    return sorted(order.tolist())


def _narrower(
    dims: list[_Dim],
    params: Mapping[str, torch.Tensor] | None = None,
    shapes: Mapping[str, Any] | None = None,
    block_of: Any = None,
) -> Any:
    """``narrow(name, teacher tensor, student shape)``: the teacher's consistent slice.

    With a dimension of ``select="l1"``, ``params`` (the teacher's parameters by name),
    ``shapes`` (the student's shapes by teacher name) and ``block_of(teacher name)`` (its
    block's prefix, or None) choose its indices block by block."""
    import torch

    cache: dict[tuple[str, str], list[int]] = {}

    def indices(d: _Dim, name: str) -> list[int] | None:
        if d.select == "first":
            return None
        block = block_of(name) if block_of else None
        if block is None or params is None or shapes is None:
            raise ArgumentError(
                f"student: select='l1': {name!r} has {d.label} outside the blocks, where no "
                "block's units choose it; use select='first'"
            )
        if (d.label, block) not in cache:
            cache[d.label, block] = _l1_units(d, block, params, shapes)
        return cache[d.label, block]

    def narrow(
        name: str, src: torch.Tensor, shape: tuple[int, ...], tname: str | None = None
    ) -> torch.Tensor | None:
        if src.dim() != len(shape):
            return None
        out = src
        for axis, (old, new) in enumerate(zip(src.shape, shape, strict=True)):
            if old == new:
                continue
            hits = [d for d in dims if d.old == old and d.new == new]
            if not hits:
                raise TargetError(
                    f"student: {name!r} axis {axis}: size {old} -> {new}, which no width key "
                    f"explains ({', '.join(f'{d.label} {d.old} -> {d.new}' for d in dims)})"
                )
            if len({(d.runs(), d.select) for d in hits}) > 1:
                raise ArgumentError(
                    f"student: width: size {old} -> {new} ({name!r} axis {axis}) is both "
                    f"{' and '.join(d.label for d in hits)}, sliced differently; choose sizes "
                    "that tell them apart"
                )
            picked = indices(hits[0], tname or name)
            if picked is not None:
                out = out.index_select(axis, torch.tensor(picked, device=out.device))
                continue
            parts = [out.narrow(axis, a, n) for a, n in hits[0].runs()]
            out = parts[0] if len(parts) == 1 else torch.cat(parts, axis)
        return out

    return narrow


# ------------------------------------------------------------------------------ public
def student_with_report(
    teacher: torch.nn.Module | str | os.PathLike[str],
    *,
    layers: Sequence[int] | None = None,
    every: int | None = None,
    width: Mapping[str, int] | float | None = None,
    select: str = "first",
    drop: str | Sequence[str] = (),
    args: Mapping[str, Any] | None = None,
    meta: bool = False,
) -> StudentResult:
    """A student of the teacher (see :func:`student`), with what it was made from.

    Args:
        teacher: see :func:`student`.
        layers: see :func:`student`.
        every: see :func:`student`.
        width: see :func:`student`.
        select: see :func:`student`.
        drop: see :func:`student`.
        args: see :func:`student`.
        meta: see :func:`student`.

    Returns:
        A :class:`StudentResult`; ``result.model`` is the student.

    Raises:
        See :func:`student`.

    Example:
        >>> r = student_with_report("zoo:bert-base", every=2, meta=True)
        >>> r.stack, r.layers, r.params_student
        ('encoder.layer', [0, 2, 4, 6, 8, 10], 66955008)
        >>> r = student_with_report("zoo:bert-base", every=2, width=0.5, meta=True)
        >>> r.width, r.params_student
        ({'hidden_size': 384, 'intermediate_size': 1536, 'num_attention_heads': 6}, 22713216)
    """
    import torch

    if select not in SELECTIONS:
        raise ArgumentError(
            f"student: select={select!r}: expected one of {', '.join(map(repr, SELECTIONS))}"
        )
    if select != "first" and width is None:
        raise ArgumentError(f"student: select={select!r} chooses indices of width=; give width")
    if isinstance(drop, str):
        drop = DISTILBERT_DROP if drop == "distilbert" else (drop,)
    model, name = _resolve(teacher, args, meta)
    stack_name, stack = _stack(model)
    n = len(stack)
    keep = _indices(n, layers, every)
    keys = list(stack._modules)
    notes: list[str] = []
    widths: dict[str, int] = {}
    dims: list[_Dim] = []
    if width is not None:
        t_config = _teacher_config(model, n)
        if t_config is None:
            raise ArgumentError(
                f"student: width= needs a teacher with a config (zoo, transformers); "
                f"{type(model).__name__} has none: narrow it with paramscope.shrink(model, "
                "amount, unit='neurons' or 'heads') or paramscope.subnet(model, width=...)"
            )
        fused = any(m.rsplit(".", 1)[-1] in _FUSED_QKV for m, _ in model.named_modules())
        widths, dims, width_notes = _width_changes(t_config, width, fused)
    config, changes = _new_config(model, n, keep, widths)
    new = None if config is None else _from_config(model, config)
    if new is None and width is not None:
        raise TargetError(
            f"student: {type(model).__name__}({type(config).__name__}) cannot be built with "
            f"{widths}, so the student cannot be narrowed"
        )
    if new is not None:
        new_stack = new.get_submodule(stack_name)
        new_keys = list(new_stack._modules)
        if len(new_keys) != len(keep):
            new = None  # the config's count is not this stack's length after all
    if new is not None:
        prefix = f"{stack_name}." if stack_name else ""
        lookup = {f"{prefix}{new_keys[pos]}.": f"{prefix}{keys[i]}." for pos, i in enumerate(keep)}

        def name_map(s: str) -> str:
            if s.startswith(prefix):
                head = prefix + s[len(prefix) :].split(".", 1)[0] + "."
                if head in lookup:
                    return lookup[head] + s[len(head) :]
            return s

        narrow = None
        if dims:
            if select == "l1":
                if not any(d.role == "intermediate" for d in dims):
                    raise ArgumentError(
                        "student: select='l1' picks MLP intermediate units by their L1 norm; "
                        f"width={width!r} keeps the intermediate size"
                    )
                dims = [dataclasses.replace(d, select="l1") if d.role else d for d in dims]
            shapes = {name_map(k): tuple(v.shape) for k, v in new.named_parameters()}
            t_params = dict(model.named_parameters(remove_duplicate=False))

            def block_of(tname: str) -> str | None:
                for i in keep:
                    if tname.startswith(f"{prefix}{keys[i]}."):
                        return f"{prefix}{keys[i]}."
                return None

            narrow = _narrower(dims, t_params, shapes, block_of)
        _fill(new, model, name_map, narrow)
        new.train(model.training)
        notes.append(f"built from {type(config).__name__} ({type(new).__name__}(config))")
        if dims:
            l1 = [d.label for d in dims if d.select == "l1"]
            fused = any(d.chunks > 1 for d in dims)
            notes.append(
                "narrowed by consistent weight selection (Xu et al., ICLR 2024): "
                + ", ".join(f"{d.label} {d.old} -> {d.new}" for d in dims)
                + "; each narrowed dimension keeps the same indices in every tensor that has it: "
                + (
                    f"{l1[0]} the units of largest L1 norm, chosen in each block, the others "
                    if l1
                    else ""
                )
                + "the first k (whole heads"
                + ("; the fused q|k|v axis chunk by chunk)" if fused else ")")
            )
            notes += width_notes
    elif width is not None:
        raise TargetError(
            f"student: width=: the config's layer count is not the length of {stack_name}, so "
            "the student cannot be built from it"
        )
    else:
        new = _copied(model, stack_name, stack, keep)
        changes = {}
        from ..compress._shrink_report import ShrinkReport
        from ..compress._stacks import set_layer_count

        rep = ShrinkReport("layers", None, None, "student")
        removed = [i for i in range(n) if i not in keep]
        set_layer_count(new, n, len(keep), removed, rep)
        notes.append("copied from the teacher with the kept blocks (no config to build from)")
        notes += rep.notes
    dropped = _drop(new, list(drop)) if drop else []
    return StudentResult(
        model=new,
        teacher=name,
        args=dict(args or {}),
        stack=stack_name,
        layers=keep,
        teacher_blocks=n,
        drop=list(drop) if dropped else [],
        params_teacher=_unique_params(model),
        params_student=_unique_params(new),
        config=changes,
        notes=notes,
        from_target=not isinstance(teacher, torch.nn.Module),
        width=dict(widths),
        select=select if widths else "first",
    )


def student(
    teacher: torch.nn.Module | str | os.PathLike[str],
    *,
    layers: Sequence[int] | None = None,
    every: int | None = None,
    width: Mapping[str, int] | float | None = None,
    select: str = "first",
    drop: str | Sequence[str] = (),
    args: Mapping[str, Any] | None = None,
    meta: bool = False,
) -> torch.nn.Module:
    """A model of the teacher's family with fewer blocks, initialised from the teacher.

    The student's block ``i`` is a copy of the teacher's block ``layers[i]``; everything
    outside the block stack (embeddings, final norm, head) is copied too, as DistilBERT was
    initialised from BERT. A teacher with a config (zoo, transformers) gives a student built
    from a copy of the config with the new layer count.

    Args:
        teacher: a ``torch.nn.Module`` (with its weights), or a model TARGET (``zoo:NAME``,
            ``package.module:callable``, an HF ``config.json``) built with its own
            initialisation.
        layers: the teacher's block indices to keep, strictly increasing.
        every: instead of ``layers``: keep blocks ``0, k, 2k, …``.
        width: a narrower student too: a mapping of config keys to new sizes
            (``{"hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 6}``;
            GPT-2's ``n_embd`` / ``n_inner`` / ``n_head``, Llama's ``num_key_value_heads``),
            or a ratio r in (0, 1]: hidden, intermediate and head counts times r. Heads keep
            their width. Only for a teacher with a config (zoo, transformers). Initialised by
            consistent weight selection (Xu et al., ICLR 2024): each narrowed dimension keeps
            the same indices in every tensor that has it (whole heads; a fused q|k|v axis is
            sliced chunk by chunk).
        select: how the kept indices are chosen: ``"first"`` (the first k of every narrowed
            dimension) or ``"l1"`` (the MLP intermediate units with the largest L1 norm of
            their teacher weights, chosen in each block for all of that block's tensors; the
            other dimensions keep their first k). ``"l1"`` needs the teacher's values.
        drop: submodules to remove (a full module name or its last part), each replaced by a
            stand-in without parameters; ``"distilbert"`` means ``("pooler",
            "token_type_embeddings")``.
        args: a TARGET's arguments (zoo overrides, callable keyword arguments).
        meta: build a TARGET teacher on the meta device (counts only, no values).

    Returns:
        The student, on the teacher's device, in the teacher's training mode.

    Raises:
        ArgumentError: neither or both of ``layers`` / ``every``, an index out of range or
            out of order, a ``drop`` name matching no submodule, or a bad ``width`` (an
            unknown key, a size larger than the teacher's, heads that do not divide, a head
            width that changes, a size two dimensions share but slice differently, a teacher
            without a config).
        ArgumentTypeError: a teacher or an index of the wrong type.
        TargetError: a checkpoint given as the teacher, or no (or more than one) stack of
            identical blocks.

    Example:
        >>> s = student("zoo:bert-base", layers=[0, 2, 4, 6, 8, 10], drop="distilbert",
        ...             meta=True)
        >>> s.config.num_hidden_layers, sum(p.numel() for p in s.parameters())
        (6, 66362880)
        >>> s = student("zoo:gpt2", every=2, width={"n_embd": 384, "n_head": 6}, meta=True)
        >>> s.transformer.h[0].attn.c_attn.weight.shape
        torch.Size([384, 1152])
    """
    return student_with_report(
        teacher,
        layers=layers,
        every=every,
        width=width,
        select=select,
        drop=drop,
        args=args,
        meta=meta,
    ).model


def _is_path(target: str) -> bool:
    """A TARGET that names a file or folder (a config.json), not zoo: or a callable."""
    return not target.startswith("zoo:") and Path(target).exists()


def save_student(
    result: StudentResult, path: str | os.PathLike[str], spec: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """Write a student's weights (safetensors) and the spec that rebuilds it.

    Args:
        result: from :func:`student_with_report`.
        path: the ``.safetensors`` file.
        spec: the JSON spec; by default ``path`` with the suffix ``.json``.

    Returns:
        ``(weights path, spec path)``.

    Raises:
        TargetError: the teacher was a module of classes a spec cannot name.

    Example:
        >>> import tempfile, torch
        >>> block = lambda: torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        >>> t = torch.nn.Sequential(*[block() for _ in range(4)])
        >>> d = tempfile.mkdtemp()
        >>> w, s = save_student(student_with_report(t, layers=[1, 3]), f"{d}/s.safetensors")
        >>> rebuilt = build_student(s)  # here an ordinary build spec: paramscope.build reads it
        >>> torch.equal(rebuilt[1][0].weight, t[3][0].weight)
        True
    """
    import json

    from .._atomic import atomic_write
    from ..io import save

    path = Path(path)
    spec_path = Path(spec) if spec is not None else path.with_suffix(".json")
    if spec_path.resolve() == path.resolve():
        raise ArgumentError(f"student: the spec {spec_path} would overwrite the weights")
    rel = os.path.relpath(path.resolve(), spec_path.resolve().parent)
    out = result.spec(Path(rel).as_posix())
    recipe = out.get("student")
    if recipe is not None and _is_path(recipe["teacher"]):  # a config.json: beside the spec
        where = os.path.relpath(Path(recipe["teacher"]).resolve(), spec_path.resolve().parent)
        recipe["teacher"] = Path(where).as_posix()
    text = json.dumps(out, indent=2)
    written = save(result.model, path)
    with atomic_write(spec_path) as f:
        f.write(text.encode("utf-8"))
    return written, spec_path


def build_student(spec: Any) -> torch.nn.Module:
    """Rebuild a student from the spec :func:`save_student` wrote, with its weights.

    Args:
        spec: the spec: a JSON file, a dict or a JSON string (read by
            :func:`paramscope.building.read_spec`). An ordinary build spec (no ``"student"``
            key) is built by :func:`paramscope.build`.

    Returns:
        The student, its weights loaded strictly from the spec's ``"load"`` file.

    Raises:
        SpecError: a ``"student"`` entry of the wrong shape.
        StrictLoadError: the weights do not fit the rebuilt student.

    Example:
        >>> s = build_student({"student": {"teacher": "zoo:bert-base", "layers": [0, 11]}})
        >>> s.config.num_hidden_layers
        2
    """
    from ..building._spec import build
    from ..building._spec_read import _read

    raw, folder = _read(spec)
    if "student" not in raw:
        return build(raw, base_dir=folder)
    return student_from_spec(raw, folder)[0]


def student_from_spec(raw: Mapping[str, Any], folder: Path | None) -> tuple[Any, Any]:
    """The student a read spec with a ``"student"`` key describes, and the report of loading
    its ``"load"`` weights (``None`` without them); what :func:`build_student` and
    :func:`paramscope.build` do with such a spec.

    Args:
        raw: the spec, read (:func:`paramscope.building._spec_read._read`).
        folder: the folder relative paths (the teacher's, the weights') resolve against
            (``None``: the current folder).

    Returns:
        ``(model, load report or None)``.

    Raises:
        SpecError: a ``"student"`` entry of the wrong shape.
        StrictLoadError: the weights do not fit the rebuilt student.

    Example:
        >>> m, rep = student_from_spec({"student": {"teacher": "zoo:bert-base", "every": 6}}, None)
        >>> m.config.num_hidden_layers, rep is None
        (2, True)
    """
    from ..building._spec_errors import SpecError

    recipe = raw["student"]
    if not isinstance(recipe, Mapping) or not isinstance(recipe.get("teacher"), str):
        raise SpecError("student", 'expected {"teacher": TARGET, "layers": [...], ...}')
    unknown = sorted(
        set(recipe) - {"teacher", "args", "layers", "every", "drop", "width", "select"}
    )
    if unknown:
        raise SpecError("student", f'unknown key "{unknown[0]}"')
    weights = raw.get("load")
    select = recipe.get("select", "first")
    if select not in SELECTIONS:
        raise SpecError("student", f"select {select!r}: expected one of {', '.join(SELECTIONS)}")
    teacher = recipe["teacher"]
    if folder is not None and _is_path(str(folder / teacher)):
        teacher = str(folder / teacher)  # written relative to the spec's folder
    model = student(
        teacher,
        layers=recipe.get("layers"),
        every=recipe.get("every"),
        drop=tuple(recipe.get("drop") or ()),
        width=recipe.get("width") or None,
        # with "load" the weights replace the values: the shapes do not depend on the rule
        select="first" if weights is not None and select == "l1" else select,
        args=recipe.get("args") or None,
        meta=weights is not None,
    )
    report = None
    if weights is not None:
        from ..lifecycle._load import load_into

        p = Path(weights)
        if not p.is_absolute():
            p = (folder or Path.cwd()) / p
        report = load_into(model, p, strict=True)
    return model, report
