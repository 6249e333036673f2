"""The numbers `baby serve` and the notebook show (littlebaby/serve/inspect.py) are the model's own: the trace's
logits are gpt_forward's bit for bit, its attention weights are gpt_forward's cached ones and the softmax of q k^T
computed by hand, the sampling distribution is the one sample_next draws from, and an explanation uses the
window generation used."""

import math

import numpy as np
import pytest

from littlebaby.sampling import sample_next
from littlebaby.kvcache import window_start
from littlebaby.sampling import UncachedStepper
from littlebaby.model import GPT, Config, block_params, gpt_forward
from littlebaby.nn import layernorm_forward
from littlebaby.serve.inspect import attention_weights, explain, ranked, sampling_probs, softmax, trace

VARIANTS = [{}, {"c_attention": "moh"}, {"c_sequence": "post"}, {"c_network": "moe", "moe_top_k": 2},
            {"weight_tying": True}]


def random_gpt(n_ctx=80, **switches):
    """A small GPT with weights far from their init (std 0.02 makes every attention row nearly uniform)."""
    config = Config(vocab_size=23, n_ctx=n_ctx, n_emb=16, head_size=16, n_heads=4, n_layers=2, dropout=0.1,
                    **switches)
    gpt = GPT(config, seed=1)
    rng = np.random.default_rng(2)
    gpt.params = {name: (p + rng.standard_normal(p.shape) * 0.3).astype(p.dtype) for name, p in gpt.params.items()}
    return gpt


@pytest.mark.parametrize("switches", VARIANTS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
@pytest.mark.parametrize("T", [5, 70])   # 70: three causal blocks of queries in the attention
def test_trace_is_gpt_forward(switches, T):
    gpt = random_gpt(**switches)
    ids = np.random.default_rng(T).integers(0, gpt.config.vocab_size, T)           # (T,)
    traced = trace(gpt, ids)
    logits, cache = gpt_forward(gpt.params, gpt.config, ids[None])                # (1, T, V), eval mode
    np.testing.assert_array_equal(traced.logits, logits[0])     # the same functions in the same order: bitwise
    block_caches = cache[2]
    for i, block_cache in enumerate(block_caches):
        np.testing.assert_array_equal(traced.attention[i], attention_weights(block_cache)[0])
    L, NH = gpt.config.n_layers, gpt.config.n_heads
    assert traced.attention.shape == (L, NH, T, T)
    assert traced.residuals.shape == (L + 1, T, gpt.config.n_emb)
    assert traced.lens_logits.shape == (L + 1, T, gpt.config.vocab_size)


@pytest.mark.parametrize("switches", [{}, {"c_attention": "moh"}], ids=["mha", "moh"])
def test_attention_weights_are_the_softmax_of_the_scores(switches):
    """From each block's input residual, by hand in float64: softmax(q k^T / sqrt(hs) + causal mask)."""
    gpt = random_gpt(**switches)
    T, NH, hs = 70, gpt.config.n_heads, gpt.config.head_size // gpt.config.n_heads
    traced = trace(gpt, np.random.default_rng(0).integers(0, gpt.config.vocab_size, T))
    for i in range(gpt.config.n_layers):
        p = {k: v.astype(np.float64) for k, v in block_params(gpt.params, gpt.config, i).items()}
        h, _ = layernorm_forward(traced.residuals[i].astype(np.float64), p["ln_1.w"], p["ln_1.b"])  # (T, C)
        q, k, _ = np.split(h @ p["attn.w_qkv"] + p["attn.b_qkv"], 3, axis=-1)    # (T, H) each
        q, k = (a.reshape(T, NH, hs).transpose(1, 0, 2) for a in (q, k))         # (NH, T, hs)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hs)                       # (NH, T, T)
        scores[:, np.triu(np.ones((T, T), bool), 1)] = -np.inf
        expected = softmax(scores)                                               # (NH, T, T)
        # float32 scores of size ~10 carry ~1e-6 relative error; the weights inherit it, no more
        np.testing.assert_allclose(traced.attention[i], expected, rtol=0, atol=2e-5)
        assert np.all(traced.attention[i][:, np.triu(np.ones((T, T), bool), 1)] == 0)


class FixedDraws:
    """A generator whose random() returns the uniforms it was given, one per call."""

    def __init__(self, uniforms):
        self.uniforms = list(uniforms)

    def random(self, n):
        return np.array([self.uniforms.pop(0) for _ in range(n)])


SETTINGS = [(1.0, None, None), (0.7, None, None), (1.5, 3, None), (1.0, 1, None), (1.0, 50, None),
            (0.8, None, 0.5), (1.2, 6, 0.9), (1.0, None, 0.01), (1.0, None, 1.0), (0.0, None, None)]


@pytest.mark.parametrize("temperature,top_k,top_p", SETTINGS)
def test_sampling_probs_is_what_sample_next_draws_from(temperature, top_k, top_p):
    """sample_next turns one uniform u into the first token whose cumulative weight passes u: a u in the middle
    of token i's share of [0, 1) under sampling_probs must draw token i, for every token with non-zero mass."""
    logits = np.random.default_rng(5).standard_normal(20).astype(np.float32) * 2   # (V,)
    probs = sampling_probs(logits, temperature, top_k, top_p)                       # (V,)
    assert probs.sum() == pytest.approx(1.0, abs=1e-12) and np.all(probs >= 0)
    cdf = np.cumsum(probs)                                                          # (V,)
    support = np.flatnonzero(probs > 0)
    if top_k is not None:
        assert len(support) <= top_k
    middles = cdf[support] - probs[support] / 2
    drawn = [sample_next(logits, temperature, top_k, top_p, FixedDraws([u])) for u in middles]
    assert drawn == support.tolist()


def test_ranked_lists_the_likeliest_first_and_skips_zeros():
    probs = np.array([0.1, 0.0, 0.5, 0.1, 0.3])
    assert ranked(probs, 10).tolist() == [2, 4, 0, 3]
    assert ranked(probs, 2).tolist() == [2, 4]


def test_explain_sees_the_window_generation_saw():
    """For every position of a sequence longer than the context, the raw distribution is the softmax of the
    logits the uncached stepper (generation's plain twin) computed there."""
    gpt = random_gpt(n_ctx=8)
    ids = np.random.default_rng(3).integers(0, gpt.config.vocab_size, 30)          # (N,)
    stepper = UncachedStepper(gpt)
    logits = stepper.start(ids[None, :4])                                           # (1, V) predicts ids[4]
    for position in range(4, 30):
        found = explain(gpt, ids, position, temperature=0.9, top_k=4)
        assert found.window == window_start(position, 8)
        assert found.attention.shape == (2, 4, position - found.window)
        np.testing.assert_array_equal(found.raw, softmax(logits[0]))
        np.testing.assert_array_equal(found.lens[-1], found.raw)    # the last lens row is the model's output
        np.testing.assert_array_equal(found.sampled, sampling_probs(logits[0], 0.9, 4))
        np.testing.assert_allclose(found.attention.sum(axis=-1), 1.0, rtol=1e-5)
        logits = stepper.push([ids[position]])                                      # (1, V)


def test_explain_refuses_a_position_with_nothing_before_it():
    gpt = random_gpt(n_ctx=8)
    with pytest.raises(ValueError, match="position 0"):
        explain(gpt, [1, 2, 3], 0)
