"""Fixtures shared by the test files: one finished tiny run, trained once per session, and a fresh copy of it
for each test that damages or extends it."""

import shutil

import pytest

from helpers import TEXT, TINY_FLAGS
from littlebaby.cli import main


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A folder holding one complete 4-step run of a tiny model (train it once; do not change it)."""
    out = tmp_path_factory.mktemp("trained")
    (out / "tiny.txt").write_text(TEXT, encoding="utf-8")
    code = main(["train", "--data", str(out / "tiny.txt"), "--steps", "4", "--quiet", "--out", str(out),
                 *TINY_FLAGS])
    assert code == 0
    return out


@pytest.fixture
def work(tmp_path, trained):
    """A copy of the trained run's folder that a test may damage."""
    shutil.copytree(trained, tmp_path / "w")
    return tmp_path / "w"
