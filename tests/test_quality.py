"""The quality figures: known texts give exact figures, a finished run's report carries them, `baby info` shows
them, and a model that knows nothing needs log2(V) bits per character."""

import bz2
import gzip
import json
import lzma
import math
import pathlib

import numpy as np
import pytest

from helpers import TINY_RUN
from littlebaby import api, quality, report, seeds
from littlebaby.cli import main
from littlebaby.model import GPT, Config
from littlebaby.runs import RunPaths, run_ids
from littlebaby.sampling import sample_text
from littlebaby.tokenizers import CharTokenizer
from littlebaby.training import TrainConfig
from littlebaby.workers import CAN_FORK, Workers


def test_words_keep_inner_apostrophes_and_drop_digits_and_case():
    assert quality.words("O Romeo, we'll go-2 o'er 'tis!") == ["o", "romeo", "we'll", "go", "o'er", "tis"]


def test_real_word_share_counts_every_occurrence():
    known = set(quality.words("The king is dead; long live the king."))
    assert quality.real_word_share("the kng is the king", known) == 4 / 5      # "kng" is no word
    assert quality.real_word_share("xq zzv", known) == 0.0
    assert quality.real_word_share("?! 42\n", known) is None                  # no words: n/a, not 0


def test_speaker_share_counts_name_lines_among_non_blank_lines():
    text = "ROMEO:\nI will.\n\nFirst Citizen:\nNay: not so.\nKING HENRY V:\nspeak:\nWhat say you: ROMEO:\n"
    assert quality.speaker_share(text) == 3 / 7       # "speak:" is lower-case, the last line is no name alone
    assert quality.speaker_share("\n\n") == 0.0


def test_compressor_bpc_is_each_tool_s_bits_per_character_not_per_byte():
    text = "Où est la fenêtre? À Vérone, ô Roméo.\n" * 40       # more bytes than characters
    got = quality.compressor_bpc(text)
    data = text.encode("utf-8")
    assert got["gzip"] == 8 * len(gzip.compress(data, compresslevel=9, mtime=0)) / len(text)
    assert got["bz2"] == 8 * len(bz2.compress(data, 9)) / len(text)
    assert got["xz"] == 8 * len(lzma.compress(data, preset=9)) / len(text)
    assert 0 < got["gzip"] < 1       # it repeats: far below 8 bits a character


def test_score_is_the_documented_formula():
    # compression 2 (1 - 2/3) = 2/3, words 0.8, speakers 0.2 / 0.25 = 0.8: 100 (0.5 * 2/3 + 0.3 * 0.8 + 0.2 * 0.8)
    assert quality.quality_score(2.0, 3.0, 0.8, 0.2, 0.25) == 73.3
    # the training text has no speakers: that term drops out, the others are scaled to weigh 1
    assert quality.quality_score(2.0, 3.0, 0.8, 0.0, 0.0) == round(100 * (0.5 * 2 / 3 + 0.3 * 0.8) / 0.8, 1) == 71.7
    assert quality.quality_score(4.0, 3.0, 0.0, 0.0, 0.25) == 0.0      # worse than gzip, no words, no speakers
    assert quality.quality_score(1.0, 3.0, 1.0, 0.3, 0.3) == 100.0     # a third of gzip's bits: clamped at 1
    assert quality.quality_score(2.0, 3.0, None, None, 0.25) == round(100 * 2 / 3, 1)   # no sample at all


def test_figures_of_known_texts():
    train = "ANNE:\nI have roses.\n\nBEN:\nThen give me one.\n\n"
    q = quality.figures(1.5, train * 30, "ANNE:\nI have one rose.\n", train)
    assert q["real_word_share"] == 4 / 5                    # "rose" is not in the training text, "roses" is
    assert q["speaker_share"] == 0.5 and q["corpus_speaker_share"] == 0.5
    assert q["vs_gzip"] == q["compressor_bpc"]["gzip"] / 1.5
    assert q["score"] == quality.quality_score(1.5, q["compressor_bpc"]["gzip"], 0.8, 0.5, 0.5)
    assert quality.figures(1.5, train, "some words\n", "no speakers here\n")["speaker_share"] is None


