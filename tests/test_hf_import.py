"""``baby import-hf DIR``, checked with the real transformers and tokenizers: a randomly initialised
``GPT2LMHeadModel`` saved by ``save_pretrained``, with a tokenizer trained by ``tokenizers``, becomes a run whose
forward gives transformers' logits (see hf_helpers.py for the tolerance) and which generates and finetunes; bad
folders are refused in one line with exit code 2, writing nothing; the import holds about two copies of the
weights; GPT-2 124M itself when LITTLEBABY_GPT2_DIR names a folder holding it.
"""

import copy
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given
from hypothesis import strategies as st

from hf_helpers import (FAST, PROMPTS, TEXT, TOLERANCE, baby, batch_of, logits_of, one_line_error, random_gpt2,
                        relative_error, tokenizers, torch, train_hf_tokenizer, transformers)
from littlebaby import load_run
from littlebaby.interop.hf_tokenizer import to_tokenizer_json
from littlebaby.runs import run_ids
from littlebaby.tokenizers import GPT2Tokenizer

# text of characters Python's Unicode database knows (categories other than unassigned and surrogates)
ASSIGNED_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=60)


@pytest.fixture(scope="module")
def hf_tokenizer():
    return train_hf_tokenizer(TEXT * 3, 420)


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory, hf_tokenizer):
    """{tied: (model, folder)}: save_pretrained folders of random GPT-2s with the trained tokenizer."""
    folders = {}
    for tied in (True, False):
        folder = tmp_path_factory.mktemp(f"gpt2_tied_{tied}")
        model = random_gpt2(hf_tokenizer.get_vocab_size(), tied)
        model.save_pretrained(folder)
        hf_tokenizer.save(str(folder / "tokenizer.json"))
        folders[tied] = (model, folder)
    return folders


def import_run(folder, out):
    assert baby("import-hf", folder, "--out", out) == 0
    return load_run("last", out)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_an_imported_gpt2_gives_transformers_logits(hf_folders, hf_tokenizer, tied, tmp_path):
    model, folder = hf_folders[tied]
    run = import_run(folder, tmp_path)
    assert isinstance(run.tokenizer, GPT2Tokenizer) and run.gpt.config.weight_tying == tied
    ids = batch_of(run.tokenizer, PROMPTS * 2, 6)
    assert ids.tolist() == [hf_tokenizer.encode(p).ids[-6:] for p in PROMPTS * 2]
    assert relative_error(run.gpt.forward(ids), logits_of(model, ids)) < TOLERANCE
    full = np.random.default_rng(0).integers(0, run.gpt.config.vocab_size, (2, 16))   # the whole context
    assert relative_error(run.gpt.forward(full), logits_of(model, full)) < TOLERANCE


