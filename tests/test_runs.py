"""Run paths, atomic writes, run lookup (GUID, prefix, last) and safetensors checkpoints."""

import json
import os

import numpy as np
import pytest

from littlebaby import checkpoint, files, runs
from littlebaby.errors import BabyError


def make_record(out, guid, created, parent=None):
    record = runs.RunRecord(version="0", guid=guid, kind="finetune" if parent else "train", parent=parent,
                            created=created, seed=0, model={"vocab_size": 3}, training={}, plan={},
                            tokenizer={"kind": "char"}, data={})
    files.atomic_write_json(runs.RunPaths(out, guid).config, record.to_dict())


def test_artifact_names_follow_the_guid(tmp_path):
    p = runs.RunPaths(tmp_path, "G")
    names = [p.config, p.model, p.tokenizer, p.report_json, p.report_png, p.completion]
    assert [str(n.relative_to(tmp_path)) for n in names] == [
        "configs/config_G.json", "models/model_G.safetensors", "models/tokenizer_G.json",
        "outputs/report_G.json", "outputs/report_G.png", "outputs/completion_G.txt"]
    text, meta = p.generation("20260102030405")
    assert text.name == "completion_G_20260102030405.txt" and meta.name == "completion_G_20260102030405.json"


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "a" / "f.txt"
    files.atomic_write_text(path, "old")
    assert path.read_text(encoding="utf-8") == "old"

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError):
        files.atomic_write_text(path, "new")
    assert path.read_text(encoding="utf-8") == "old"
    assert os.listdir(path.parent) == ["f.txt"]                           # the temp file was removed


def test_resolve_by_id_prefix_suffix_and_last(tmp_path):
    a, b = "aaaa1111-0000", "aabb2222-0000"
    make_record(tmp_path, a, "2026-01-01T00:00:00.000001+00:00")
    make_record(tmp_path, b, "2026-01-01T00:00:00.000003+00:00")
    make_record(tmp_path, a + "_finetuned", "2026-01-01T00:00:00.000002+00:00", parent=a)
    assert runs.resolve_run(a, tmp_path) == a
    assert runs.resolve_run("aaaa", tmp_path) == a                       # the base run, not its finetune
    assert runs.resolve_run("aaaa_finetuned", tmp_path) == a + "_finetuned"
    assert runs.resolve_run("last", tmp_path) == b
    with pytest.raises(BabyError, match="matches 2 runs"):
        runs.resolve_run("aa", tmp_path)
    with pytest.raises(BabyError, match="no run matches 'ab'"):
        runs.resolve_run("ab", tmp_path)
    with pytest.raises(BabyError, match="no run matches"):
        runs.resolve_run("aabb_finetuned", tmp_path)


def test_no_runs_says_how_to_make_one(tmp_path):
    with pytest.raises(BabyError, match="baby train"):
        runs.resolve_run("last", tmp_path)


def test_broken_record_is_named(tmp_path):
    make_record(tmp_path, "g1", "2026")
    path = runs.RunPaths(tmp_path, "g1").config
    data = json.loads(path.read_text(encoding="utf-8"))
    data["colour"] = "red"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BabyError, match="colour"):
        runs.load_record(tmp_path, "g1")
    path.write_text("{", encoding="utf-8")
    with pytest.raises(BabyError, match="not valid JSON"):
        runs.load_record(tmp_path, "g1")


def test_checkpoint_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    params = {"wte": rng.standard_normal((5, 3)).astype(np.float32), "b": np.arange(3, dtype=np.float32)}
    state = {"step": 7, "m": {k: v * 2 for k, v in params.items()}, "v": {k: v * v for k, v in params.items()}}
    data_rng = np.random.default_rng(1)
    history = {"loss": [1.5, 1.25], "evals": [{"step": 0, "val_loss": 2.0}]}
    checkpoint.save_checkpoint(tmp_path / "c.safetensors", params, state, data_rng.bit_generator.state,
                               [rng.bit_generator.state], history)
    loaded = checkpoint.load_checkpoint(tmp_path / "c.safetensors")
    for name in params:
        np.testing.assert_array_equal(loaded["params"][name], params[name])
        np.testing.assert_array_equal(loaded["optimizer"]["m"][name], state["m"][name])
        np.testing.assert_array_equal(loaded["optimizer"]["v"][name], state["v"][name])
    assert loaded["optimizer"]["step"] == 7 and loaded["history"] == history
    assert loaded["dropout_rngs"] == [rng.bit_generator.state]
    restored = np.random.default_rng()
    restored.bit_generator.state = loaded["data_rng"]
    assert restored.random() == data_rng.random()


def test_a_checkpoint_keeps_every_share_s_dropout_state_and_one_share_s_as_before(tmp_path):
    params = {"w": np.ones((2, 2), np.float32)}
    state = {"step": 1, "m": params, "v": params}
    shares = [np.random.default_rng(n).bit_generator.state for n in range(3)]
    checkpoint.save_checkpoint(tmp_path / "three.safetensors", params, state, shares[0], shares, {"loss": []})
    assert checkpoint.load_checkpoint(tmp_path / "three.safetensors")["dropout_rngs"] == shares
    checkpoint.save_checkpoint(tmp_path / "one.safetensors", params, state, shares[0], shares[:1], {"loss": []})
    _, meta = checkpoint.load_arrays(tmp_path / "one.safetensors")
    assert "dropout_rngs" not in meta and meta["dropout_rng"] == shares[0]      # the one-process format


def test_model_file_carries_its_config(tmp_path):
    checkpoint.save_model(tmp_path / "m.safetensors", {"w": np.ones((2, 2), np.float32)}, {"n_ctx": 8}, "G")
    params, config = checkpoint.load_model(tmp_path / "m.safetensors")
    assert config == {"n_ctx": 8} and params["w"].shape == (2, 2)


def test_damaged_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(BabyError, match="damaged"):
        checkpoint.load_arrays(tmp_path / "bad.safetensors")
    with pytest.raises(BabyError, match="not found"):
        checkpoint.load_arrays(tmp_path / "none.safetensors")
