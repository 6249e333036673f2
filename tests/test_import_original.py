"""`baby import` and `baby export-original`: the original notebook's runs give the original's logits here, go
back out byte for byte, and every bad input is one line, exit 2, nothing written.

The fixtures (../shared/fixtures/tlb-original, README there) were written by the original's own code; each case
holds the logits it computes for the prompt "the lamp". Tolerances are the issue's: relative error (max |ours -
theirs| / max |theirs|) below 1e-9 in float64, against the original run on the stored float64 numbers, and below
1e-4 in float32, against the original after its loader's float32 cast. Measured: ~5e-16 and ~2e-7.
"""

import json
import os
import pathlib
import pickle
import shutil
import signal

import numpy as np
import pytest

from littlebaby import api
from helpers import TEXT as TINY_RUN_TEXT
from helpers import TINY_FLAGS as TINY_RUN_FLAGS
from littlebaby.cli import main
from littlebaby.errors import BabyError
from littlebaby.interop import original
from littlebaby.model import GPT, Config
from littlebaby.nn.attention import causal_bias
from littlebaby.nn.softmax import softmax_inplace as softmax_rows_inplace
from littlebaby.nn.layernorm import EPS
from littlebaby.nn.gelu import gelu_forward

FIXTURES = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "tlb-original"
CASES = ["case1_v009_pre_mha_mlp", "case2_v009_pre_moh_moe", "case3_v009_post_mha_mlp",
         "case3b_v009_post_mha_mlp_case1_weights", "case4_v007_mha_mlp_oldkeys"]
V009 = CASES[:4]
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
EXPECTED = {"float64": "logits_float64_weights", "float32": "logits"}   # what each dtype must reproduce


@pytest.fixture
def fixtures():
    if not FIXTURES.is_dir():
        pytest.skip(f"the original's fixture runs are not at {FIXTURES} (../shared/fixtures/tlb-original)")
    return FIXTURES


def expected(case):
    return json.loads(next((FIXTURES / case).glob("expected_*.json")).read_text())


def model_file(folder):
    return next((pathlib.Path(folder) / "models").glob("model_*"))


def relative_error(ours, theirs):
    theirs = np.asarray(theirs, dtype=np.float64)
    return float(np.abs(np.asarray(ours, dtype=np.float64) - theirs).max() / np.abs(theirs).max())


def logits_of(run, ids):
    return run.gpt.forward(np.asarray(ids)[None])[0]                      # (T, V)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_every_case_gives_the_originals_logits(fixtures, tmp_path, case, dtype):
    ref = expected(case)
    run = api.import_original(fixtures / case, out=tmp_path, dtype=dtype)
    ids = run.tokenizer.encode(ref["prompt"])
    assert ids.tolist() == ref["token_ids"]
    loaded = api.load_run(run.guid, tmp_path)                              # from disk, as every command reads it
    assert loaded.gpt.params["wte"].dtype == np.dtype(dtype)
    error = relative_error(logits_of(loaded, ids), ref[EXPECTED[dtype]])
    assert error < TOLERANCE[dtype], (case, dtype, error)


@pytest.mark.parametrize("case", V009)
def test_export_of_a_float64_import_is_the_original_file_byte_for_byte(fixtures, tmp_path, case):
    run = api.import_original(fixtures / case, out=tmp_path, dtype="float64")
    model = api.export_original(run.guid, out=tmp_path, to=tmp_path / "back")
    assert model.read_bytes() == model_file(fixtures / case).read_bytes()
    for folder in ("configs", "tokenizers"):
        ours, = (tmp_path / "back" / folder).iterdir()
        theirs, = (fixtures / case / folder).iterdir()
        assert ours.read_bytes() == theirs.read_bytes(), folder


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_import_export_import_gives_identical_logits(fixtures, tmp_path, case, dtype):
    first = api.import_original(fixtures / case, out=tmp_path, dtype=dtype)
    api.export_original(first.guid, out=tmp_path, to=tmp_path / "back")
    again = api.import_original(tmp_path / "back", out=tmp_path, dtype=dtype)
    ids = np.arange(8) % first.gpt.config.vocab_size
    assert np.array_equal(logits_of(first, ids), logits_of(again, ids))
    assert again.gpt.config == first.gpt.config
    assert again.tokenizer.chars == first.tokenizer.chars