def test_the_original_gpt2_layout_imports_too(hf_folders, tmp_path):
    """GPT-2's published file: names without ``transformer.``, the causal-mask buffers beside the weights."""
    model, folder = hf_folders[True]
    (tmp_path / "gpt2").mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(folder / name, tmp_path / "gpt2" / name)
    tensors = {k.removeprefix("transformer."): v.numpy() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    tensors.update({f"h.{i}.attn.bias": np.tril(np.ones((1, 1, 16, 16), np.float32)) for i in range(2)})
    safetensors.numpy.save_file(tensors, tmp_path / "gpt2" / "model.safetensors", metadata={"format": "pt"})
    run = import_run(tmp_path / "gpt2", tmp_path / "out")
    ids = np.random.default_rng(1).integers(0, run.gpt.config.vocab_size, (3, 9))
    assert relative_error(run.gpt.forward(ids), logits_of(model, ids)) < TOLERANCE


def test_half_precision_weights_import_as_float32(hf_folders, tmp_path):
    model, folder = hf_folders[False]
    for dtype in (torch.float16, torch.bfloat16):
        target = tmp_path / str(dtype)
        copy.deepcopy(model).to(dtype).save_pretrained(target)   # the shared fixture's model stays float32
        shutil.copy(folder / "tokenizer.json", target)
        run = import_run(target, tmp_path / f"out_{dtype}")
        expected = model.state_dict()["transformer.h.1.mlp.c_fc.weight"].to(dtype).float().numpy()
        np.testing.assert_array_equal(run.gpt.params["blocks.1.mlp.w_fc"], expected)
        assert run.gpt.params["wte"].dtype == np.float32


def test_an_imported_run_generates_and_finetunes(hf_folders, tmp_path, capsys):
    _, folder = hf_folders[True]
    run = import_run(folder, tmp_path)
    capsys.readouterr()
    assert baby("generate", run.guid, "--prompt", "ANNE:", "--max-tokens", "20", "--seed", "1", "--out",
                tmp_path) == 0
    assert capsys.readouterr().out.startswith("ANNE:")
    (tmp_path / "more.txt").write_text(TEXT, encoding="utf-8")
    assert baby("finetune", run.guid, "--data", tmp_path / "more.txt", "--steps", "3", "--lr", "1e-3",
                "--quiet", "--out", tmp_path) == 0
    tuned = load_run(run.guid + "_finetuned", tmp_path)
    assert tuned.record.parent == run.guid and isinstance(tuned.tokenizer, GPT2Tokenizer)
    assert not np.array_equal(tuned.gpt.params["wte"], run.gpt.params["wte"])
    assert baby("runs", "--out", tmp_path) == 0 and baby("info", run.guid, "--out", tmp_path) == 0
    capsys.readouterr()
    assert baby("train", "--resume", run.guid, "--out", tmp_path) == 2
    assert f"baby finetune {run.guid}" in one_line_error(capsys)


def test_an_imported_run_exports_back_to_a_folder_transformers_reads_the_same(hf_folders, hf_tokenizer, tmp_path):
    model, folder = hf_folders[False]
    run = import_run(folder, tmp_path)
    assert baby("export", run.guid, tmp_path / "again", "--out", tmp_path) == 0
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "again").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "again")
    assert again.config.eos_token_id == hf_tokenizer.token_to_id("<|endoftext|>")
    for prompt in PROMPTS + ["one<|endoftext|>two"]:
        assert tokenizer(prompt)["input_ids"] == hf_tokenizer.encode(prompt).ids
    ids = np.random.default_rng(2).integers(0, run.gpt.config.vocab_size, (2, 16))
    np.testing.assert_array_equal(logits_of(again, ids), logits_of(model, ids))   # the very same weights


@FAST
@given(ASSIGNED_TEXT)
def test_an_imported_tokenizer_encodes_like_tokenizers(hf_tokenizer, text):
    """Any text of assigned characters, special tokens included. (Characters that Python's Unicode database does
    not know yet may split differently: tokenizers' Oniguruma knows a newer Unicode; see tokenizers/gpt2.py.)"""
    ours = imported_tokenizer(hf_tokenizer)
    text = text.replace("\x00", "<|endoftext|>")
    assert ours.encode(text).tolist() == hf_tokenizer.encode(text).ids
    assert ours.decode(ours.encode(text)) == hf_tokenizer.decode(hf_tokenizer.encode(text).ids,
                                                                 skip_special_tokens=False)


def imported_tokenizer(hf_tokenizer, cache={}):
    from littlebaby.interop.hf_tokenizer import from_tokenizer_json
    if "tok" not in cache:
        cache["tok"] = from_tokenizer_json(json.loads(hf_tokenizer.to_str()), "trained")
    return cache["tok"]


def test_merges_written_as_strings_read_the_same(hf_tokenizer):
    """GPT-2's own tokenizer.json (older tokenizers) writes each merge as "a b", not ["a", "b"]."""
    from littlebaby.interop.hf_tokenizer import from_tokenizer_json
    data = json.loads(hf_tokenizer.to_str())
    data["model"]["merges"] = [" ".join(pair) for pair in data["model"]["merges"]]
    ours = from_tokenizer_json(data, "string merges")
    assert ours.merges == imported_tokenizer(hf_tokenizer).merges and len(ours.merges) > 100


