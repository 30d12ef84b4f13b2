"""Typed configuration trees: nested frozen dataclasses built from plain data.

The one machinery behind every config of the toolkit (``lsp prep``'s :class:`PrepConfig`,
the model presets of ``lsp train``, animate's settings):

- :func:`from_data` builds a dataclass tree from plain data (TOML, JSON,
  ``dataclasses.asdict``): nested dicts become nested dataclasses, lists become tuples
  where the field is a tuple, and an unknown key is refused with the section's valid keys;
- :func:`with_overrides` applies ``section.key=value`` strings (any depth:
  ``renderer.generator.image_size=64``), each value typed by its field's annotation
  (:func:`parse_value`), with a message that says what was expected;
- :func:`field_docs` and :func:`sections_help` read the attribute docstrings (the string
  literal under each field) so help text comes from the fields themselves.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import json
import textwrap
import types
import typing
from typing import Any, TypeVar

from lsp_prep.errors import InputError

T = TypeVar("T")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_type(hint: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), or None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if _is_union(hint) and len(args) == 1:
        return _dataclass_type(args[0])
    return None


def _is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union


def _coerce(value: Any, hint: Any) -> Any:
    """Plain data -> the field's shape: lists into tuples where the annotation is a tuple."""
    if isinstance(value, list):
        origin = typing.get_origin(hint)
        if _is_union(hint):
            for arg in typing.get_args(hint):
                if typing.get_origin(arg) in (tuple, list):
                    return _coerce(value, arg)
            return value
        if origin is tuple:
            args = typing.get_args(hint)
            inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
            return tuple(
                _coerce(v, inner if inner is not None else (args[i] if i < len(args) else None))
                for i, v in enumerate(value)
            )
        if origin is list:
            (inner,) = typing.get_args(hint) or (None,)
            return [_coerce(v, inner) for v in value]
        if hint is None:  # untyped nesting: tuples all the way down, as before
            return tuple(_coerce(v, None) for v in value)
    return value