def test_a_model_that_knows_nothing_needs_log2_v_bits_per_character():
    config = Config(vocab_size=5, n_ctx=4, n_emb=8, head_size=8, n_heads=2, n_layers=1, dtype="float64")
    gpt = GPT(config)
    for p in gpt.params.values():
        p[...] = 0.0                     # every logit 0: the uniform distribution over the 5 tokens
    tokens = np.random.default_rng(0).integers(0, 5, 41)
    bpc, text = report.text_bpc(gpt, tokens, CharTokenizer(list("abcde")), batch=3)
    assert bpc == pytest.approx(math.log2(5), rel=1e-12) and len(text) == 40    # 10 windows of 4 targets


@pytest.mark.skipif(not CAN_FORK, reason="worker processes need fork (not on Windows or macOS)")
def test_the_pass_over_the_validation_text_gives_the_same_bits_on_worker_processes():
    config = Config(vocab_size=5, n_ctx=4, n_emb=8, head_size=8, n_heads=2, n_layers=1, dtype="float64")
    gpt = GPT(config, seed=0)
    tokens = np.random.default_rng(0).integers(0, 5, 77)
    tokenizer = CharTokenizer(list("abcde"))
    alone, text = report.text_bpc(gpt, tokens, tokenizer, batch=6)   # 19 windows: batches of 6, 6, 6 and 1
    with Workers(gpt, 2, [np.random.default_rng(0)] * 2, 6) as workers:
        shared, shared_text = report.text_bpc(gpt, tokens, tokenizer, batch=6, loss=workers.loss)
    assert shared == pytest.approx(alone, rel=1e-12) and shared_text == text
    assert alone != pytest.approx(math.log2(5), rel=1e-3)          # a model that has weights, not the uniform one


def test_a_finished_run_reports_and_shows_its_quality(trained, capsys):
    (guid,) = run_ids(trained)
    paths = RunPaths(trained, guid)
    q = json.loads(paths.report_json.read_text(encoding="utf-8"))["quality"]
    config = json.loads(paths.config.read_text(encoding="utf-8"))
    run = api.load_run(guid, out=trained)
    n_tokens = config["training"]["quality_tokens"]
    sample = sample_text(run.gpt, run.tokenizer, "", n_tokens, rng=seeds.stream(config["training"]["seed"],
                                                                         seeds.Stream.QUALITY_SAMPLE))
    assert n_tokens == TINY_RUN["quality_tokens"] and len(sample) == n_tokens      # char tokens: one each
    assert sample[:500] != paths.completion.read_text(encoding="utf-8")[:500]      # its own stream
    train_text = (trained / "tiny.txt").read_text(encoding="utf-8")
    expected = quality.figures(q["model_bpc"], "", sample, train_text)   # what the run read, recomputed
    assert q["real_word_share"] == expected["real_word_share"] and q["speaker_share"] == expected["speaker_share"]
    assert q["score"] == quality.quality_score(q["model_bpc"], q["compressor_bpc"]["gzip"], q["real_word_share"],
                                               q["speaker_share"], q["corpus_speaker_share"])
    assert main(["info", guid, "--out", str(trained)]) == 0
    out = capsys.readouterr().out
    assert f"quality score: {q['score']:.1f} / 100" in out and "than gzip" in out
    assert "real words (rough signal)" in out and "speaker lines (rough signal)" in out


def test_quality_md_states_the_default_length_of_the_quality_sample():
    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "QUALITY.md").read_text(encoding="utf-8")
    assert f"a sample of {TrainConfig().quality_tokens:,} tokens (`--quality-tokens`)" in text