def test_the_imported_tokenizer_exports_back_to_the_same_ids(hf_tokenizer):
    ours = imported_tokenizer(hf_tokenizer)
    again = tokenizers.Tokenizer.from_str(json.dumps(to_tokenizer_json(ours)))
    for text in PROMPTS + [TEXT, "x<|endoftext|>y"]:
        assert again.encode(text).ids == hf_tokenizer.encode(text).ids


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=12)


@FAST
@given(st.fixed_dictionaries({"model": st.fixed_dictionaries({"type": st.sampled_from(["BPE", "WordLevel"]),
                                                              "vocab": JSON, "merges": JSON}),
                              "pre_tokenizer": JSON, "added_tokens": JSON, "normalizer": st.none() | JSON}))
def test_a_malformed_tokenizer_json_is_a_clear_error(data):
    from littlebaby.errors import BabyError
    from littlebaby.interop.hf_tokenizer import from_tokenizer_json
    try:
        from_tokenizer_json(data, "tokenizer.json")
    except BabyError:
        pass


# --- bad folders -----------------------------------------------------------------------------------------------

def edit_config(**changes):
    def edit(folder):
        data = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**data, **changes}))
    return edit


def replace_weights_with_a_pickle(folder):
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weights": [1.0]}, f)   # plain data: the test never loads it either


def shrink_a_tensor(folder):
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    tensors["transformer.h.0.mlp.c_fc.weight"] = tensors["transformer.h.0.mlp.c_fc.weight"][:, :10]
    safetensors.numpy.save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def a_nan_weight(folder):
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    tensors["transformer.ln_f.bias"][3] = np.nan
    safetensors.numpy.save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def shards(folder):
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))


def smaller_tokenizer(folder):
    train_hf_tokenizer(TEXT, 300).save(str(folder / "tokenizer.json"))


