"""Training end to end on a tiny corpus: artifacts, the report, resume equality, budgets, finetune growth."""

import hashlib
import json
import math
import signal

import numpy as np
import pytest

import littlebaby.api as api
from helpers import TEXT, TINY_RUN, interrupt_at
from littlebaby import checkpoint
from littlebaby.errors import BabyError
from littlebaby.runs import RunPaths
from littlebaby.training import TrainConfig, make_plan

TINY = dict(TINY_RUN, completion_tokens=20)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def weights(run_dir, guid):
    params, _ = checkpoint.load_model(RunPaths(run_dir, guid).model)
    return params


def test_train_writes_every_artifact_named_by_the_guid(corpus, tmp_path):
    run = api.train(data=corpus, out=tmp_path, steps=12, quiet=True, **TINY)
    p = RunPaths(tmp_path, run.guid)
    for path in (p.config, p.model, p.tokenizer, p.report_json, p.report_png, p.completion):
        assert path.is_file() and path.stat().st_size > 0, path
    assert p.report_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads(p.config.read_text(encoding="utf-8"))
    assert config["model"]["n_ctx"] == 8 and config["training"]["steps"] == 12 and config["seed"] == 0
    assert config["tokenizer"] == {"kind": "char", "vocab_size": len(set(TEXT))}
    assert config["data"]["chars"] == len(TEXT) and config["data"]["source"] == str(corpus.resolve())
    assert len(p.completion.read_text(encoding="utf-8")) == 20
    leftovers = [f for f in tmp_path.rglob("*") if f.name.endswith(".tmp")]
    assert leftovers == []


