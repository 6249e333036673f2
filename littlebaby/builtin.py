"""The pretrained baby: one run that ships inside the package, `baby generate` with no run, `pretrained` by name.

littlebaby/pretrained/ is an --out folder of exactly one run (configs/, models/, outputs/), copied there by
`python benchmarks/ages.py --ship AGE` from a real `baby train --age AGE --seed 0 --threads 2` run, so its config
records the command and seed that made it and its report the losses it went through (tests/test_pretrained.py
checks both against the weights). It is only ever read: generations of it and finetunes from it are written
under the user's --out.
"""

import contextlib
import pathlib

from littlebaby.errors import BabyError
from littlebaby.runs import run_ids

NAME = "pretrained"             # how a command names it: baby generate pretrained, baby finetune pretrained
FOLDER = pathlib.Path(__file__).resolve().parent / "pretrained"


def folder() -> pathlib.Path:
    """The folder that holds the shipped run (a function, so a test can point it elsewhere)."""
    return FOLDER


def guid() -> str:
    """The GUID of the shipped run: the one run in ``folder()``."""
    found = run_ids(folder())
    if len(found) != 1:
        raise BabyError(f"expected one run in {folder()}, found {len(found)}")
    return found[0]


@contextlib.contextmanager
def shipped_files():
    """Turn any failure to read the shipped run into one BabyError that says it is the shipped model and how to
    get a working one."""
    try:
        yield
    except (BabyError, OSError, ValueError, KeyError, TypeError) as e:
        raise BabyError(f"the pretrained baby that ships with littlebaby is missing or damaged ({e}); reinstall "
                        f"littlebaby (`pip install --force-reinstall littlebaby`, or `pip install -e .` in a checkout), "
                        f"or train your own (`baby train --age 24m`)") from None
