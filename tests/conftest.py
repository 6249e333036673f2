"""Fixtures shared by the test files: one finished tiny run, trained once per session, and a fresh copy of it
for each test that damages or extends it."""

import shutil

import pytest

from littlebaby.cli import main

TINY_RUN_FLAGS = ["--n-ctx", "8", "--n-emb", "16", "--head-size", "16", "--n-heads", "2", "--n-layers", "1",
                  "--batch-size", "4", "--lr", "0.01"]
TINY_RUN_TEXT = "".join(f"ANNE:\nI have {n} roses, and you have none.\n\nBEN:\nThen give me one.\n\n"
                        for n in range(40))


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A folder holding one complete 4-step run of a tiny model (train it once; do not change it)."""
    out = tmp_path_factory.mktemp("trained")
    (out / "tiny.txt").write_text(TINY_RUN_TEXT, encoding="utf-8")
    code = main(["train", "--data", str(out / "tiny.txt"), "--steps", "4", "--quiet", "--out", str(out),
                 *TINY_RUN_FLAGS])
    assert code == 0
    return out


@pytest.fixture
def work(tmp_path, trained):
    """A copy of the trained run's folder that a test may damage."""
    shutil.copytree(trained, tmp_path / "w")
    return tmp_path / "w"
