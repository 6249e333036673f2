"""The pretrained baby that ships in littlebaby/pretrained/: its weights give the validation loss its report
records, the command its config records trains the loss curve its report records, and it generates, finetunes
and lists from the package without ever writing into it; a missing or damaged one is one line."""

import shlex
import shutil

import numpy as np
import pytest

from helpers import TEXT, interrupt_at
from littlebaby import api, builtin, cli, corpus
from littlebaby.cli import main
from littlebaby.data import TokenData, encode_to_file, fixed_batches
from littlebaby.runs import RunPaths, run_ids

RERUN_STEPS = 300
# Per-step training losses of the rerun against the recorded ones. The recipe has no dropout, so the thread count
# changes only the order of float32 sums, as another CPU's BLAS and SIMD width do: measured on the 3m recipe over
# its first 100 steps, --threads 1 against 2 differ by 5e-7 nats at most; the shipped 24m recipe rerun for 300
# steps with NumPy, OpenBLAS and numba held to AVX2 (no AVX-512) differs from the recorded curve by 1.4e-5 at
# most. A changed recipe moves them far more: --seed 1 by 0.24 (other batches), --lr 10% higher or lower by 0.056
# and 0.064 (within the warmup).
TOLERANCE = 0.02


def snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def shipped():
    return api.load_run("pretrained")


def test_the_shipped_weights_give_their_recorded_validation_loss(shipped, tmp_path):
    record, rep = shipped.record, shipped.report
    assert shipped.builtin and rep["status"] == "complete" and record.data["source"] == corpus.SOURCE
    encode_to_file(corpus.builtin_corpus_path(), shipped.tokenizer, tmp_path / "tokens.bin")
    data = TokenData.open(tmp_path / "tokens.bin", shipped.tokenizer.vocab_size)
    assert int(data.n_train) == rep["train_tokens"] and len(data.val) == rep["val_tokens"]
    cfg = shipped.gpt.config
    batches = fixed_batches(data.val, cfg.batch_size, cfg.n_ctx, record.training["eval_batches"], record.seed)
    val_loss = float(np.mean([shipped.gpt.loss(x, y) for x, y in batches]))
    assert rep["evals"][-1]["step"] == rep["steps"]
    assert abs(val_loss - rep["final_val_loss"]) < 1e-3, (val_loss, rep["final_val_loss"])


def test_the_recorded_command_follows_the_recorded_loss_curve(shipped, tmp_path):
    command = shlex.split(shipped.record.command)
    assert command[:2] == ["baby", "train"] and "--seed" in command and "--threads" in command, command
    args = cli.build_parser().parse_args(command[1:])
    assert args.data is None and args.config is None and args.resume is None   # the built-in corpus, flags alone
    rerun = api.train(out=tmp_path, quiet=True, on_step=interrupt_at(RERUN_STEPS), **cli.training_options(args))
    record = shipped.record
    assert (rerun.record.model, rerun.record.training, rerun.record.plan) == (record.model, record.training,
                                                                            record.plan)
    assert rerun.record.age == record.age
    mine, recorded = np.array(rerun.report["loss"]), np.array(shipped.report["loss"][:RERUN_STEPS])
    assert len(mine) == RERUN_STEPS
    assert np.max(np.abs(mine - recorded)) < TOLERANCE, np.max(np.abs(mine - recorded))
    first, shipped_first = rerun.report["evals"][0], shipped.report["evals"][0]   # step 0: the initial weights
    assert first["val_loss"] == pytest.approx(shipped_first["val_loss"], abs=1e-4)


def test_generate_with_no_run_uses_it_and_writes_only_under_out(tmp_path, capsys):
    before = snapshot(builtin.folder())
    assert main(["generate", "--prompt", "ROMEO:", "--max-tokens", "40", "--seed", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out) > 40
    (saved,) = (tmp_path / "outputs").glob(f"completion_{builtin.guid()}_*.txt")
    assert saved.read_text(encoding="utf-8") == out.rstrip("\n")
    assert main(["generate", "pretrained", "--prompt", "ROMEO:", "--max-tokens", "40", "--seed", "0",
                 "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out == out                      # the same baby, the same seed: the same text
    assert snapshot(builtin.folder()) == before


def test_finetune_starts_from_it_and_runs_lists_it(tmp_path, capsys):
    before = snapshot(builtin.folder())
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    assert main(["finetune", "pretrained", "--data", str(tmp_path / "tiny.txt"), "--steps", "2", "--eval-batches",
                 "1", "--completion-tokens", "0", "--quiet", "--out", str(tmp_path)]) == 0
    assert run_ids(tmp_path) == [builtin.guid() + "_finetuned"]
    run = api.load_run("last", tmp_path)
    assert run.record.parent == builtin.guid() and run.record.kind == "finetune"
    assert snapshot(builtin.folder()) == before
    assert main(["runs", "--out", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].startswith(builtin.guid() + "_finetuned") and rows[2].startswith("pretrained")
    assert "built-in" in rows[2]


@pytest.mark.parametrize("damage", ["missing", "truncated model", "bad config", "no tokenizer"])
def test_a_missing_or_damaged_shipped_model_is_one_line(tmp_path, capsys, monkeypatch, damage):
    copy = tmp_path / "pretrained"
    shutil.copytree(builtin.folder(), copy)
    paths = RunPaths(copy, builtin.guid())
    if damage == "missing":
        shutil.rmtree(copy)
    elif damage == "truncated model":
        paths.model.write_bytes(paths.model.read_bytes()[:1000])
    elif damage == "bad config":
        paths.config.write_text("{\"guid\": ", encoding="utf-8")
    else:
        paths.tokenizer.unlink()
    monkeypatch.setattr(builtin, "FOLDER", copy)
    for command in (["generate", "--max-tokens", "5"], ["info", "pretrained"], ["finetune", "pretrained"]):
        assert main([*command, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: the pretrained baby that ships with littlebaby is missing or damaged")
        assert err.count("\n") == 1 and "Traceback" not in err, err
    assert main(["runs", "--out", str(tmp_path / "out")]) == 0   # the table checks the files, reads no tensor
    listed = capsys.readouterr().out
    assert "pretrained" in listed and "built-in, missing or damaged: `baby info pretrained` says why" in listed