def test_report_holds_the_analysis(corpus, tmp_path):
    run = api.train(data=corpus, out=tmp_path, steps=30, eval_every=10, quiet=True, **TINY)
    r = run.report
    assert r["status"] == "complete" and r["steps"] == 30
    assert [e["step"] for e in r["evals"]] == [0, 10, 20, 30]
    assert len(r["loss"]) == len(r["grad_norm"]) == len(r["lr"]) == len(r["step_time"]) == 30
    assert r["tokens_seen"] == 30 * 4 * 8
    per_epoch = math.ceil(run.record.data["train_tokens"] / (4 * 8))     # windows of B x T to cover the split
    assert r["epochs"] == pytest.approx(30 / per_epoch)
    assert r["num_params"] == sum(a.size for a in run.gpt.params.values())
    assert r["flops_per_token"] > 0 and r["achieved_gflops"] > 0 and r["tokens_per_s"] > 0
    assert r["final_val_bpc"] == pytest.approx(r["final_val_loss"] / np.log(2))   # char: one token per char
    assert r["evals"][-1]["val_loss"] < r["evals"][0]["val_loss"] - 0.5           # it learns
    assert max(r["lr"]) == pytest.approx(1e-2) and r["lr"][-1] < 2e-3             # warmup then cosine down
    assert {"numpy", "blas", "cpu", "usable_cpus"} <= set(r["environment"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_then_resumed_run_is_bitwise_identical(corpus, tmp_path, sig):
    options = dict(TINY, dropout=0.1, steps=20, eval_every=6, seed=3, completion_tokens=0)
    whole = api.train(data=corpus, out=tmp_path / "a", quiet=True, **options)
    part = api.train(data=corpus, out=tmp_path / "b", quiet=False, on_step=interrupt_at(9, sig), **options)
    assert part.report["status"] == "interrupted" and part.report["steps"] == 9
    resumed = api.train(resume=part.guid[:8], out=tmp_path / "b", quiet=True)
    a, b = weights(tmp_path / "a", whole.guid), weights(tmp_path / "b", resumed.guid)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    ra, rb = whole.report, resumed.report
    assert rb["status"] == "complete" and rb["loss"] == ra["loss"] and rb["evals"] == ra["evals"]
    with pytest.raises(BabyError, match="already complete"):
        api.train(resume=resumed.guid, out=tmp_path / "b", quiet=True)


def test_resume_rebuilds_a_missing_token_file(corpus, tmp_path):
    part = api.train(data=corpus, out=tmp_path, quiet=True, steps=6, on_step=interrupt_at(2), **TINY)
    RunPaths(tmp_path, part.guid).tokens.unlink()
    assert api.train(resume="last", out=tmp_path, quiet=True).report["steps"] == 6


def test_budgets_become_a_plan():
    tc = TrainConfig(epochs=2.0)
    assert make_plan(tc, 1e-3, n_train=3200, batch_size=4, n_ctx=8).steps == 200
    plan = make_plan(TrainConfig(max_time=1.0), 1e-3, 3200, 4, 8, seconds_per_step=0.5)
    assert plan.steps == 120 and plan.eval_every == 12 and plan.min_lr == pytest.approx(1e-4)
    assert make_plan(TrainConfig(), 1e-3, 3200, 4, 8).steps == 4000
    with pytest.raises(BabyError, match="one training budget"):
        TrainConfig(steps=5, epochs=1.0)


def test_max_time_stops_gracefully_with_every_artifact(corpus, tmp_path):
    run = api.train(data=corpus, out=tmp_path, quiet=True, max_time=0.01, **TINY)
    r = run.report
    assert r["status"] in ("complete", "time budget reached") and r["steps"] >= 1
    assert r["total_time_s"] < 5
    assert RunPaths(tmp_path, run.guid).report_png.exists()


def test_epochs_budget_sees_each_token_about_once(corpus, tmp_path):
    run = api.train(data=corpus, out=tmp_path, quiet=True, epochs=1.0, **TINY)
    assert run.report["epochs"] == pytest.approx(1.0)
    assert run.report["tokens_seen"] >= run.report["train_tokens"]


def test_bad_options_are_named(corpus, tmp_path):
    with pytest.raises(BabyError, match="unknown option 'n_embd'"):
        api.train(data=corpus, out=tmp_path, n_embd=16)
    with pytest.raises(BabyError, match="head_size"):
        api.train(data=corpus, out=tmp_path, **dict(TINY, n_heads=3))
    with pytest.raises(BabyError, match="data file not found"):
        api.train(data=tmp_path / "nope.txt", out=tmp_path)


def test_config_file_with_underscores_and_flag_override(corpus, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(dict(TINY, steps=4, n_layers=2)), encoding="utf-8")
    run = api.train(data=corpus, config=tmp_path / "c.json", out=tmp_path, quiet=True, n_layers=1)
    assert run.record.model["n_layers"] == 1 and run.report["steps"] == 4
    again = api.train(data=corpus, config=RunPaths(tmp_path, run.guid).config, out=tmp_path, quiet=True)
    assert again.record.model == run.record.model and again.report["steps"] == 4


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_finetune_grows_the_vocab_and_leaves_the_parent_alone(corpus, tmp_path):
    parent = api.train(data=corpus, out=tmp_path, steps=5, quiet=True, **TINY)
    before = digest(tmp_path)
    new_text = tmp_path / "new.txt"
    new_text.write_text("ZOE:\nQuick, fix my wax jug!\n\n" * 30, encoding="utf-8")
    child = api.finetune("last", data=new_text, out=tmp_path, steps=5, quiet=True, completion_tokens=5)
    assert child.guid == parent.guid + "_finetuned" and child.record.parent == parent.guid
    after = digest(tmp_path)
    assert {k: after[k] for k in before if parent.guid in k} == {k: v for k, v in before.items() if parent.guid in k}
    old, new = parent.tokenizer, child.tokenizer
    assert new.vocab_size == len(set(TEXT) | set(new_text.read_text(encoding="utf-8"))) > old.vocab_size
    assert new.chars[:old.vocab_size] == old.chars                      # old ids keep their meaning
    assert child.gpt.params["wte"].shape[0] == child.gpt.params["lm_head.w"].shape[1] == new.vocab_size
    assert json.loads(RunPaths(tmp_path, child.guid).config.read_text(encoding="utf-8"))["parent"] == parent.guid
    with pytest.raises(BabyError, match="overwrite=True"):
        api.finetune(parent.guid, data=new_text, out=tmp_path, steps=2, quiet=True)
    api.finetune(parent.guid, data=new_text, out=tmp_path, steps=2, quiet=True, overwrite=True, completion_tokens=0)
    with pytest.raises(BabyError, match="n_ctx is fixed by the parent"):
        api.finetune(parent.guid, data=new_text, out=tmp_path, n_ctx=16, overwrite=True)


def test_bpe_run_and_its_finetune_keep_one_tokenizer(corpus, tmp_path):
    run = api.train(data=corpus, out=tmp_path, steps=3, quiet=True, tokenizer="bpe", vocab_size=270, **TINY)
    assert run.record.tokenizer == {"kind": "bpe", "vocab_size": 270}
    assert run.record.data["token_dtype"] == "uint16"                    # 270 ids do not fit a byte
    r = run.report
    assert r["tokens_per_char"] == run.record.data["tokens"] / run.record.data["chars"] < 1
    assert r["final_val_bpc"] == pytest.approx(r["final_val_loss"] / np.log(2) * r["tokens_per_char"])
    child = api.finetune("last", data=corpus, out=tmp_path, steps=2, quiet=True, completion_tokens=0)
    assert child.tokenizer.to_dict() == run.tokenizer.to_dict()
    with pytest.raises(BabyError, match="keeps the parent's tokenizer"):
        api.finetune("last", data=corpus, out=tmp_path, tokenizer="char", overwrite=True)
