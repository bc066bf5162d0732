"""Name rules: validation, glob/regex selection, rename rules and "did you mean".

A parameter name is one or more non-empty segments joined by dots (``encoder.0.weight``).
Patterns are shell globs by default (``*`` matches any run of characters, dots included, so
``*.weight`` matches ``a.b.weight``); a pattern that starts with ``re:`` is a regular
expression that must match the whole name.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from ._errors import ArgumentTypeError, DuplicateNameError, InvalidNameError, MissingNameError

__all__ = [
    "Pattern",
    "apply_renames",
    "compile_pattern",
    "did_you_mean",
    "group_prefix",
    "missing",
    "no_match",
    "parse_rules",
    "validate_name",
]

Pattern = str | Sequence[str]

_SEGMENT_RE = re.compile(r"[^.\s]+")


def validate_name(name: object) -> str:
    """Check that ``name`` is a valid parameter name and return it.

    Args:
        name: the candidate.

    Returns:
        ``name`` unchanged.

    Raises:
        InvalidNameError: for a non-string, an empty name, an empty segment or whitespace.

    Example:
        >>> validate_name("encoder.0.weight")
        'encoder.0.weight'
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"name {name!r}: expected a string, found {type(name).__name__}")
    if not name:
        raise InvalidNameError("name '': expected non-empty dot-separated segments")
    for segment in name.split("."):
        if not _SEGMENT_RE.fullmatch(segment):
            raise InvalidNameError(
                f"name {name!r}: expected non-empty dot-separated segments without whitespace, "
                f"found segment {segment!r}"
            )
    return name


def compile_pattern(pattern: Pattern) -> Callable[[str], bool]:
    """Turn a glob, a ``re:`` regex, or a list of them into a predicate on names.

    Args:
        pattern: a glob (``"encoder.*.weight"``), ``"re:<regex>"`` (full match), or a sequence
            of such patterns (a name matches if any matches).

    Returns:
        A function ``name -> bool``.

    Raises:
        InvalidNameError: for an invalid regular expression.
        ArgumentTypeError: a pattern that is not a string (``select=3``).

    Example:
        >>> match = compile_pattern(["*.bias", "re:emb\\\\..*"])
        >>> match("fc.bias"), match("emb.weight"), match("fc.weight")
        (True, True, False)
    """
    if isinstance(pattern, str):
        patterns = [pattern]
    elif isinstance(pattern, Iterator):  # read once, a pattern would match the first name only
        raise ArgumentTypeError(
            f"pattern {pattern!r}: a one-shot iterator; pass a list or tuple of patterns"
        )
    elif isinstance(pattern, Iterable) and not isinstance(pattern, (bytes, bytearray)):
        patterns = list(pattern)
    else:
        patterns = [pattern]
    regexes: list[re.Pattern[str]] = []
    for p in patterns:
        if not isinstance(p, str):
            raise ArgumentTypeError(
                f"pattern {p!r}: expected a glob ('encoder.*'), 're:<regex>' or a list of "
                f"them, found {type(p).__name__}"
            )
        if p.startswith("re:"):
            try:
                regexes.append(re.compile(p[3:]))
            except re.error as exc:
                raise InvalidNameError(
                    f"pattern {p!r}: invalid regular expression: {exc}"
                ) from None
        else:
            regexes.append(re.compile(fnmatch.translate(p)))
    return lambda name: any(r.fullmatch(name) for r in regexes)


def parse_rules(
    rules: Sequence[tuple[str, str]] | Sequence[str] | None, what: str = "rename rule"
) -> list[tuple[str, str]]:
    """Rename rules as ``(regex, replacement)`` pairs, from pairs or ``"REGEX=REPLACEMENT"``.

    The CLI's ``--rename``/``--remap`` strings and Python's pairs mean the same; the first
    ``=`` splits a string (a regex needing ``=`` can use ``\\x3d``).

    Args:
        rules: pairs, strings, or ``None``.
        what: what the rules are called in messages (``"--remap"``).

    Returns:
        The pairs, in order.

    Raises:
        InvalidNameError: a string without ``=``, or a pair that is not two strings.

    Example:
        >>> parse_rules(["^module[.]=", ("enc", "encoder")])
        [('^module[.]', ''), ('enc', 'encoder')]
    """
    out: list[tuple[str, str]] = []
    for r in rules or []:
        if isinstance(r, str):
            pattern, sep, repl = r.partition("=")
            if not sep:
                raise InvalidNameError(f"{what} {r!r}: expected REGEX=REPLACEMENT")
            out.append((pattern, repl))
        elif isinstance(r, (tuple, list)) and len(r) == 2 and all(isinstance(x, str) for x in r):
            out.append((r[0], r[1]))
        else:
            raise InvalidNameError(
                f"{what} {r!r}: expected a (regex, replacement) pair or 'REGEX=REPLACEMENT'"
            )
    return out


