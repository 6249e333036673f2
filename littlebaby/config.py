"""Typed configs that round-trip through JSON, refuse what they do not know, and declare every option once.

Every config in the project is a dataclass; ``from_dict`` checks each key against the dataclass fields and
each value against the field's type, so a typo (``n_embd``) or a wrong type (``"64"``) is named in the error
rather than silently ignored.

An option is one line, a field made by ``option``: its type, default, help and allowed interval.

    n_layers: int = option(4, "L: transformer blocks", within="[1, inf)")

That line is the keyword of ``littlebaby.train``, the key of a ``--config`` file, the flag ``--n-layers`` of
``baby train`` and ``baby finetune`` with its help and default (``littlebaby.cli`` builds the flags from the
fields), and the check ``validate`` makes. Checks that tie fields together stay in each config's ``validate``.
"""

import dataclasses
import types
import typing

from littlebaby.errors import ConfigError


def option(default, help: str, *, within: str | None = None, unset: str | None = None, group: str | None = None,
           metavar: str | None = None, finetune: bool | None = None, set_by: str | None = None):
    """A config field that is an option (see the module docstring).

    help      what it is, the flag's help; the default is shown after it
    within    the interval the value must lie in: "[1, inf)" a positive integer, "(0, inf)" a positive number,
              "[0, inf)" zero or more, "[0, 1)"; None (the value of an unset option) always passes
    unset     what a default of None means ("about 10 evals per run"), shown as the flag's default
    group     the heading the flag is listed under (default: the config's); "budget" flags exclude each other
    metavar   the flag's placeholder (default: N for an int, F for a float)
    finetune  whether ``baby finetune`` may set it (default: the config's ``FINETUNE_SETS``)
    set_by    who sets a field that is no option at all ("the tokenizer"): no keyword, no flag
    """
    metadata = {"help": help, "within": within, "unset": unset, "group": group, "metavar": metavar,
                "finetune": finetune, "set_by": set_by}
    return dataclasses.field(default=default, metadata=metadata)


def options(cls) -> list[dataclasses.Field]:
    """The fields of config class ``cls`` that are options, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata and f.metadata["set_by"] is None]


def finetune_sets(cls, f: dataclasses.Field) -> bool:
    """Whether a finetune may set option ``f`` of ``cls`` (else it keeps the parent run's value)."""
    return cls.FINETUNE_SETS if f.metadata.get("finetune") is None else f.metadata["finetune"]


def parse_interval(text: str) -> tuple[float, bool, float, bool]:
    """"[0, 1)" -> (0.0, True, 1.0, False): the bounds and whether each is included."""
    low, high = (float(bound) for bound in text[1:-1].split(","))
    return low, text[0] == "[", high, text[-1] == "]"


def check_ranges(config) -> None:
    """Raise ConfigError naming the first field whose value lies outside its ``within`` interval."""
    for f in dataclasses.fields(config):
        value, interval = getattr(config, f.name), f.metadata.get("within")
        if interval is None or value is None:
            continue
        low, low_in, high, high_in = parse_interval(interval)
        inside = (value >= low if low_in else value > low) and (value <= high if high_in else value < high)
        if not inside:   # NaN lands here too: every comparison with it is false
            raise ConfigError(f"{config.WHAT} key {f.name!r} must be {interval_words(interval)}, got {value}")


def interval_words(interval: str) -> str:
    """How an error says an interval: "a positive integer" for "[1, inf)", "in [0, 1)" for others."""
    words = {"[1, inf)": "a positive integer", "(0, inf)": "a positive number", "[0, inf)": ">= 0"}
    return words.get(interval, f"in {interval}")


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
    A subclass names itself in errors through ``WHAT``; ``FINETUNE_SETS`` says whether a finetune may set its
    options unless a field says otherwise."""
    WHAT = "config"
    FINETUNE_SETS = True

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Refuse wrong types and values outside their intervals, naming the key. A subclass extends it with
        the checks that tie fields together."""
        check_types(self, self.WHAT)
        check_ranges(self)

    @classmethod
    def from_dict(cls, data, what=None):
        return from_dict(cls, data, what or cls.WHAT)

    def to_dict(self) -> dict:
        return to_dict(self)
