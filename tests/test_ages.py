"""`baby train --age`: the presets grow with the age, an unknown age names the valid ones, and options given
with an age win over its preset, as the run's config records."""

import json

import pytest

from helpers import TEXT, TINY_FLAGS
from littlebaby import ages, api
from littlebaby.cli import main
from littlebaby.errors import BabyError
from littlebaby.model import Config, num_params
from littlebaby.runs import RunPaths, run_ids


def test_the_ages_grow_in_size_and_training():
    table = ages.ages()
    assert list(table) == ["3m", "6m", "12m", "24m", "48m"]
    assert table["3m"]["title"] == "3 months: coos and gurgles"
    assert table["48m"]["title"] == "48 months: mini philosopher"
    sizes, contexts, compute = [], [], []
    for entry in table.values():
        model, train = api.train_configs(**entry["options"])
        sizes.append(num_params(Config.from_dict({**model.to_dict(), "vocab_size": 70})))
        contexts.append(model.n_ctx)
        compute.append(sizes[-1] * train.steps * model.batch_size * model.n_ctx)   # parameters x tokens seen
    assert sizes == sorted(sizes) and len(set(sizes)) == 5, sizes
    assert contexts == sorted(contexts), contexts
    # the two oldest take fewer steps (a step costs more), but every age trains with more compute than the last
    assert compute == sorted(compute) and len(set(compute)) == 5, compute


def test_an_unknown_age_is_one_line_naming_the_valid_ones(tmp_path, capsys):
    assert main(["train", "--age", "5m", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown --age '5m'") and err.count("\n") == 1, err
    assert all(f"{age} (" in err for age in ages.ages())
    assert not (tmp_path / "configs").exists()
    with pytest.raises(BabyError, match="age does not apply"):
        api.finetune("pretrained", age="3m", out=tmp_path)


def test_options_given_with_an_age_win_over_its_preset():
    model, train = api.train_configs(age="24m", n_layers=2, epochs=0.5)
    preset = ages.ages()["24m"]["options"]
    assert model.n_layers == 2 and model.n_emb == preset["n_emb"] and model.n_ctx == preset["n_ctx"]
    assert train.epochs == 0.5 and train.steps is None      # a budget given replaces the preset's steps
    model, _ = api.train_configs(config={"n_emb": 32, "head_size": 32}, age="3m", n_emb=48)
    assert (model.n_emb, model.head_size, model.n_layers) == (48, 32, 1)   # flag > --config > preset


def test_the_config_records_the_age_and_what_won_over_it(tmp_path, capsys):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    argv = ["train", "--age", "3m", "--data", str(tmp_path / "tiny.txt"), "--steps", "2", "--completion-tokens",
            "0", "--out", str(tmp_path), *TINY_FLAGS]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "the options given win over the preset" in printed.err
    assert "completion_" not in printed.out + printed.err       # --completion-tokens 0: no file, none listed
    (guid,) = run_ids(tmp_path)
    record = json.loads(RunPaths(tmp_path, guid).config.read_text(encoding="utf-8"))
    assert record["command"] == "baby " + " ".join(argv)
    age = record["age"]
    assert age["name"] == "3m" and age["preset"] == ages.ages()["3m"]["options"]
    assert age["overridden"]["n_emb"] == {"preset": 64, "used": 16}
    assert age["overridden"]["steps"] == {"preset": 3000, "used": 2}
    assert "n_layers" not in age["overridden"]          # given, but equal to the preset's 1: no conflict
    assert record["model"]["n_emb"] == 16 and record["model"]["dropout"] == 0.0   # the rest is the preset's
    assert main(["info", guid, "--out", str(tmp_path)]) == 0
    assert "n_emb 16 won over the preset's 64" in capsys.readouterr().out
