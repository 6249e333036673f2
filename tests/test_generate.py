"""Sampling: greedy, top-k, top-p, temperature, the context crop, streaming, and `generate` files."""

import io
import json

import numpy as np
import pytest

import littlebaby.api as api
from helpers import TEXT
from littlebaby.errors import BabyError
from littlebaby.sampling import check_settings, make_stepper, sample_next, sample_text, sample_texts
from littlebaby.kvcache import window_start
from littlebaby.model import GPT, Config
from littlebaby.tokenizers import train_tokenizer



@pytest.fixture(scope="module")
def model():
    tok = train_tokenizer("char", TEXT)
    cfg = Config(vocab_size=tok.vocab_size, n_ctx=8, n_emb=16, head_size=16, n_heads=2, n_layers=1)
    return GPT(cfg, seed=0), tok


def test_temperature_zero_is_argmax():
    logits = np.array([0.1, 2.0, -1.0, 1.9])
    assert sample_next(logits, temperature=0, rng=np.random.default_rng(0)) == 1


def test_top_k_one_is_argmax_and_k_past_the_vocab_is_clamped():
    rng = np.random.default_rng(0)
    logits = np.array([0.0, 0.5, 0.4])
    assert {sample_next(logits, 5.0, top_k=1, rng=rng) for _ in range(50)} == {1}
    assert {sample_next(logits, 1.0, top_k=100, rng=rng) for _ in range(300)} == {0, 1, 2}


def test_top_k_keeps_only_the_k_likeliest():
    rng = np.random.default_rng(1)
    logits = np.log(np.array([0.4, 0.1, 0.3, 0.2]))
    assert {sample_next(logits, 1.0, top_k=2, rng=rng) for _ in range(300)} == {0, 2}


def test_top_p_keeps_the_smallest_set_reaching_p():
    rng = np.random.default_rng(2)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert {sample_next(logits, 1.0, top_p=0.6, rng=rng) for _ in range(400)} == {0, 1}
    assert {sample_next(logits, 1.0, top_p=0.5, rng=rng) for _ in range(100)} == {0}
    assert {sample_next(logits, 1.0, top_p=0.01, rng=rng) for _ in range(100)} == {0}


def test_samples_follow_the_softmax():
    rng = np.random.default_rng(3)
    logits = np.array([1.0, 0.0, -1.0, 0.5])
    for temperature in (1.0, 2.0):
        draws = np.array([sample_next(logits, temperature, rng=rng) for _ in range(20000)])
        freq = np.bincount(draws, minlength=4) / draws.size
        p = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
        np.testing.assert_allclose(freq, p, atol=0.015)


def test_settings_are_checked():
    for bad in (dict(max_tokens=-1), dict(temperature=-0.5), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        settings = dict(max_tokens=5, temperature=1.0, top_k=None, top_p=None) | bad
        with pytest.raises(BabyError):
            check_settings(**settings)


def test_steppers_see_the_window_past_n_ctx(model):
    gpt, tok = model
    ids = tok.encode(TEXT[:30])
    for stepper in (make_stepper(gpt, use_cache=True), make_stepper(gpt, use_cache=False)):
        logits = stepper.start(ids[None])                                   # (1, V)
        start = window_start(30, gpt.config.n_ctx)
        np.testing.assert_allclose(logits, gpt.forward(ids[None, start:])[:, -1], atol=1e-5)
        logits = stepper.push(np.array([3]))
        longer = np.append(ids, 3)
        start = window_start(31, gpt.config.n_ctx)
        np.testing.assert_allclose(logits, gpt.forward(longer[None, start:])[:, -1], atol=1e-5)


def test_a_batch_of_samples_differs_and_each_row_is_a_seeded_draw(model):
    gpt, tok = model
    texts = sample_texts(gpt, tok, "ANNE:", 30, rng=np.random.default_rng(3), num_samples=4)
    assert len(texts) == 4 and len(set(texts)) > 1 and all(t.startswith("ANNE:") for t in texts)
    assert texts == sample_texts(gpt, tok, "ANNE:", 30, rng=np.random.default_rng(3), num_samples=4)
    greedy = sample_texts(gpt, tok, "ANNE:", 20, temperature=0, num_samples=3)
    assert greedy == [sample_text(gpt, tok, "ANNE:", 20, temperature=0)] * 3


def test_batched_sampling_draws_like_single_rows():
    logits = np.random.default_rng(0).standard_normal((5, 9))
    batch = sample_next(logits, 0.8, top_k=4, top_p=0.9, rng=np.random.default_rng(1))
    rng = np.random.default_rng(1)
    u = rng.random(5)
    for row, token in zip(range(5), batch):
        single = sample_next(logits[row], 0.8, top_k=4, top_p=0.9, rng=_FixedDraw(u[row]))
        assert single == token


class _FixedDraw:
    """A stand-in generator whose one uniform draw is fixed, to compare a batch row with a single sample."""

    def __init__(self, value):
        self.value = value

    def random(self, size):
        return np.full(size, self.value)


def test_streamed_text_is_the_returned_text_and_seeded(model):
    gpt, tok = model
    stream = io.StringIO()
    text = sample_text(gpt, tok, "ANNE:", 40, rng=np.random.default_rng(5), stream=stream)
    assert stream.getvalue() == text and text.startswith("ANNE:") and len(text) == 45
    assert sample_text(gpt, tok, "ANNE:", 40, rng=np.random.default_rng(5)) == text
    greedy = sample_text(gpt, tok, "", 10, temperature=0, rng=np.random.default_rng(0))
    assert greedy == sample_text(gpt, tok, "", 10, temperature=0, rng=np.random.default_rng(99))
    assert sample_text(gpt, tok, "BEN", 10, use_cache=False, rng=np.random.default_rng(1)) == \
        sample_text(gpt, tok, "BEN", 10, use_cache=True, rng=np.random.default_rng(1))


def test_prompt_outside_the_vocab_names_the_characters(model):
    gpt, tok = model
    with pytest.raises(BabyError, match="'@'"):
        sample_text(gpt, tok, "ROMEO@", 5, rng=np.random.default_rng(0))


def test_generate_writes_text_and_settings(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    run = api.train(data=tmp_path / "t.txt", out=tmp_path, steps=3, quiet=True, n_ctx=8, n_emb=16, head_size=16,
                    n_heads=2, n_layers=1, batch_size=4, completion_tokens=0)
    result = api.generate("last", prompt="BEN:", max_tokens=25, temperature=0.8, top_k=5, seed=1, out=tmp_path)
    assert result.path.name.startswith(f"completion_{run.guid}_") and len(result.path.stem.split("_")[-1]) == 14
    assert result.path.read_text(encoding="utf-8") == result.text and result.text.startswith("BEN:")
    settings = json.loads(result.path.with_suffix(".json").read_text(encoding="utf-8"))
    assert settings["prompt"] == "BEN:" and settings["top_k"] == 5 and settings["tokens_per_s"] > 0
    again = api.generate(run.guid[:6], prompt="BEN:", max_tokens=25, temperature=0.8, top_k=5, seed=1, out=tmp_path)
    assert again.text == result.text