BAD_FOLDERS = {
    "no config.json": (lambda f: (f / "config.json").unlink(), "no config.json in"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "no model.safetensors in"),
    "a pickle": (replace_weights_with_a_pickle, "never unpickles"),
    "a zip pickle": (lambda f: (f / "model.safetensors").write_bytes(b"PK\x03\x04" + bytes(60)), "zip archive"),
    "another model_type": (edit_config(model_type="llama"), "only GPT-2 (model_type 'gpt2')"),
    "the erf GELU": (edit_config(activation_function="gelu"), "activation_function 'gelu' is not supported"),
    "another LayerNorm eps": (edit_config(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
    "an eps that is not a number": (edit_config(layer_norm_epsilon="small"), "must be a number"),
    "config wider than the weights": (edit_config(n_embd=48), "has shape"),
    "a tensor of the wrong shape": (shrink_a_tensor, "'transformer.h.0.mlp.c_fc.weight' has shape (24, 10)"),
    "a smaller tokenizer": (smaller_tokenizer, "has 300 tokens but the model's embedding has"),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "pass --tokenizer FILE"),
    "untied but no head": (edit_config(tie_word_embeddings=False), "lacks the tensor 'lm_head.weight'"),
    "a NaN weight": (a_nan_weight, "'transformer.ln_f.bias' holds NaN"),
    "shards": (shards, "split into shards"),
    "a word-level tokenizer": (lambda f: (f / "tokenizer.json").write_text(json.dumps(
        {"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}})), "WordLevel model"),
    "a damaged safetensors": (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64), "not a safetensors"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_folders_are_refused_in_one_line_and_nothing_is_written(hf_folders, tmp_path, capsys, case):
    damage, message = BAD_FOLDERS[case]
    folder = tmp_path / "gpt2"
    shutil.copytree(hf_folders[True][1], folder)
    damage(folder)
    assert baby("import-hf", folder, "--out", tmp_path / "out") == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_from_elsewhere_with_the_tokenizer_option(hf_folders, tmp_path):
    folder = tmp_path / "gpt2"
    shutil.copytree(hf_folders[True][1], folder)
    (folder / "tokenizer.json").rename(tmp_path / "elsewhere.json")
    assert baby("import-hf", folder, "--tokenizer", tmp_path / "elsewhere.json", "--out", tmp_path / "a") == 0
    saved = load_run("last", tmp_path / "a").paths.tokenizer       # a littlebaby tokenizer file does too
    assert baby("import-hf", folder, "--tokenizer", saved, "--out", tmp_path / "b") == 0
    assert load_run("last", tmp_path / "b").tokenizer.encode(TEXT).tolist() == \
        load_run("last", tmp_path / "a").tokenizer.encode(TEXT).tolist()


def test_import_refuses_a_folder_that_is_not_there(tmp_path, capsys):
    assert baby("import-hf", tmp_path / "nothing", "--out", tmp_path / "out") == 2
    assert "is not a folder" in one_line_error(capsys) and not (tmp_path / "out").exists()


# --- memory, and GPT-2 124M when a user has it --------------------------------------------------------------

MEMORY_PROBE = """
import sys
sys.path.insert(0, sys.argv[3])
from peak_rss import peak_rss_mb, reset_peak_rss
from littlebaby.interop import hf
import numpy, safetensors, json
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
before = rss_mb()
reset_peak_rss()
hf.import_hf(sys.argv[1], out=sys.argv[2])
print(json.dumps({"before": before, "peak": peak_rss_mb()}))
"""


def test_import_holds_about_one_copy_of_the_weights(hf_tokenizer, tmp_path):
    """A 25 MB model imported in a fresh process: its peak RSS grows by the weights we keep plus the pages of the
    file that safe_open maps while reading (clean pages the kernel may drop), two copies; never more. Building
    the model file in memory (safetensors' ``save``) or reading every tensor before converting would add one or
    two more copies."""
    model = random_gpt2(hf_tokenizer.get_vocab_size(), tied=True, n_positions=64, n_embd=256, n_layer=8, n_head=4)
    model.save_pretrained(tmp_path / "gpt2")
    hf_tokenizer.save(str(tmp_path / "gpt2" / "tokenizer.json"))
    weight_mb = sum(p.numel() for p in model.parameters()) * 4 / 2**20
    benchmarks = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, tmp_path / "gpt2", tmp_path / "out", benchmarks],
                            capture_output=True, text=True, check=True)
    rss = json.loads(result.stdout)
    assert rss["peak"] - rss["before"] < 2.25 * weight_mb, (rss, weight_mb)
    assert run_ids(tmp_path / "out")


GPT2_DIR = os.environ.get("LITTLEBABY_GPT2_DIR")


@pytest.mark.skipif(not GPT2_DIR, reason="set LITTLEBABY_GPT2_DIR to a folder holding GPT-2 124M "
                                         "(config.json, model.safetensors, tokenizer.json) to run this test")
def test_real_gpt2_imports_generates_and_matches_transformers(tmp_path, capsys):
    run = import_run(GPT2_DIR, tmp_path)
    assert run.gpt.num_params() == 124_439_808
    model = transformers.GPT2LMHeadModel.from_pretrained(GPT2_DIR).eval()
    ids = run.tokenizer.encode("Hello, my name is")[None]                   # (1, T)
    assert ids.tolist()[0] == transformers.AutoTokenizer.from_pretrained(GPT2_DIR)("Hello, my name is")["input_ids"]
    assert relative_error(run.gpt.forward(ids), logits_of(model, ids)) < TOLERANCE
    capsys.readouterr()
    assert baby("generate", run.guid, "--prompt", "Hello, my name is", "--max-tokens", "12", "--temperature", "0",
                "--out", tmp_path) == 0
    assert capsys.readouterr().out.startswith("Hello, my name is")