def apply_renames(names: Iterable[str], rules: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Apply ordered regex rename rules to every name; refuse results that collide.

    Each rule ``(regex, replacement)`` is applied with ``re.sub`` to the result of the rules
    before it, so rules compose.

    Args:
        names: the current names.
        rules: ``(regex, replacement)`` pairs; the replacement may use ``\\1`` groups.

    Returns:
        A mapping old name → new name for every name (unchanged names map to themselves).

    Raises:
        InvalidNameError: a rule is not a valid regex or produces an invalid name.
        DuplicateNameError: two names would get the same new name.

    Example:
        >>> apply_renames(["module.fc.weight"], [(r"^module\\.", "")])
        {'module.fc.weight': 'fc.weight'}
    """
    compiled: list[tuple[re.Pattern[str], str]] = []
    for regex, repl in rules:
        try:
            compiled.append((re.compile(regex), repl))
        except re.error as exc:
            raise InvalidNameError(f"rename rule {regex!r}: invalid regex: {exc}") from None
    mapping: dict[str, str] = {}
    taken: dict[str, str] = {}
    for old in names:
        new = old
        for regex_c, repl in compiled:
            new = regex_c.sub(repl, new)
        validate_name(new)
        if new in taken:
            raise DuplicateNameError(
                f"rename: {taken[new]!r} and {old!r} would both become {new!r}"
            )
        taken[new] = old
        mapping[old] = new
    return mapping


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Close names to ``name``: a differing ``module.``/``model.`` prefix first, then similar.

    Args:
        name: the name that was not found.
        candidates: the names that exist.
        n: at most this many suggestions.

    Returns:
        Suggestions, best first.

    Example:
        >>> did_you_mean("module.fc.weight", ["fc.weight", "fc.bias"])
        ['fc.weight']
    """
    pool = list(candidates)
    found: list[str] = []
    for prefix in ("module.", "model.", "_orig_mod."):
        if name.startswith(prefix) and name[len(prefix) :] in pool:
            found.append(name[len(prefix) :])
        if prefix + name in pool:
            found.append(prefix + name)
    for close in difflib.get_close_matches(name, pool, n=n, cutoff=0.6):
        if close not in found:
            found.append(close)
    return found[:n]


def missing(name: str, candidates: Iterable[str], what: str = "entry") -> MissingNameError:
    """Build the error for a name that does not exist, with suggestions.

    Args:
        name: the missing name.
        candidates: the names that exist.
        what: what kind of thing was looked up, for the message.

    Returns:
        A :class:`MissingNameError` ready to raise.

    Example:
        >>> str(missing("fc.weigth", ["fc.weight"]))
        "no entry 'fc.weigth'; did you mean 'fc.weight'?"
    """
    hints = did_you_mean(name, candidates)
    tail = "; did you mean " + " or ".join(repr(h) for h in hints) + "?" if hints else ""
    return MissingNameError(f"no {what} {name!r}{tail}")


def no_match(
    pattern: Pattern, names: Iterable[str], what: str = "entry", where: str | None = None
) -> MissingNameError:
    """Build the error for a filter that matches no name: close patterns and top-level names.

    Suggestions come from the dotted prefixes and suffixes of the names that exist: the
    pattern's literal core (``"encodr"`` in ``"encodr.*"``) is compared with them, and where
    the pattern is a glob the close one is put back into it (``"encoder.*"``), kept only if it
    then matches.

    Args:
        pattern: the glob / ``re:`` pattern (or list of them) that matched nothing.
        names: the names that exist.
        what: what the names are, for the message (``"entry"``, ``"module path"``).
        where: the source, named in the message when given.

    Returns:
        A :class:`MissingNameError` ready to raise.

    Example:
        >>> err = no_match("encodr.*", ["encoder.0.weight", "decoder.0.weight"])
        >>> str(err).split(";")[0]
        "filter 'encodr.*' matches no entry"
        >>> "did you mean 'encoder.*'" in str(err), str(err).endswith("'decoder', 'encoder'")
        (True, True)
    """
    pool = list(names)
    shown = pattern if isinstance(pattern, str) else ", ".join(pattern)
    head = f"filter {shown!r} matches no {what}" + (f" of {where}" if where else "")
    if not pool:
        return MissingNameError(f"{head}: there is nothing to match (no names at all)")
    fragments: set[str] = set()
    for name in pool:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            fragments.add(".".join(parts[:i]))
            fragments.add(".".join(parts[-i:]))
    hints: list[str] = []
    for p in [pattern] if isinstance(pattern, str) else list(pattern):
        glob = not p.startswith("re:")
        core = p if glob else p[3:].replace("\\.", ".")
        core = core.strip("*?[]^$()+|{}\\").strip(".")
        for close in did_you_mean(core, fragments) if core else []:
            fixed = p.replace(core, close, 1) if glob else close
            if fixed != close and not any(map(compile_pattern(fixed), pool)):
                fixed = close  # the corrected glob still matches nothing: name the fragment
            if fixed not in hints:
                hints.append(fixed)
    tops = sorted({n.split(".", 1)[0] for n in pool})
    listed = ", ".join(map(repr, tops[:8])) + (f", … ({len(tops)} in all)" if len(tops) > 8 else "")
    tail = f"; did you mean {' or '.join(map(repr, hints[:3]))}?" if hints else ";"
    return MissingNameError(f"{head}{tail} names start with {listed}")


def group_prefix(name: str, depth: int) -> str:
    """The group of ``name`` at ``depth``: its first ``depth`` segments, never the leaf itself.

    Args:
        name: a dotted name.
        depth: how many leading segments make a group (0 groups everything together).

    Returns:
        The prefix; ``""`` for names at the root.

    Example:
        >>> group_prefix("h.0.attn.c_attn.weight", 2), group_prefix("lm_head.weight", 2)
        ('h.0', 'lm_head')
    """
    parts = name.split(".", depth)  # no more splits than needed: a name may hold 1e7 dots
    return ".".join(parts[: max(0, min(depth, len(parts) - 1))])


def ensure_new(name: str, existing: Iterable[str] | dict[str, object]) -> None:
    """Raise :class:`DuplicateNameError` when ``name`` is already in ``existing``.

    Args:
        name: the name to add.
        existing: the names present.

    Example:
        >>> ensure_new("a", {"b": 1})
    """
    if name in existing:
        raise DuplicateNameError(f"entry {name!r} already exists; use update() to change it")
