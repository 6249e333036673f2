"""Hugging Face GPT-2 folders, checked with the real ``transformers`` and ``tokenizers``.

Export: a run written by ``baby export`` loads in ``GPT2LMHeadModel`` and ``AutoTokenizer`` with no missing or
unexpected weight, and gives our logits (float32: relative error max|ours - theirs| / max|theirs| < 1e-4, the
parity tests' float32 tolerance) and our token ids. Import: a randomly initialised ``GPT2LMHeadModel`` saved by
``save_pretrained``, with a tokenizer trained by ``tokenizers``, becomes a run whose forward gives transformers'
logits, and which generates and finetunes. Bad folders are refused in one line with exit code 2, writing nothing.
"""

import errno
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers", reason="the Hugging Face tests need transformers "
                                                          "(pip install -e '.[test]')")
import safetensors.numpy  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402

from conftest import TINY_RUN_TEXT  # noqa: E402
from littlebaby import load_run  # noqa: E402
from littlebaby.cli import main  # noqa: E402
from littlebaby.interop import hf  # noqa: E402
from littlebaby.interop.hf_tokenizer import split_pattern, to_tokenizer_json  # noqa: E402
from littlebaby.model import Config  # noqa: E402
from littlebaby.runs import run_ids  # noqa: E402
from littlebaby.tokenizers import BPETokenizer, GPT2Tokenizer, train_tokenizer  # noqa: E402
from littlebaby.tokenizers.bpe import SPLIT_PATTERN  # noqa: E402

TOLERANCE = 1e-4
GPT2_SHAPE = ["--n-ctx", "12", "--n-emb", "16", "--head-size", "16", "--n-heads", "2", "--n-layers", "2",
              "--batch-size", "4", "--lr", "0.01", "--no-lm-head-bias"]
TEXT = TINY_RUN_TEXT + "CLÉO:\nZürich, naïve café — 50 € and 12345 ½ ² emoji 😀, 中文 عربى\x1c\u3000tab\t.\n\n"
PROMPTS = ["ANNE:\nI have 3 roses, and you have none.", "BEN:\nThen give me one.\n\nANNE:", "CLÉO:\nZürich 😀 ½"]
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# text of characters Python's Unicode database knows (categories other than unassigned and surrogates)
ASSIGNED_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=60)


def baby(*args):
    return main([str(a) for a in args])


def relative_error(ours, theirs):
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()            # (B, T, V)


def batch_of(tokenizer, prompts, T):
    """The prompts' ids, each cut to its last T (all prompts are at least T tokens long here)."""
    rows = [tokenizer.encode(p)[-T:] for p in prompts]
    assert all(len(r) == T for r in rows)
    return np.array(rows)                                          # (B, T)


# --- export ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two trained runs of GPT-2's shape (BPE and tied; char and untied), each exported; {name: (run, dir)}."""
    out = tmp_path_factory.mktemp("export")
    (out / "text.txt").write_text(TEXT, encoding="utf-8")
    folders = {}
    for name, flags in {"bpe_tied": ["--tokenizer", "bpe", "--vocab-size", "320", "--weight-tying"],
                        "char_untied": ["--tokenizer", "char"]}.items():
        assert baby("train", "--data", out / "text.txt", "--steps", "3", "--quiet", "--out", out / name,
                    *GPT2_SHAPE, *flags) == 0
        assert baby("export", "last", "--format", "hf", out / name / "hf", "--out", out / name) == 0
        folders[name] = (load_run("last", out / name), out / name / "hf")
    return folders


@pytest.mark.parametrize("name", ["bpe_tied", "char_untied"])
def test_transformers_loads_the_export_without_weight_warnings_and_gives_our_logits(exported, name):
    run, folder = exported[name]
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = transformers.logging.get_logger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = transformers.GPT2LMHeadModel.from_pretrained(folder, output_loading_info=True)
            hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    finally:
        logger.removeHandler(handler)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and not info["mismatched_keys"]
    said = [r.getMessage() for r in records if r.levelno >= logging.WARNING] + [str(w.message) for w in caught]
    assert not [w for w in said if "weight" in w.lower() or "initialized" in w.lower()], said
    assert model.config.tie_word_embeddings == run.gpt.config.weight_tying
    model.eval()
    for prompt in PROMPTS:
        assert hf_tokenizer(prompt)["input_ids"] == run.tokenizer.encode(prompt).tolist()
        assert hf_tokenizer.decode(hf_tokenizer(prompt)["input_ids"]) == prompt
    ids = batch_of(run.tokenizer, PROMPTS, 8)
    assert relative_error(run.gpt.forward(ids), logits_of(model, ids)) < TOLERANCE


@pytest.fixture(scope="module")
def our_bpe():
    return train_tokenizer("bpe", TEXT * 3, 400)


@FAST
@given(st.text(max_size=80))
def test_our_bpe_as_tokenizer_json_encodes_any_text_like_ours(our_bpe, text):
    hf_tokenizer = hf_tokenizer_of(our_bpe)
    assert hf_tokenizer.encode(text).ids == our_bpe.encode(text).tolist()


@FAST
@given(st.text(max_size=80))
def test_the_rewritten_pre_split_is_ours(text):
    """The ranges that stand for \\w, \\d, \\s split text exactly as SPLIT_PATTERN does (in Python's re)."""
    import re
    assert re.findall(split_pattern("python"), text) == re.findall(SPLIT_PATTERN, text)


def hf_tokenizer_of(tok, cache={}):
    """tokenizers.Tokenizer of our tokenizer's export, built once per tokenizer."""
    if id(tok) not in cache:
        cache[id(tok)] = (tok, tokenizers.Tokenizer.from_str(json.dumps(to_tokenizer_json(tok))))
    return cache[id(tok)][1]


