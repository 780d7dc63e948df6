"""One validated loader for every config file in ``configs/``.

Configs are TOML, described by pydantic models that forbid unknown keys. A bad file
fails with one line that names the file, the dotted key and the expected form, e.g.::

    configs/synth.toml: key 'events.amplitude_px': expected a number greater than 0, got -1

pydantic is used rather than hand-written checks because it already turns type
annotations and constraints into precise messages.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from engines.errors import ConfigError, InputError

__all__ = ["ConfigModel", "json_object_option", "load_config", "parse_config"]


class ConfigModel(BaseModel):
    """Base of every config schema: unknown keys are errors and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


M = TypeVar("M", bound=ConfigModel)


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "<top level>"
    if error["type"] == "extra_forbidden":
        return f"key {key!r}: unknown key"
    if error["type"] == "missing":
        return f"key {key!r}: required key is missing"
    message = error["msg"]
    expected = message[0].lower() + message[1:]
    return f"key {key!r}: expected {expected.removeprefix('input should be ')}, got {error.get('input')!r}"


def parse_config(data: dict[str, Any], schema: type[M], *, source: str = "<config>") -> M:
    """Validate an already-parsed mapping; ``source`` names it in errors."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{source}: {_describe(first)}{suffix}") from None


def load_config(path: str | Path, schema: type[M]) -> M:
    """Read a TOML file and validate it against ``schema``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
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