def test_the_run_is_new_and_records_its_source(fixtures, tmp_path, capsys):
    case = fixtures / "case2_v009_pre_moh_moe"
    assert main(["import", str(case), "--out", str(tmp_path)]) == 0
    assert "imported run 00000000-0000-0000-0009-000000000002" in capsys.readouterr().out
    run = api.load_run("last", tmp_path)
    assert run.guid != "00000000-0000-0000-0009-000000000002" and len(run.guid) == 36
    record = json.loads(run.paths.config.read_text())
    assert record["kind"] == "import" and record["source"]["guid"] == "00000000-0000-0000-0009-000000000002"
    assert record["source"]["settings"]["c_attention"] == "moh"
    config = run.gpt.config
    assert (config.c_attention, config.c_network, config.moe_top_k) == ("moh", "moe", 0)
    assert (config.qkv_bias, config.gate_bias, config.n_experts, config.moe_expansion) == (False, False, 4, 4)
    assert main(["info", run.guid[:8], "--out", str(tmp_path)]) == 0
    assert "source: run 00000000-0000-0000-0009-000000000002 of the original" in capsys.readouterr().out


def test_an_imported_run_generates_finetunes_and_resumes(fixtures, tmp_path, capsys):
    run = api.import_original(fixtures / "case2_v009_pre_moh_moe", out=tmp_path)
    assert main(["generate", run.guid[:8], "--out", str(tmp_path), "--prompt", "the lamp", "--max-tokens", "20"]) == 0
    texts = [api.generate(run.guid, prompt="the", max_tokens=12, temperature=0, cache=cache, out=tmp_path).text
             for cache in (True, False)]
    assert texts[0] == texts[1] and texts[0].startswith("the") and len(texts[0]) == 15

    assert main(["train", "--resume", run.guid, "--out", str(tmp_path)]) == 2   # nothing was trained here
    assert f"baby finetune {run.guid}" in capsys.readouterr().err

    corpus = str(fixtures / "corpus.txt")
    stopped = api.finetune(run.guid, data=corpus, out=tmp_path, quiet=True, steps=6, eval_every=2, eval_batches=1,
                           batch_size=4, completion_tokens=0, on_step=stop_at(2))
    assert stopped.report["status"] == "interrupted" and stopped.report["steps"] == 2
    resumed = api.train(resume=stopped.guid, out=tmp_path, quiet=True)
    assert resumed.report["status"] == "complete" and resumed.report["steps"] == 6
    assert resumed.record.parent == run.guid and resumed.gpt.config.qkv_bias is False


def stop_at(step):
    def on_step(s):
        if s == step:
            os.kill(os.getpid(), signal.SIGINT)   # the loop finishes the step, saves, and stops
    return on_step


def test_older_layouts_import(fixtures, tmp_path):
    """v0.0.5's model_G.weights, a run with everything in one folder, a config kept in outputs/report_G.json, and a
    run older than v0.0.5 without a tokenizer (its vocabulary rebuilt from --corpus)."""
    case, ref = fixtures / "case4_v007_mha_mlp_oldkeys", expected("case4_v007_mha_mlp_oldkeys")
    guid = "00000000-0000-0000-0007-000000000001"
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(model_file(case), flat / f"model_{guid}.weights")
    shutil.copy(case / "tokenizers" / f"tokenizer_{guid}.json", flat)
    (flat / "outputs").mkdir()
    settings = json.loads((case / "configs" / f"config_{guid}.json").read_text())
    (flat / "outputs" / f"report_{guid}.json").write_text(json.dumps({"config": settings, "analysis": {}}))
    shutil.copy(case / "configs" / f"config_{guid}.json", flat)
    run = api.import_original(flat, out=tmp_path / "a", dtype="float64")
    assert relative_error(logits_of(run, ref["token_ids"]), ref["logits_float64_weights"]) < 1e-9
    assert run.record.source["version"] == "v0.0.5-v0.0.7"

    (flat / f"config_{guid}.json").unlink()       # the settings now come from the report only
    (flat / f"tokenizer_{guid}.json").unlink()
    with pytest.raises(BabyError, match="pass `corpus='FILE'`"):
        api.import_original(flat / f"model_{guid}.weights", out=tmp_path / "b")
    run = api.import_original(flat / f"model_{guid}.weights", out=tmp_path / "b", corpus=fixtures / "corpus.txt",
                              dtype="float64")
    assert relative_error(logits_of(run, ref["token_ids"]), ref["logits_float64_weights"]) < 1e-9


