"""Typed configs that round-trip through JSON and refuse what they do not know.

Every config in the project is a dataclass; ``from_dict`` checks each key against the dataclass fields and
each value against the field's type, so a typo (``n_embd``) or a wrong type (``"64"``) is named in the error
rather than silently ignored.
"""

import dataclasses
import types
import typing

from littlebaby.errors import ConfigError


def _type_ok(value, annotation) -> bool:
    """True when a JSON value fits a field annotation (int, float, str, bool, Optional/Union, Literal, tuple)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if origin in (tuple, list):
        args = typing.get_args(annotation)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:  # an int is a fine float in JSON ("lr": 1 is 1.0)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return isinstance(value, annotation)


def from_dict(cls, data: dict, what: str = "config"):
    """Build dataclass ``cls`` from a plain dict, naming the first unknown key or mistyped value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {what}; known keys: {', '.join(fields)}")
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{what} lacks the key {missing[0]!r}; the file is damaged or was not written by "
                          f"littlebaby")
    kwargs = {}
    for key, value in data.items():
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{what} key {key!r} must be of type {_type_name(hints[key])}, got {value!r}")
        if hints[key] is float and isinstance(value, int):
            value = float(value)
        if typing.get_origin(hints[key]) is tuple:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def check_types(config, what: str = "config"):
    """Raise ConfigError naming the first field of a dataclass instance whose value does not fit its type."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _type_ok(value, hints[f.name]):
            raise ConfigError(f"{what} key {f.name!r} must be of type {_type_name(hints[f.name])}, got {value!r}")


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


class TypedConfig:
    """Base of every config dataclass: ``from_dict`` with the checks above, ``to_dict`` for JSON.
    A subclass names itself in errors through ``WHAT``."""
    WHAT = "config"

    @classmethod
    def from_dict(cls, data, what=None):
        return from_dict(cls, data, what or cls.WHAT)

    def to_dict(self) -> dict:
        return to_dict(self)
