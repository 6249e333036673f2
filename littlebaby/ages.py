"""The ages: `baby train --age 3m | 6m | 12m | 24m | 48m`, presets of growing context, depth, width and steps,
named after the original project's table ("3 months: coos and gurgles" ... "48 months: mini philosopher").

The presets live in littlebaby/presets/ages.json, each a title and a dict of options. An age is the bottom
layer of a run's options: a --config file and the flags given with it win over the preset, and the run's
config records the age, the preset and every option that was given a value other than the preset's
(``age_record``). A budget given with an age (--epochs, --max-time) replaces the preset's steps.
`python benchmarks/ages.py` trains every age and writes their figures into the README.
"""

import functools
import json
import pathlib

from littlebaby.errors import BabyError, ConfigError

PRESETS = pathlib.Path(__file__).resolve().parent / "presets" / "ages.json"
RULE = "options given with the age (flags, --config) win over its preset"


@functools.cache
def ages() -> dict:
    """name -> {"title": ..., "options": {...}}, youngest first, read once from PRESETS."""
    try:
        table = json.loads(PRESETS.read_text(encoding="utf-8"))
        if not all(isinstance(v, dict) and isinstance(v.get("options"), dict) for v in table.values()):
            raise ValueError("every age needs a title and options")
    except (OSError, ValueError, AttributeError) as e:
        raise BabyError(f"the ages' presets {PRESETS} cannot be read ({e}); reinstall littlebaby") from None
    return table


def check_age(name) -> None:
    """Refuse an unknown age, naming the valid ones."""
    if name not in ages():
        valid = ", ".join(f"{age} ({entry['title']})" for age, entry in ages().items())
        raise ConfigError(f"unknown `age` {name!r}; the ages are {valid}")


def with_age(given: dict, budget_keys) -> dict:
    """The options of a run asked for with ``given["age"]``: the preset below, ``given`` on top. A budget in
    ``given`` (any of ``budget_keys``) replaces the preset's, since a run has one budget.

    >>> options = with_age({"age": "3m", "n_layers": 2, "epochs": 0.5}, ("steps", "epochs"))
    >>> options["n_layers"], options["n_emb"], "steps" in options
    (2, 64, False)
    """
    check_age(given["age"])
    preset = dict(ages()[given["age"]]["options"])
    if any(given.get(key) is not None for key in budget_keys):
        preset = {k: v for k, v in preset.items() if k not in budget_keys}
    return {**preset, **given}


def age_record(name, used: dict) -> dict:
    """What a run's config says of its age: the name, the title, the preset, and each preset option whose value
    in the run (``used``: model and training options together) is not the preset's, with both values."""
    entry = ages()[name]
    preset = entry["options"]
    overridden = {key: {"preset": value, "used": used.get(key)} for key, value in preset.items()
                  if used.get(key) != value}
    return {"name": name, "title": entry["title"], "preset": preset, "overridden": overridden, "rule": RULE}


def override_note(record: dict) -> str:
    """One line saying which given options won over the age's preset (``age_record``'s ``overridden``)."""
    changes = ", ".join(f"{key} {v['used']} (preset: {v['preset']})" for key, v in record["overridden"].items())
    return f"age {record['name']} ({record['title']}), with {changes}: the options given win over the preset"