# --- bad input: one line, exit 2, nothing written ----------------------------------------------------------------

def copy_case(fixtures, tmp_path, case="case1_v009_pre_mha_mlp"):
    folder = tmp_path / "in"
    shutil.copytree(fixtures / case, folder)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)   # the fixtures are read-only
    return folder


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=4))


def damage_model(change):
    return lambda folder: edit_json(model_file(folder), change)


def write_pickle(folder, name="model_00000000-0000-0000-0009-000000000001.json"):
    """A pickle that would create a file if anything unpickled it: no file proves nothing ran it."""
    for path in (folder / "models").iterdir():
        path.unlink()
    (folder / "models" / name).write_bytes(pickle.dumps(Trap(str(folder / "EXECUTED")), protocol=4))


class Trap:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def with_nan(folder):
    path = model_file(folder)
    text = path.read_text()
    path.write_text(text.replace("0.06732926956244795", "NaN", 1))


def oversized(folder):
    path = model_file(folder)
    path.write_text(path.read_text()[:-1] + " " * (2 << 20) + "}")   # valid JSON, 2 MB of blanks


BAD_INPUTS = {
    "a JSON that is not a model": (lambda f: shutil.copy(next((f / "tokenizers").iterdir()), model_file(f)),
                                   "not a model of the original: it holds the key 'vocab'"),
    "a missing key": (damage_model(lambda d: d.pop("block_1_ln2_beta")), "lacks the key 'block_1_ln2_beta'"),
    "a shape that disagrees with the config": (damage_model(lambda d: d["block_0_mha_c_weight"].pop()),
                                               "block_0_mha_c_weight in"),
    "a ragged array": (damage_model(lambda d: d["block_0_mha_c_weight"][3].pop()), "not a rectangular array"),
    "NaN in the weights": (with_nan, "holds NaN or infinite values in 'wte_weight'"),
    "a file larger than its config allows": (oversized, "more than a model of its config can take"),
    "a tokenizer smaller than the embedding": (
        lambda f: edit_json(next((f / "tokenizers").iterdir()), lambda d: (d["vocab"].pop(), d.update(vocab_size=34))),
        "has 34 characters but wte_weight"),
    "a pickle named as JSON": (write_pickle, "is a Python pickle (protocol 4"),
    "a pickle beside nothing else": (lambda f: write_pickle(f, "model_00000000-0000-0000-0009-000000000001.pkl"),
                                     "is a Python pickle"),
    "an architecture we do not have": (
        lambda f: edit_json(next((f / "configs").iterdir()), lambda d: d.update(c_attention="gqa")),
        "c_attention = 'gqa', an architecture littlebaby does not have"),
    "an unknown setting": (lambda f: edit_json(next((f / "configs").iterdir()), lambda d: d.update(rope=True)),
                           "has the setting 'rope'"),
    "no config": (lambda f: shutil.rmtree(f / "configs"), "no config_00000000-0000-0000-0009-000000000001.json"),
    "two runs in one folder": (
        lambda f: shutil.copy(model_file(f), f / "models" / "model_11111111-0000-0000-0009-000000000001.json"),
        "holds 2 runs of the original"),
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(fixtures, tmp_path, capsys, bad):
    damage, message = BAD_INPUTS[bad]
    folder = copy_case(fixtures, tmp_path)
    damage(folder)
    out = tmp_path / "out"
    assert main(["import", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()
    assert not (folder / "EXECUTED").exists()


def test_a_model_that_is_not_json_is_refused_by_its_first_bytes(tmp_path, capsys):
    """No fixture needed: a zip (.npz, PyTorch) or a file that is not a JSON object is never parsed."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "model_abc.json").write_bytes(b"PK\x03\x04rest of a zip")
    assert main(["import", str(models / "model_abc.json"), "--out", str(tmp_path / "out")]) == 2
    assert "is a zip archive" in capsys.readouterr().err
    (models / "model_abc.json").write_text("[1, 2, 3]")
    assert main(["import", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "is not a JSON object" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- export: what the original cannot represent is refused -------------------------------------------------------

TINY = dict(vocab_size=6, n_ctx=4, n_emb=8, head_size=8, n_heads=2, n_layers=1)


@pytest.mark.parametrize("switches, message", [
    (dict(), "Q, K and V have biases"),
    (dict(qkv_bias=False, c_attention="moh"), "gates have biases"),
    (dict(qkv_bias=False, gate_bias=False, c_network="moe", moe_top_k=2), "top 2 experts"),
    (dict(qkv_bias=False, gate_bias=False, c_network="moe", n_experts=8), "8 experts"),
])
def test_export_refuses_what_the_original_does_not_have(switches, message):
    gpt = GPT(Config(**TINY, **switches), seed=0)
    for array in gpt.params.values():
        array += 0.1   # no bias is zero
    with pytest.raises(BabyError, match=message):
        original.from_littlebaby(gpt.config, gpt.params, list("abcdef"), 1)


def test_a_tied_bias_free_run_exports_and_comes_back_with_the_same_logits(tmp_path):
    config = Config(**TINY, qkv_bias=False, gate_bias=False, weight_tying=True, c_network="moe", dtype="float64")
    gpt = GPT(config, seed=1)
    settings, tokenizer, items = original.from_littlebaby(config, gpt.params, list("abcdef"), 1)
    folder = tmp_path / "run"
    for sub, name, pairs in (("models", "model", items), ("tokenizers", "tokenizer", tokenizer.items()),
                             ("configs", "config", settings.items())):
        (folder / sub).mkdir(parents=True)
        with open(folder / sub / f"{name}_0123.json", "wb") as f:
            original.write_json(f, pairs)
    back = api.import_original(folder, out=tmp_path / "out", dtype="float64")
    ids = np.array([[0, 5, 2, 3]])
    assert np.array_equal(back.gpt.forward(ids), gpt.forward(ids))   # the untied copy of wte computes the same
    assert back.gpt.config.weight_tying is False


def test_a_run_trained_without_biases_exports_and_comes_back_with_the_same_logits(tmp_path):
    (tmp_path / "text.txt").write_text(TINY_RUN_TEXT, encoding="utf-8")
    assert main(["train", "--data", str(tmp_path / "text.txt"), "--steps", "3", "--quiet", "--out", str(tmp_path),
                 *TINY_RUN_FLAGS, "--c-attention", "moh", "--no-qkv-bias", "--no-gate-bias",
                 "--c-network", "moe"]) == 0
    trained = api.load_run("last", tmp_path)
    assert "blocks.0.attn.b_qkv" not in trained.gpt.params and "blocks.0.moe.b_gate" not in trained.gpt.params
    assert main(["export-original", trained.guid[:8], "--out", str(tmp_path), "--to", str(tmp_path / "back")]) == 0
    back = api.import_original(tmp_path / "back", out=tmp_path / "again")
    ids = trained.tokenizer.encode("ANNE:\nI h")[None, :8]
    assert np.array_equal(back.gpt.forward(ids), trained.gpt.forward(ids))
    assert back.tokenizer.chars == trained.tokenizer.chars


def test_a_default_run_is_refused_with_nothing_written(trained, tmp_path, capsys):
    assert main(["export-original", "last", "--out", str(trained), "--to", str(tmp_path / "back")]) == 2
    assert "--no-qkv-bias --no-gate-bias" in capsys.readouterr().err
    assert not (tmp_path / "back").exists()


# --- the settings whose names differ but whose arithmetic is the same ----------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_originals_added_minus_1e9_mask_gives_our_minus_inf_softmax_bit_for_bit(dtype):
    """The original adds -1e9 above the diagonal; we add -inf. Its exp underflows to exactly 0 either way (the
    diagonal is never masked, so each row's max is a real score), so no setting is needed for it."""
    T = 8
    scores = (np.random.default_rng(0).standard_normal((3, 4, T, T)) * 30).astype(dtype)   # (B, NH, T, T)
    theirs = scores + np.triu(np.full((T, T), -1e9), k=1).astype(dtype)
    ours = scores + causal_bias(T, T, dtype)
    assert np.array_equal(softmax_rows_inplace(theirs), softmax_rows_inplace(ours))


def test_layernorm_eps_and_gelu_are_the_originals():
    """The original: eps 1e-5 inside the square root, and the tanh GELU; ours are the same, so no setting."""
    assert EPS == 1e-5
    x = np.linspace(-6, 6, 1001)
    original_gelu = 0.5 * x * (1.0 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * np.power(x, 3))))
    np.testing.assert_allclose(gelu_forward(x)[0], original_gelu, rtol=1e-14, atol=1e-15)