@FAST
@given(st.data())
def test_the_char_tokenizer_as_tokenizer_json_gives_our_ids_and_refuses_unknown_characters(data):
    tok = train_tokenizer("char", TEXT)
    hf_tokenizer = hf_tokenizer_of(tok)
    text = data.draw(st.text(st.sampled_from(tok.chars), max_size=60))
    assert hf_tokenizer.encode(text).ids == tok.encode(text).tolist()
    assert hf_tokenizer.decode(tok.encode(text).tolist()) == text
    with pytest.raises(Exception, match="UNK"):   # ours refuses an unknown character: so does the export
        hf_tokenizer.encode(text + "\u2603")


def test_a_bpe_with_two_tokens_for_the_same_bytes_is_refused():
    # "ab" + "c" and "a" + "bc" both make "abc"
    tok = BPETokenizer([(97, 98), (256, 99), (98, 99), (97, 258)])
    with pytest.raises(Exception, match="two tokens for the same bytes"):
        to_tokenizer_json(tok)


@pytest.mark.parametrize("switches, reason", [
    (dict(c_sequence="post"), "post-norm"),
    (dict(c_attention="moh"), "mixture of heads"),
    (dict(c_network="moe"), "mixture of experts"),
    (dict(head_size=24, n_heads=2), "head_size (24) differs from n_emb (16)"),
    (dict(lm_head_bias=True), "learned bias"),
])
def test_export_refuses_what_gpt2_cannot_express(switches, reason):
    config = Config(**{**dict(vocab_size=11, n_ctx=8, n_emb=16, head_size=16, n_heads=2, n_layers=1,
                              lm_head_bias=False), **switches})
    assert reason in hf.why_not_gpt2(config, {"lm_head.b": np.full(11, 0.5)})
    if config.lm_head_bias:   # a bias that is still all zero is no bias: GPT-2 expresses it
        assert hf.why_not_gpt2(config, {"lm_head.b": np.zeros(11)}) is None


def test_exporting_a_run_with_a_learned_head_bias_is_one_line_and_writes_nothing(trained, tmp_path, capsys):
    assert baby("export", "last", tmp_path / "hf", "--out", trained) == 2
    assert "learned bias" in one_line_error(capsys)
    assert not (tmp_path / "hf").exists() and list(tmp_path.iterdir()) == []


def test_export_refuses_a_folder_that_is_not_empty_unless_told(exported, tmp_path, capsys):
    run, folder = exported["bpe_tied"]
    out = folder.parent
    (tmp_path / "keep.txt").write_text("mine")
    assert baby("export", "last", tmp_path, "--out", out) == 2
    assert "--overwrite" in one_line_error(capsys) and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert baby("export", "last", tmp_path, "--overwrite", "--out", out) == 0
    assert (tmp_path / "keep.txt").read_text() == "mine" and (tmp_path / "model.safetensors").is_file()


def test_a_full_disk_during_export_is_one_line_and_leaves_no_folder(exported, tmp_path, capsys, monkeypatch):
    run, folder = exported["bpe_tied"]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hf.safetensors.numpy, "save_file", full)
    assert baby("export", "last", tmp_path / "hf", "--out", folder.parent) == 2
    assert "No space left on device" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []                            # no folder, no hidden staging folder


def test_the_exported_folder_is_readable_like_any_new_folder(exported):
    _, folder = exported["bpe_tied"]
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_export_then_import_gives_back_the_same_model_and_tokenizer(exported, tmp_path, capsys):
    run, folder = exported["bpe_tied"]
    assert baby("import-hf", folder, "--out", tmp_path) == 0
    assert "baby generate" in capsys.readouterr().out
    back = load_run("last", tmp_path)
    assert isinstance(back.tokenizer, BPETokenizer) and back.tokenizer.merges == run.tokenizer.merges
    assert back.record.kind == "import" and back.gpt.config.weight_tying and not back.gpt.config.lm_head_bias
    for name, array in run.gpt.params.items():
        np.testing.assert_array_equal(back.gpt.params[name], array, err_msg=name)


# --- import ----------------------------------------------------------------------------------------------------

def train_hf_tokenizer(text, vocab_size):
    """A GPT-2 style byte-level BPE trained with tokenizers; its ids are tokenizers' order, not ours."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
                                             show_progress=False)
    tok.train_from_iterator([text], trainer)
    return tok


def random_gpt2(vocab_size, tied, n_positions=16, n_embd=24, n_layer=2, n_head=3, seed=0):
    """A GPT2LMHeadModel with every parameter random: no LayerNorm gain 1 and no bias 0 to hide a bad mapping."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd,
                                     n_layer=n_layer, n_head=n_head, tie_word_embeddings=tied,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if "ln" in name and name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[0] ** 0.5)
    return model


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
        model.to(dtype).save_pretrained(target)
        shutil.copy(folder / "tokenizer.json", target)
        run = import_run(target, tmp_path / f"out_{dtype}")
        expected = model.state_dict()["transformer.h.1.mlp.c_fc.weight"].float().numpy()
        np.testing.assert_array_equal(run.gpt.params["blocks.1.mlp.w_fc"], expected)
        assert run.gpt.params["wte"].dtype == np.float32
    model.float()


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
    "config wider than the weights": (edit_config(n_embd=48), "has shape"),
    "a tensor of the wrong shape": (shrink_a_tensor, "'transformer.h.0.mlp.c_fc.weight' has shape (24, 10)"),
    "a smaller tokenizer": (smaller_tokenizer, "has 300 tokens but the model's embedding has"),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "pass --tokenizer FILE"),
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
