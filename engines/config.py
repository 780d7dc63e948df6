"""One validated loader for every config file in ``configs/``.

Configs are TOML, described by pydantic models that forbid unknown keys. Values are
checked as TOML typed them (pydantic's strict mode): ``queue_size = "8"``, ``queue_size = 8.0``
or ``enabled = 1`` is a wrong type, not something to guess at, and numbers must be finite.
A bad file fails with one line that names the file, the dotted key and the expected form,
which is read from the schema itself (the field's type and bounds), e.g.::

    configs/stream/x.toml: key 'capture.queue_size': expected an integer greater than or equal to 1, got 'ten'

pydantic is used rather than hand-written checks because it already knows every field's type
and constraints; only its wording is replaced, so that every config speaks the same way.
"""

from __future__ import annotations

import datetime
import difflib
import json
import tomllib
import types
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from engines.errors import ConfigError, InputError

__all__ = ["ConfigModel", "json_object_option", "load_config", "parse_config"]


class ConfigModel(BaseModel):
    """Base of every config schema: unknown keys are errors, numbers finite, values immutable.

    Defaults are not revalidated on each load (strict validation would refuse a ``Path``
    default, since TOML can only give text); tests/test_faults_configs.py checks once that
    every schema's defaults are values its own files could hold.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False, allow_inf_nan=False)


M = TypeVar("M", bound=ConfigModel)

_LONGEST_SHOWN = 80  # characters of a bad value quoted in a message


def parse_config(data: dict[str, Any], schema: type[M], *, source: str = "<config>") -> M:
    """Validate an already-parsed mapping (TOML types); ``source`` names it in errors."""
    try:
        # Through JSON so that strict mode still takes a list for a tuple and a string for a path.
        text = json.dumps(data, default=_json_scalar)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return schema.model_validate_json(text, strict=True)
    except ValidationError as exc:
        problems = list(dict(_describe(error, schema) for error in exc.errors()).values())
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{source}: {problems[0]}{suffix}") from None


def load_config(path: str | Path, schema: type[M]) -> M:
    """Read a TOML file and validate it against ``schema``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not a UTF-8 text file (line {line}, byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError; an integer of > 4300 digits; deep nesting
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, schema, source=str(path))


def json_object_option(text: str | None, option: str) -> dict[str, Any] | None:
    """A command-line option whose value is a JSON object (e.g. ``--model-args '{"flip_prob": 0.5}'``)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{option} is not JSON: {exc.msg}", column=option) from None
    if not isinstance(value, dict):
        raise InputError(f"{option} must be a JSON object", column=option)
    return value


def _json_scalar(value: Any) -> Any:
    """TOML dates and times as ISO text, paths as text; anything else is not a config value."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"a {type(value).__name__} is not a config value")


# -- messages -------------------------------------------------------------------------------


