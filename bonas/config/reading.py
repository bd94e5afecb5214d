"""Reading a study config: TOML into the section dataclasses, every key and type checked as it is read.

An unknown key gets the nearest valid one; a wrong type gets the expected one and the value found; then the
values are checked section by section (:meth:`StudyConfig.check`). Each failure is one ConfigError line naming
the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from pathlib import Path
from typing import Any

from bonas.config.checks import nearest
from bonas.config.space import SpaceConfig, VariantConfig
from bonas.config.study import StudyConfig
from bonas.core.errors import ConfigError


def load_config(path: str | Path) -> StudyConfig:
    """Read and check a study config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a .toml study config") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<config>") -> StudyConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: TOML syntax error: {err}") from None
    config = _from_tables(raw, source)
    if not config.name:
        config.name = Path(source).stem if source != "<config>" else ""
    config.check()
    return config


def config_from_dict(raw: dict[str, Any], source: str = "<stored config>") -> StudyConfig:
    """A config from :meth:`StudyConfig.to_dict` output (a study's user attrs), checked."""
    config = _from_tables(raw, source)
    config.check()
    return config


def _from_tables(raw: dict[str, Any], source: str) -> StudyConfig:
    config = _build(StudyConfig, raw, source, "")
    config.path, config.written = source, raw
    return config


def _build(cls: type, raw: Any, source: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where or 'config'}: expected a table, got {_show(raw)}")
    if cls is VariantConfig:
        return _build_variant(raw, source, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in raw.items():
        key_path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{key_path}'{nearest(key, fields)}")
        kwargs[key] = _coerce(hints[key], value, source, key_path)
    return cls(**kwargs)


def _build_variant(raw: dict[str, Any], source: str, where: str) -> VariantConfig:
    space_hints = typing.get_type_hints(SpaceConfig)
    overridable = set(space_hints) - {"variants", "tie_blocks"}
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: {where}.name: every variant needs a non-empty name string")
    overrides = {}
    for key, value in raw.items():
        if key == "name":
            continue
        if key not in overridable:
            raise ConfigError(f"{source}: unknown key '{where}.{key}'{nearest(key, overridable)}")
        overrides[key] = _coerce(space_hints[key], value, source, f"{where}.{key}")
    return VariantConfig(name=name, overrides=overrides)


SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, key)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            _type_error(source, key, f"a list of {_type_name(item)}", value)
        return [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            _type_error(source, key, "a table", value)
        return value
    if hint not in SCALARS:
        raise AssertionError(f"unhandled config type {hint!r} for {key}")
    numeric = (int, float) if hint is float else (hint,)
    if isinstance(value, bool) != (hint is bool) or not isinstance(value, numeric):
        _type_error(source, key, SCALARS[hint], value)
    if hint is float and not math.isfinite(value):
        _type_error(source, key, "a finite number", value)
    return float(value) if hint is float else value


def _type_name(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "tables"
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, str(hint))


def _type_error(source: str, key: str, expected: str, value: Any) -> typing.NoReturn:
    raise ConfigError(f"{source}: {key}: expected {expected}, got {_show(value)}")


def _show(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}
    return f"{kind.get(type(value), type(value).__name__)} {value!r}"
