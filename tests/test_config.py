"""Options are declared once, as fields (littlebaby.config.option): each field's interval is checked and named."""

import dataclasses
import typing

import pytest

from littlebaby import config as configlib
from littlebaby.errors import ConfigError
from littlebaby.model import Config
from littlebaby.training import TrainConfig

CONFIGS = [Config, TrainConfig]


def outside(field, annotation):
    """A value just outside the field's interval, of the field's type."""
    low, low_in, high, high_in = configlib.parse_interval(field.metadata["within"])
    number = int if int in (annotation, *typing.get_args(annotation)) else float
    return number(low - 1 if low_in else low)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_interval_refuses_a_value_just_outside_it(cls):
    hints = typing.get_type_hints(cls)
    checked = [f for f in dataclasses.fields(cls) if f.metadata.get("within")]
    assert checked, "no field declares an interval"
    for f in checked:
        extra = {"tokenizer": "bpe"} if f.name == "vocab_size" and cls is TrainConfig else {}
        with pytest.raises(ConfigError, match=f"key '{f.name}' must be"):
            cls(**{f.name: outside(f, hints[f.name]), **extra})


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_declared_with_help(cls):
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} is not declared with option()"


def test_intervals_read_as_numbers():
    assert configlib.parse_interval("[0, 1)") == (0.0, True, 1.0, False)
    assert configlib.parse_interval("(0, inf)") == (0.0, False, float("inf"), False)


def test_nan_and_infinity_are_outside_every_interval():
    for value in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="'lr' must be a positive number"):
            Config(lr=value)