def _describe(error: dict[str, Any], schema: type[BaseModel]) -> tuple[tuple, str]:
    """``(key, message)`` for one pydantic error; errors of one key share it (unions give several)."""
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return loc, f"key {_dotted(loc)!r}: unknown key{_known_keys(schema, loc)}"
    if kind == "missing":
        parent, annotation, constraints = _resolve(schema, loc[:-1])
        if loc and parent == loc[:-1] and get_origin(annotation) in (list, tuple):  # too few items
            return parent, f"key {_dotted(parent)!r}: expected {_form(annotation, constraints)}, got {_shown(error)}"
        return loc, f"key {_dotted(loc)!r}: required key is missing"
    if kind in ("value_error", "assertion_error"):  # a validator's own sentence
        reason = " ".join(error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ").split())
        return loc, f"key {_dotted(loc)!r}: {reason}" if loc else reason
    key, annotation, constraints = _resolve(schema, loc)
    expected = _form(annotation, constraints)
    if expected is None:  # a type this module does not describe: pydantic's words
        message = error["msg"]
        expected = (message[0].lower() + message[1:]).removeprefix("input should be ")
    return key, f"key {_dotted(key)!r}: expected {expected}, got {_shown(error)}"


def _dotted(loc: Iterable) -> str:
    return ".".join(str(part) for part in loc) or "<top level>"


def _shown(error: dict[str, Any]) -> str:
    text = repr(error.get("input"))
    return text if len(text) <= _LONGEST_SHOWN else text[: _LONGEST_SHOWN - 3] + "..."


def _known_keys(schema: type[BaseModel], loc: tuple) -> str:
    """`` (did you mean 'x'?)`` or ``; known keys: ...`` for an unknown key at ``loc``."""
    parent, annotation, _ = _resolve(schema, loc[:-1])
    if parent != loc[:-1] or not _is_model(annotation):
        return ""
    known = list(annotation.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; known keys: {', '.join(known)}"


def _resolve(schema: type[BaseModel], loc: tuple) -> tuple[tuple, Any, list]:
    """The longest prefix of ``loc`` that the schema describes, with its type and constraints.

    The walk stops at a union's member tag (pydantic's ``'int'``, ``'list[int]'``): the error is
    then reported for the whole key, with every form the union accepts.
    """
    annotation: Any = schema
    constraints: list = []
    for depth, part in enumerate(loc):
        annotation, constraints = _unannotated(annotation, constraints)
        members = _union_members(annotation)
        if members is not None and len(members) == 1:
            annotation = members[0]
            annotation, constraints = _unannotated(annotation, constraints)
        origin, args = get_origin(annotation), get_args(annotation)
        if _is_model(annotation) and part in annotation.model_fields:
            field = annotation.model_fields[part]
            annotation, constraints = field.annotation, list(field.metadata)
        elif origin is dict and args:
            annotation, constraints = args[1], []
        elif origin in (list, tuple, set, frozenset) and args and isinstance(part, int):
            fixed = origin is tuple and args[-1] is not Ellipsis
            if fixed and part >= len(args):
                return loc[:depth], annotation, constraints
            annotation, constraints = (args[part] if fixed else args[0]), []
        else:
            return loc[:depth], annotation, constraints
    return loc, annotation, constraints


def _unannotated(annotation: Any, constraints: list) -> tuple[Any, list]:
    """``Annotated[T, ...]`` -> ``T`` plus its constraints (FieldInfo's flattened)."""
    constraints = list(constraints)
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        constraints += extra
    flat = []
    for item in constraints:
        flat += item.metadata if isinstance(item, FieldInfo) else [item]
    return annotation, flat


def _union_members(annotation: Any) -> list | None:
    """The members of a union other than None (a TOML file cannot say None), or None if not a union."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [member for member in get_args(annotation) if member is not type(None)]
    return None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _either(forms: list[str]) -> str:
    return forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} or {forms[-1]}"


_SINGULAR = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURAL = {bool: "booleans (true or false)", int: "integers", float: "numbers", str: "strings"}


def _form(annotation: Any, constraints: Iterable = ()) -> str | None:
    """How a value of this type is written in TOML, in words: ``an integer greater than 0``."""
    annotation, constraints = _unannotated(annotation, list(constraints))
    members = _union_members(annotation)
    if members is not None:
        forms = [_form(member, constraints) for member in members]
        return None if None in forms else _either(forms)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return _either([repr(value) for value in args])
    if annotation in _SINGULAR:
        return _SINGULAR[annotation] + _bounds(constraints)
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "a path (a string)"
    if _is_model(annotation):
        return "a table"
    if origin is dict and args:
        items = _plural(args[1])
        return None if items is None else f"a table of {items}"
    if origin in (list, tuple, set, frozenset) and args:
        if origin is tuple and args[-1] is not Ellipsis:
            if len(set(args)) == 1 and (items := _plural(args[0])) is not None:
                return f"a list of {len(args)} {items}"
            forms = [_form(arg) for arg in args]
            return None if None in forms else f"a list of {len(args)} values: {'; '.join(forms)}"
        items = _plural(args[0])
        return None if items is None else f"a list of {items}"
    return None


def _plural(annotation: Any) -> str | None:
    annotation, constraints = _unannotated(annotation, [])
    if annotation in _PLURAL:
        return _PLURAL[annotation] + _bounds(constraints)
    form = _form(annotation, constraints)
    return None if form is None else f"values, each {form}"


_BOUND_WORDS = (
    (annotated_types.Ge, "ge", "greater than or equal to"),
    (annotated_types.Gt, "gt", "greater than"),
    (annotated_types.Le, "le", "less than or equal to"),
    (annotated_types.Lt, "lt", "less than"),
)


def _bounds(constraints: Iterable) -> str:
    """`` greater than 0 and less than 1`` (or `` from 0 to 65535`` when both ends are included)."""
    found: dict[str, Any] = {}
    for item in constraints:
        for kind, attribute, _ in _BOUND_WORDS:
            if isinstance(item, kind):
                found[attribute] = getattr(item, attribute)
    if "ge" in found and "le" in found:
        return f" from {found['ge']} to {found['le']}"
    words = [f"{phrase} {found[attribute]}" for _, attribute, phrase in _BOUND_WORDS if attribute in found]
    return " " + " and ".join(words) if words else ""
