"""The KV cache: cached generation computes exactly what recomputing the window does, for every variant."""

import tracemalloc

import numpy as np
import pytest

from littlebaby.kvcache import (
    CachedStepper,
    KVCache,
    UncachedStepper,
    decode_step,
    decode_weights,
    fill_cache,
    layernorm_rows,
    window_start,
)
from littlebaby.model import GPT, Config, gpt_forward
from littlebaby.nn import layernorm_forward
from helpers import COMBINATIONS, nontrivial_gpt
from helpers import SHAPE as TINY
from helpers import ORIGINAL_VARIANTS

VARIANTS = COMBINATIONS + ORIGINAL_VARIANTS  # every switch combination, and the original's bias-free layouts


def test_window_grows_to_n_ctx_then_restarts_at_half():
    n_ctx = 6
    starts = [window_start(n, n_ctx) for n in range(1, 20)]
    lengths = [n - s for n, s in zip(range(1, 20), starts)]
    assert lengths[:6] == [1, 2, 3, 4, 5, 6]
    assert lengths[6:] == ([3, 4, 5, 6] * 4)[:13]
    assert all(3 <= length <= n_ctx for length in lengths[6:])
    assert [window_start(n, 1) for n in range(1, 5)] == [0, 1, 2, 3]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_cached_equals_uncached_at_every_step(variant):
    """Prefill a prompt, then step well past n_ctx so the window restarts twice; logits agree at every step."""
    gpt = GPT(Config(**TINY, **variant, dropout=0.1), seed=2)  # dropout must be off in generation
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, gpt.config.vocab_size, (3, 5))     # (B, T0)
    cached, uncached = CachedStepper(gpt), UncachedStepper(gpt)
    a, b = cached.start(prompt), uncached.start(prompt)
    for step in range(20):  # n_ctx = 8: windows restart at 9, 14, 19 tokens
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"step {step}")
        next_ids = a.argmax(axis=-1)                            # (B,) greedy
        a, b = cached.push(next_ids), uncached.push(next_ids)
    assert cached.tokens.shape == (3, 25)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_decode_step_equals_the_general_forward(variant, dtype):
    """The fast path against its plain twin: the same logits and the same keys and values written to the cache,
    at every position from the first to the last of the context."""
    gpt = nontrivial_gpt(variant, dtype=dtype, dropout=0.1)    # dropout must be off in generation
    params, config = gpt.params, gpt.config
    rng = np.random.default_rng(3)
    ids = rng.integers(0, config.vocab_size, (3, config.n_ctx))  # (B, n_ctx)
    before = {name: array.copy() for name, array in params.items()}
    weights = decode_weights(params, config)
    assert all(np.array_equal(params[name], before[name]) for name in params)  # the folds copy, never modify
    fast, plain = KVCache(config, 3), KVCache(config, 3)
    tolerance = {"float64": 1e-12, "float32": 1e-5}[dtype]
    for t in range(config.n_ctx):
        logits = decode_step(weights, config, ids[:, t], fast)   # (B, V)
        expected, _ = gpt_forward(params, config, ids[:, t:t + 1], kv_cache=plain)  # (B, 1, V)
        assert logits.shape == (3, config.vocab_size) and logits.dtype == np.dtype(dtype)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(logits, expected[:, 0], rtol=0, atol=tolerance * scale, err_msg=f"position {t}")
        assert fast.length == plain.length == t + 1
    for mine, theirs in zip(fast.keys + fast.values, plain.keys + plain.values):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=tolerance * np.abs(theirs).max())


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_fill_cache_writes_the_keys_and_values_of_the_general_forward(variant):
    gpt = nontrivial_gpt(variant, dtype="float64")
    params, config = gpt.params, gpt.config
    ids = np.random.default_rng(5).integers(0, config.vocab_size, (2, 7))  # (B, T)
    fast, plain = KVCache(config, 2), KVCache(config, 2)
    for cache in (fast, plain):  # a first token already cached: the fill starts at position 1
        gpt_forward(params, config, ids[:, :1], kv_cache=cache)
    fill_cache(params, config, ids[:, 1:], fast)
    gpt_forward(params, config, ids[:, 1:], kv_cache=plain)
    assert fast.length == plain.length == 7
    for layer, (mine, theirs) in enumerate(zip(fast.buffers, plain.buffers)):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12 * np.abs(theirs).max(), err_msg=f"layer {layer}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_layernorm_rows_equals_layernorm_forward(dtype):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((5, 12)) * 3 + 1).astype(dtype)  # (B, C) off-centre, so the mean matters
    w, b = rng.standard_normal(12).astype(dtype), rng.standard_normal(12).astype(dtype)
    expected, _ = layernorm_forward(x, w, b)
    out = layernorm_rows(x, w, b)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, expected, rtol=0, atol={"float64": 1e-12, "float32": 1e-5}[dtype])


def test_a_long_prompt_starts_in_the_right_window():
    gpt = GPT(Config(**TINY), seed=0)
    prompt = np.random.default_rng(1).integers(0, 11, (2, 19))
    np.testing.assert_allclose(CachedStepper(gpt).start(prompt), UncachedStepper(gpt).start(prompt), atol=1e-5)
    s = window_start(19, 8)
    np.testing.assert_allclose(CachedStepper(gpt).start(prompt), gpt.forward(prompt[:, s:])[:, -1], atol=1e-5)


def test_cache_is_preallocated_and_fills_in_place():
    config = Config(**TINY)
    cache = KVCache(config, batch_size=2)
    memory = [k.__array_interface__["data"][0] for k in cache.keys + cache.values]   # where each buffer lives
    stepper = CachedStepper(GPT(config))
    stepper.cache = cache
    stepper.tokens = np.zeros((2, 3), dtype=np.int64)
    stepper._prefill()
    assert cache.length == 3 and [k.__array_interface__["data"][0] for k in cache.keys + cache.values] == memory
    assert cache.keys[0].shape == (2, 4, 8, 4) and cache.keys[0][:, :, 3:].sum() == 0
    assert all(np.abs(k[:, :, :3]).sum() > 0 for k in cache.keys + cache.values)   # the prefill wrote there


def test_cached_step_cost_does_not_grow_with_the_context():
    """Per-token work is O(context): one step late in the window costs about what an early one does, while
    recomputing the window costs many times more."""
    gpt = GPT(Config(vocab_size=65, n_ctx=256, n_emb=64, head_size=64, n_heads=4, n_layers=2))
    prompt = np.zeros((1, 250), dtype=np.int64)
    cached, uncached = CachedStepper(gpt), UncachedStepper(gpt)
    cached.start(prompt), uncached.start(prompt)

    def step_bytes(stepper):   # the memory one step allocates: its work, measured whatever the machine's load
        tracemalloc.start()
        stepper.push(np.zeros(1, dtype=np.int64))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    assert step_bytes(uncached) > 5 * step_bytes(cached)
