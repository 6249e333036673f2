"""The decode fast path against its plain twin, ``gpt_forward`` with a KV cache, for every variant."""

import numpy as np
import pytest

from littlebaby.decode import decode_step, decode_weights, fill_cache, layernorm_rows
from littlebaby.kvcache import KVCache
from littlebaby.model import gpt_forward
from littlebaby.nn import layernorm_forward
from helpers import COMBINATIONS, ORIGINAL_VARIANTS, nontrivial_gpt

# float64 agrees to rounding; float32 to its rounding, ~1e-7 relative, accumulated over a few layers
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", COMBINATIONS + ORIGINAL_VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
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
    for t in range(config.n_ctx):
        logits = decode_step(weights, config, ids[:, t], fast)   # (B, V)
        expected, _ = gpt_forward(params, config, ids[:, t:t + 1], kv_cache=plain)  # (B, 1, V)
        assert logits.shape == (3, config.vocab_size) and logits.dtype == np.dtype(dtype)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(logits, expected[:, 0], rtol=0, atol=TOLERANCE[dtype] * scale,
                                   err_msg=f"position {t}")
        assert fast.length == plain.length == t + 1
    np.testing.assert_allclose(fast.buffer, plain.buffer, rtol=0, atol=TOLERANCE[dtype] * np.abs(plain.buffer).max())


@pytest.mark.parametrize("variant", COMBINATIONS + ORIGINAL_VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
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
    np.testing.assert_allclose(out, expected, rtol=0, atol=TOLERANCE[dtype])
