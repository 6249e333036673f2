"""`baby` end to end on a tiny corpus: train, runs, generate, finetune, resume, and the error contract."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import typing

import pytest

from helpers import TEXT, TINY_FLAGS, flags
from littlebaby import api, cli, training
from littlebaby import config as configlib
from littlebaby.cli import main
from littlebaby.model import Config
from littlebaby.training import TrainConfig
from littlebaby.runs import RunPaths, run_ids

TINY = TINY_FLAGS


@pytest.fixture
def folder(tmp_path):
    """A temporary folder holding the tiny corpus, tiny.txt (conftest.work is a copy of a trained run)."""
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path


def baby(*args):
    return main([str(a) for a in args])


def test_train_runs_generate_finetune(folder, capsys):
    assert baby("train", "--data", folder / "tiny.txt", "--steps", "6", "--out", folder, *TINY) == 0
    (guid,) = run_ids(folder)
    err = capsys.readouterr().err
    assert f"run {guid}: complete after 6/6 steps" in err and "completion_" in err
    for path in (RunPaths(folder, guid).config, RunPaths(folder, guid).completion, RunPaths(folder, guid).report_png):
        assert path.exists()

    assert baby("runs", "--out", folder) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["GUID", "DATE"] and table[1].startswith(guid) and "6/6" in table[1]

    assert baby("generate", "last", "--prompt", "ANNE:", "--max-tokens", "12", "--seed", "1", "--out", folder) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ANNE:") and len(out.rstrip("\n")) <= 17 and "saved to" in err
    assert baby("generate", guid[:5], "--prompt", "ANNE:", "--max-tokens", "12", "--seed", "1", "--no-cache",
                "--temperature", "0.5", "--top-k", "3", "--top-p", "0.9", "--out", folder) == 0

    (folder / "more.txt").write_text("CLEO:\nXylophones, zithers!\n\n" * 20, encoding="utf-8")
    assert baby("finetune", "last", "--data", folder / "more.txt", "--steps", "3", "--quiet", "--out", folder) == 0
    assert run_ids(folder) == sorted([guid, guid + "_finetuned"])
    assert baby("generate", "last", "--prompt", "CLEO:", "--max-tokens", "5", "--out", folder) == 0
    assert baby("finetune", guid, "--data", folder / "more.txt", "--steps", "3", "--quiet", "--out", folder) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_errors_are_one_line_and_exit_2(folder, capsys):
    assert baby("generate", "last", "--out", folder) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no runs in") and err.count("\n") == 1 and "Traceback" not in err
    assert baby("train", "--data", folder / "missing.txt", "--out", folder, *TINY) == 2
    assert capsys.readouterr().err.startswith("error: data file not found")
    baby("train", "--data", folder / "tiny.txt", "--steps", "2", "--quiet", "--out", folder, *TINY)
    assert baby("generate", "last", "--prompt", "Zürich", "--out", folder) == 2
    assert "'ü'" in capsys.readouterr().err
    assert baby("train", "--resume", "last", "--steps", "4", "--out", folder) == 2
    assert "error: --resume continues a run with its own settings (only --device, --threads, --kernels may change)" in \
        capsys.readouterr().err


def test_a_stopped_run_says_how_to_resume(folder, capsys, monkeypatch):
    calls, evaluate = [], training.evaluate

    def interrupted(*args):   # two calls per eval (train, val): the third is the step-2 eval's
        calls.append(args)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return evaluate(*args)

    monkeypatch.setattr(training, "evaluate", interrupted)
    assert baby("train", "--data", folder / "tiny.txt", "--steps", "8", "--eval-every", "2", "--out", folder, *TINY) == 0
    (guid,) = run_ids(folder)
    err = capsys.readouterr().err
    assert f"run {guid}: interrupted after 2/8 steps" in err and f"resume with: baby train --resume {guid} --out {folder}" in err


def test_one_budget_only(folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        baby("train", "--steps", "3", "--epochs", "1")
    assert exit_info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_config_file_and_resume(folder, capsys):
    options = {"n_ctx": 8, "n_emb": 16, "head_size": 16, "n_heads": 2, "n_layers": 1, "batch_size": 4,
               "steps": 5, "completion_tokens": 0}
    (folder / "c.json").write_text(json.dumps(options), encoding="utf-8")
    assert baby("train", "--data", folder / "tiny.txt", "--config", folder / "c.json", "--quiet", "--out", folder) == 0
    (guid,) = run_ids(folder)
    record = json.loads(RunPaths(folder, guid).config.read_text(encoding="utf-8"))
    assert record["model"]["n_emb"] == 16 and record["plan"]["steps"] == 5
    assert baby("train", "--resume", guid, "--out", folder) == 2
    assert "already complete" in capsys.readouterr().err
    (folder / "bad.json").write_text(json.dumps({"n_embd": 3}), encoding="utf-8")
    assert baby("train", "--config", folder / "bad.json", "--out", folder) == 2
    assert "unknown option 'n_embd'" in capsys.readouterr().err


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "littlebaby", "--help"], capture_output=True, text=True,
                            encoding="utf-8", timeout=60)
    assert result.returncode == 0
    for command in ("train", "finetune", "generate", "runs"):
        assert command in result.stdout


def test_architecture_switches_from_flags_are_saved_and_reloaded(folder, capsys):
    switches = ["--c-sequence", "post", "--c-attention", "moh", "--c-network", "moe", "--n-experts", "3",
                "--moe-top-k", "2", "--moe-expansion", "2", "--moe-aux-weight", "0.05", "--weight-tying"]
    assert baby("train", "--data", folder / "tiny.txt", "--steps", "4", "--quiet", "--out", folder, *TINY,
                *switches) == 0
    (guid,) = run_ids(folder)
    model = json.loads(RunPaths(folder, guid).config.read_text(encoding="utf-8"))["model"]
    assert model | dict(c_sequence="post", c_attention="moh", c_network="moe", n_experts=3, moe_top_k=2,
                        moe_expansion=2, moe_aux_weight=0.05, weight_tying=True) == model
    assert baby("finetune", "last", "--data", folder / "tiny.txt", "--steps", "2", "--quiet", "--out", folder) == 0
    finetuned = json.loads(RunPaths(folder, guid + "_finetuned").config.read_text(encoding="utf-8"))["model"]
    assert finetuned == model
    capsys.readouterr()
    assert baby("generate", "last", "--prompt", "ANNE:", "--max-tokens", "8", "--num-samples", "3", "--out",
                folder) == 0
    assert capsys.readouterr().out.count("=== sample") == 2
    with pytest.raises(SystemExit) as exit_code:  # argparse refuses an unknown choice with its usage line
        baby("train", "--data", folder / "tiny.txt", "--c-sequence", "middle", "--out", folder)
    assert exit_code.value.code == 2


def test_info_shows_config_parameters_flops_and_losses(folder, capsys):
    from littlebaby.model import Config, flops_per_token, num_params
    assert baby("train", "--data", folder / "tiny.txt", "--steps", "4", "--quiet", "--out", folder, *TINY) == 0
    capsys.readouterr()
    assert baby("info", "last", "--out", folder) == 0
    out = capsys.readouterr().out
    model = json.loads(RunPaths(folder, run_ids(folder)[0]).config.read_text(encoding="utf-8"))["model"]
    config = Config.from_dict(model)
    totals = [line.split() for line in out.splitlines() if line.strip().startswith("total")]
    assert totals == [["total", f"{num_params(config):,}"]]
    assert f"{flops_per_token(config):,}" in out and "val " in out and "n_ctx           8" in out
    assert baby("info", "nope", "--out", folder) == 2


def test_the_loss_plot_leaves_pyplot_alone():
    import matplotlib
    from littlebaby.report import plot_png
    before = matplotlib.get_backend()
    png = plot_png({"guid": "g", "loss": [3.0, 2.5, 2.0], "evals": [
        {"step": 0, "train_loss": 3.1, "val_loss": 3.2}, {"step": 3, "train_loss": 2.0, "val_loss": 2.2}]})
    assert png.startswith(b"\x89PNG") and matplotlib.get_backend() == before


def test_a_directory_as_data_and_a_model_too_big_for_memory_are_one_line(folder, capsys):
    assert baby("train", "--data", folder, "--out", folder / "o", *TINY) == 2
    assert "is a directory" in capsys.readouterr().err
    assert baby("train", "--data", folder / "tiny.txt", "--n-emb", "1000000000", "--head-size", "1000000000",
                "--out", folder / "o", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not enough memory") and err.count("\n") == 1


# --- every option is a flag, and every flag reaches the config ---------------------------------------------

NOT_OPTIONS = {"-h", "--help", "--data", "--config", "--out", "--quiet", "--resume", "--workers", "--overwrite"}


def other_value(field, annotation):
    """A valid value of the field that is not its default."""
    if typing.get_origin(annotation) is typing.Literal:
        return next(choice for choice in typing.get_args(annotation) if choice != field.default)
    if annotation is bool:
        return not field.default
    integer = int in (annotation, *typing.get_args(annotation))
    if field.default is None:
        return 3 if integer else 0.25
    _, _, high, _ = configlib.parse_interval(field.metadata["within"])
    if high < float("inf"):
        return (field.default + high) / 2                    # inside [0, 1)
    return field.default + 1 if integer else field.default * 2


def other_values(classes):
    """field name -> a non-default value for every option of the config classes, consistent across fields."""
    values = {f.name: other_value(f, typing.get_type_hints(cls)[f.name])
              for cls in classes for f in configlib.options(cls)}
    if "n_heads" in values:
        values["head_size"] = values["n_heads"] * 8           # head_size must divide by n_heads
    if "age" in values:
        values["age"] = "6m"                                  # a name from littlebaby/presets/ages.json
    return values


def option_strings(parser, command):
    sub = parser._subparsers._group_actions[0].choices[command]
    return {s for action in sub._actions for s in action.option_strings}


def test_every_option_is_a_flag_and_every_flag_reaches_the_config():
    not_options = [f.name for cls in (Config, TrainConfig) for f in dataclasses.fields(cls)
                   if f not in configlib.options(cls)]
    assert not_options == ["vocab_size"]                      # the model's: the tokenizer sets it
    values = other_values([Config, TrainConfig])
    budgets = [f.name for f in configlib.options(TrainConfig) if f.metadata["group"] == "budget"]
    parser = cli.build_parser()
    for budget in budgets:   # the budget flags exclude each other: one command line each
        chosen = {k: v for k, v in values.items() if k not in budgets or k == budget}
        args = parser.parse_args(["train", *flags(chosen)])
        model, training = api.train_configs(**cli.training_options(args))
        for name, value in chosen.items():
            assert getattr(model if name in api.MODEL_KEYS else training, name) == value, name
        assert all(getattr(training, other) is None for other in budgets if other != budget)
    every_flag = {"--" + name.replace("_", "-") for name in values}
    every_flag |= {"--no-" + name.replace("_", "-") for name, value in values.items() if isinstance(value, bool)}
    assert option_strings(parser, "train") - NOT_OPTIONS == every_flag


def test_finetune_offers_the_flags_a_finetune_may_set():
    """Every model option (a finetune refuses to change its shape with a message naming the key) and every
    training option but the tokenizer's, which a finetune keeps, and the age, which sizes a new model only."""
    kept = {f.name for f in configlib.options(TrainConfig) if not configlib.finetune_sets(TrainConfig, f)}
    settable = {f.name for f in configlib.options(Config) if configlib.finetune_sets(Config, f)}
    assert kept == {"tokenizer", "vocab_size", "age"} and settable == {"dropout", "batch_size", "lr"}
    values = {k: v for k, v in other_values([Config, TrainConfig]).items() if k not in kept}
    del values["steps"], values["max_time"]                   # one budget
    args = cli.build_parser().parse_args(["finetune", "last", *flags(values)])
    options = cli.training_options(args)
    assert {k: v for k, v in options.items() if v is not None} == values
    assert set(options) == set(values) | {"steps", "max_time"}
    assert not {"--tokenizer", "--vocab-size", "--age"} & option_strings(cli.build_parser(), "finetune")


