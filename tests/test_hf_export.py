"""``baby export RUN --format hf DIR``, checked with the real transformers and tokenizers: the folder loads in
``GPT2LMHeadModel`` and ``AutoTokenizer`` with no missing or unexpected weight and gives our logits (see
hf_helpers.py for the tolerance) and our token ids; our tokenizers' tokenizer.json encodes any text as we do;
what GPT-2 cannot express is refused in one line, writing nothing.
"""

import errno
import json
import logging
import os
import re
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hf_helpers import (FAST, GPT2_SHAPE, PROMPTS, TEXT, TOLERANCE, baby, batch_of, logits_of, one_line_error,
                        relative_error, tokenizers, transformers)
from littlebaby import load_run
from littlebaby.interop import hf
from littlebaby.interop.hf_tokenizer import split_pattern, to_tokenizer_json
from littlebaby.model import Config
from littlebaby.tokenizers import BPETokenizer, train_tokenizer
from littlebaby.tokenizers.bpe import SPLIT_PATTERN


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
