"""Validate plain TOML data against a settings dataclass, collecting every problem.

A settings class is an ordinary ``@dataclass`` with a default for every field and a docstring
under each field (aioquic's ``QuicConfiguration`` style). Field ``metadata`` may carry:

- ``"min"`` / ``"max"``: inclusive bounds for numbers;
- ``"check"``: ``f(value) -> str | None``, returning a problem description or ``None``.

A class may also define ``problems(self) -> list[tuple[str, str]]`` for checks that span
fields, returning ``(key, message)`` pairs.

Supported field types: ``bool``, ``int``, ``float`` (an int is accepted), ``str``,
``Literal[...]``, ``X | None``, ``list[X]`` and ``dict[str, object]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING = object()


def describe(tp: Any) -> str:
    """A short human name for a settings field type (used in errors and docs)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "table"
    if tp is type(None):
        return "none"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, str(tp))


def _check_type(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return ``(ok, converted)`` for *value* against type *tp*."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return True, value
    if origin is typing.Literal:
        # Compare types too: True == 1, but a boolean is not the integer literal 1.
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp)), value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, conv = _check_type(value, arg)
            if ok:
                return True, conv
        return False, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (item_tp,) = typing.get_args(tp)
        out = []
        for item in value:
            ok, conv = _check_type(item, item_tp)
            if not ok:
                return False, value
            out.append(conv)
        return True, out
    if origin is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp), value


def _key_path(path: str, key: str) -> str:
    """``path.key``, or whichever of the two is non-empty."""
    return f"{path}.{key}" if path and key else path or key


def validate_settings(cls: type[T], data: Any, path: str, problems: list[str]) -> T | None:
    """Build ``cls(**data)`` after checking keys, types and bounds.

    Every problem is appended to *problems* as ``"<path>.<key>: <message>"``; returns ``None``
    when there was any.
    """
    if not isinstance(data, Mapping):
        problems.append(f"{path}: expected a table, got {type(data).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    before = len(problems)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = _key_path(path, str(key))
        f = fields.get(key)
        if f is None or not f.init:
            settable = [name for name, fld in fields.items() if fld.init]  # not internal fields
            close = difflib.get_close_matches(str(key), settable, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(sorted(settable))})"
            problems.append(f"{where}: unknown key{hint}")
            continue
        tp = hints[key]
        ok, conv = _check_type(value, tp)
        if not ok:
            problems.append(f"{where}: expected {describe(tp)}, got {value!r}")
            continue
        meta = f.metadata
        if isinstance(conv, (int, float)) and not isinstance(conv, bool):
            lo, hi = meta.get("min"), meta.get("max")
            if (lo is not None and conv < lo) or (hi is not None and conv > hi):
                problems.append(f"{where}: {conv!r} is out of range [{lo}, {hi}]")
                continue
        check = meta.get("check")
        if check is not None and conv is not None:
            msg = check(conv)
            if msg:
                problems.append(f"{where}: {msg}")
                continue
        kwargs[key] = conv
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{_key_path(path, name)}: required key is missing")
    if len(problems) != before:
        return None
    obj = cls(**kwargs)
    cross = getattr(obj, "problems", None)
    if callable(cross):
        for key, msg in cross():
            problems.append(f"{_key_path(path, key)}: {msg}" if key or path else msg)
        if len(problems) != before:
            return None
    return obj


def settings_doc(cls: type) -> list[tuple[str, str, str, str]]:
    """``(key, type, default, docstring)`` for each field, for ``config check`` and docs."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for a, b in itertools.pairwise(body):
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name):
                if isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                    docs[a.target.id] = " ".join(b.value.value.split())
    except (OSError, TypeError, SyntaxError):
        pass
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((f.name, describe(hints[f.name]), default, docs.get(f.name, "")))
    return rows


def check_output_path(value: str) -> str | None:
    """A ``"check"`` for a setting that names a file the stack will create or truncate (a capture,
    a probe file): what is wrong with *value* that shows without creating anything, so that a
    configuration check finds what building the stack would fail on; what only opening can tell
    (permissions, a full disk) is the opener's error. ``None``: nothing."""
    if not value:
        return "must not be empty"
    if os.path.isdir(value):
        return f"{value} is a directory; name a file in it"
    parent = os.path.dirname(value) or "."
    if not os.path.isdir(parent):
        return f"the directory {parent} does not exist"
    return None