def from_data(cls: type[T], data: Any, *, where: str = "") -> T:
    """An instance of dataclass ``cls`` from nested plain data; unknown keys fail with the
    valid keys of their section. ``where`` names the section in messages."""
    name = where or cls.__name__
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise InputError(f"{name}: expected a table of settings, got {data!r}")
    assert dataclasses.is_dataclass(cls)
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise InputError(
            f"unknown option(s) {unknown} in {name}: valid keys are {', '.join(names)}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = _dataclass_type(hints[key])
        path = f"{where}.{key}" if where else key
        if sub is not None and isinstance(value, dict):
            kwargs[key] = from_data(sub, value, where=path)
        else:
            kwargs[key] = _coerce(value, hints[key])
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(f"{name}: {exc}") from None


def to_data(config: Any) -> dict[str, Any]:
    """Plain nested data of a config tree (what :func:`from_data` reads back)."""
    return dataclasses.asdict(config)


def _describe(hint: Any) -> str:
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an int"
    if hint is float:
        return "a number"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(str(c) for c in typing.get_args(hint))
    if typing.get_origin(hint) in (tuple, list):
        return "a JSON list"
    return f"a value of type {hint}"


def parse_value(raw: str, hint: Any, key: str) -> Any:
    """The command-line string ``raw`` typed by annotation ``hint``: bool true/false, int,
    float, str, a ``Literal``'s choices, tuples and lists as JSON, ``X | None`` (``none``).
    InputError says what ``key`` expected."""
    raw = raw.strip()
    if _is_union(hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw.lower() in ("none", "null") and len(args) < len(typing.get_args(hint)):
            return None
        errors: list[str] = []
        last: InputError | None = None
        for arg in args:
            try:
                return parse_value(raw, arg, key)
            except InputError as exc:
                errors.append(_describe(arg))
                last = exc
        if len(errors) == 1 and last is not None:
            raise last from None
        raise InputError(f"{key}={raw}: expected {' or '.join(errors)} or none")
    try:
        if hint is bool:
            if raw.lower() not in ("true", "false"):
                raise ValueError
            return raw.lower() == "true"
        if hint in (int, float, str):
            return hint(raw)
        if typing.get_origin(hint) is typing.Literal:
            for choice in typing.get_args(hint):
                if str(choice) == raw:
                    return choice
            raise ValueError
        if typing.get_origin(hint) in (tuple, list):
            value = json.loads(raw)
            if not isinstance(value, list):
                raise ValueError
            return _coerce(value, hint)
        return json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        raise InputError(f"{key}={raw}: expected {_describe(hint)}") from None


def with_overrides(
    config: T,
    items: list[str] | tuple[str, ...],
    *,
    see: str = "",
    root: str = "",
    what: str = "override",
) -> T:
    """A copy of ``config`` with ``path.key=value`` overrides applied (path of any depth;
    a flat config takes ``key=value``), each value parsed by its field's annotation.

    ``root``, when given, is a prefix keys may carry (``animate.crf=20`` for ``root=
    "animate"``); ``see`` is appended to errors (e.g. "see `lsp prep --help`") and ``what``
    names the item in them ("bad override ...").
    """
    if not items:
        return config
    cls = type(config)
    data = to_data(config)
    hint = f" ({see})" if see else ""
    flat = not any(_dataclass_type(h) for h in _hints(cls).values())
    form = "key=value" if flat else "section.key=value"
    for item in items:
        key, sep, raw = item.partition("=")
        if root:
            key = key.strip().removeprefix(f"{root}.")
        parts = key.strip().split(".")
        node_cls: type = cls
        node = data
        for depth, part in enumerate(parts):
            fields = {f.name for f in dataclasses.fields(node_cls)}  # type: ignore[arg-type]
            sections = [f for f in sorted(fields) if _dataclass_type(_hints(node_cls)[f])]
            if not sep or part not in fields:
                where = ".".join(parts[:depth]) or "the config"
                valid = sorted(fields) if depth or not sections else sections
                raise InputError(
                    f"bad {what} {item!r}: use {form}; {where} has {', '.join(valid)}{hint}"
                )
            field_hint = _hints(node_cls)[part]
            sub = _dataclass_type(field_hint)
            if depth == len(parts) - 1:
                if sub is not None:
                    raise InputError(f"bad {what} {item!r}: {key.strip()} is a section{hint}")
                try:
                    node[part] = parse_value(raw, field_hint, key.strip())
                except InputError as exc:
                    raise InputError(f"bad {what}: {exc}{hint}") from None
            else:
                if sub is None:
                    raise InputError(f"bad {what} {item!r}: {part} is not a section{hint}")
                if node.get(part) is None:
                    node[part] = to_data(sub())
                node_cls, node = sub, node[part]
    return from_data(cls, data)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of dataclass ``cls`` (and its bases): field -> text."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in itertools.pairwise(body):
            target = stmt.target if isinstance(stmt, ast.AnnAssign) else None
            if (
                isinstance(target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def first_line(text: str | None) -> str:
    """The first sentence-line of a docstring, without its final period."""
    return (text or "").strip().split("\n")[0].rstrip(".")


def sections_help(cls: type) -> str:
    """``name (summary), ...`` for each section of a config tree: the section's field
    docstring, else its class docstring."""
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = _dataclass_type(_hints(cls)[f.name])
        if sub is None:
            continue
        summary = first_line(docs.get(f.name) or sub.__doc__)
        out.append(f"{f.name} ({summary})" if summary else f.name)
    return ", ".join(out)


def options_help(cls: type, prefix: str = "") -> list[str]:
    """One line per setting of a config tree: ``section.key = default: first doc line``."""
    docs = field_docs(cls)
    lines = []
    default = cls()
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = _dataclass_type(_hints(cls)[f.name])
        name = f"{prefix}{f.name}"
        if sub is not None:
            lines.extend(options_help(sub, f"{name}."))
        else:
            doc = first_line(docs.get(f.name))
            lines.append(f"{name} = {getattr(default, f.name)!r}" + (f": {doc}" if doc else ""))
    return lines