def test_errors_name_python_keywords_and_the_cli_names_flags():
    parser = cli.build_parser()
    message = ("pass `overwrite=True`; lower `lr` or `n_ctx`; `tokenizer='bpe'`; `weight_tying=False`; "
               "`baby runs` lists them; `last` is no flag")
    assert cli.flag_advice(message, parser) == (
        "pass --overwrite; lower --lr or --n-ctx; --tokenizer bpe; --no-weight-tying; `baby runs` lists them; "
        "`last` is no flag")


def test_no_message_of_the_package_names_a_flag_itself():
    """Every BabyError is raised by code that Python callers use too, so its text names keywords (`top_p`); the
    CLI alone turns them into flags. A flag written into a message (" --top-p") would speak CLI to Python."""
    import pathlib
    import re
    import littlebaby
    package = pathlib.Path(littlebaby.__file__).parent
    raises = re.compile(r"BabyError\((?:[^()]|\([^()]*\))*\)", re.S)        # the call, strings and all
    offenders = [f"{path.relative_to(package)}: {call[:80]}"
                 for path in package.rglob("*.py") if path.name != "cli.py"
                 for call in raises.findall(path.read_text(encoding="utf-8"))
                 if re.search(r"(?<![\w-])--[a-z]", re.sub(r"`[^`]*`", "", call))]   # `baby ...`: a command, quoted
    assert offenders == []


def test_a_sampling_error_names_the_keyword_in_python_and_the_flag_on_the_command_line(capsys):
    from littlebaby.errors import BabyError
    from littlebaby.sampling import check_settings
    with pytest.raises(BabyError, match="`top_p` must be in"):
        check_settings(10, 1.0, None, 2.0)
    assert cli.flag_advice("`top_p` must be in (0, 1], got 2.0", cli.build_parser()) == \
        "--top-p must be in (0, 1], got 2.0"


def test_a_reader_that_stops_early_ends_generate_quietly(tmp_path):
    """`baby generate | head`: once the reader is gone, the next write fails; no traceback, the shell's 141."""
    child = subprocess.Popen([sys.executable, "-m", "littlebaby", "generate", "--prompt", "ROMEO:", "--max-tokens",
                              "50", "--kernels", "numpy"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()                                            # the reader left before the first token
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141 and "Traceback" not in err, err
