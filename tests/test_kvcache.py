"""The KV cache and its window: cached generation computes exactly what recomputing the window does."""

import numpy as np
import pytest

from littlebaby.decode import NumpyDecode
from littlebaby.kvcache import KVCache, window_start
from littlebaby.model import GPT, Config
from littlebaby.sampling import CachedStepper, GeneralDecode, UncachedStepper, make_stepper
from helpers import COMBINATIONS, ORIGINAL_VARIANTS
from helpers import SHAPE as TINY

VARIANTS = COMBINATIONS + ORIGINAL_VARIANTS  # every switch combination, and the original's bias-free layouts
DECODES = {"general": GeneralDecode, "numpy": NumpyDecode}



def test_window_grows_to_n_ctx_then_restarts_at_half():
    n_ctx = 6
    starts = [window_start(n, n_ctx) for n in range(1, 20)]
    lengths = [n - s for n, s in zip(range(1, 20), starts)]
    assert lengths[:6] == [1, 2, 3, 4, 5, 6]
    assert lengths[6:] == ([3, 4, 5, 6] * 4)[:13]
    assert all(3 <= length <= n_ctx for length in lengths[6:])
    assert [window_start(n, 1) for n in range(1, 5)] == [0, 1, 2, 3]


@pytest.mark.parametrize("decode", DECODES)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_cached_equals_uncached_at_every_step(variant, decode):
    """Prefill a prompt, then step well past n_ctx so the window restarts twice; logits agree at every step."""
    gpt = GPT(Config(**TINY, **variant, dropout=0.1), seed=2)  # dropout must be off in generation
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, gpt.config.vocab_size, (3, 5))     # (B, T0)
    cached, uncached = CachedStepper(gpt, DECODES[decode]), UncachedStepper(gpt)
    a, b = cached.start(prompt), uncached.start(prompt)
    for step in range(20):  # n_ctx = 8: windows restart at 9, 14, 19 tokens
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"step {step}")
        next_ids = a.argmax(axis=-1)                            # (B,) greedy
        a, b = cached.push(next_ids), uncached.push(next_ids)
    assert cached.tokens.shape == (3, 25) and cached.cache.length == 25 - window_start(25, 8)


def test_a_long_prompt_starts_in_the_right_window():
    gpt = GPT(Config(**TINY), seed=0)
    prompt = np.random.default_rng(1).integers(0, 11, (2, 19))
    expected = gpt.forward(prompt[:, window_start(19, 8):])[:, -1]  # (B, V)
    for stepper in (make_stepper(gpt), CachedStepper(gpt), UncachedStepper(gpt)):
        np.testing.assert_allclose(stepper.start(prompt), expected, atol=1e-5)


def test_the_cache_is_one_buffer_preallocated_and_filled_in_place():
    gpt = GPT(Config(**TINY), seed=0)
    stepper = make_stepper(gpt)
    stepper.start(np.zeros((2, 3), dtype=np.int64))
    cache = stepper.cache
    buffer = cache.buffer
    assert buffer.shape == (2, 2, 2, 4, 8, 4)                   # (L, B, 2, NH, n_ctx, hs)
    assert all(np.shares_memory(view, buffer) for view in cache.buffers + cache.keys + cache.values)
    assert cache.length == 3 and np.all(buffer[..., :3, :] != 0) and np.all(buffer[..., 3:, :] == 0)
    for token in range(7):  # past n_ctx = 8: the window restarts at the 9th token, in the same buffer
        stepper.push(np.array([token, token]))
    assert stepper.cache is cache and cache.buffer is buffer and cache.length == 10 - window_start(10, 8)


def test_advance_refuses_more_positions_than_the_cache_holds():
    cache = KVCache(Config(**TINY), batch_size=1)
    cache.advance(5)
    cache.advance(3)
    assert cache.length == 8
    with pytest.raises(ValueError, match="holds 8 positions"):
        cache.advance(1)
    cache.reset()
    assert cache.length == 0


class CountingDecode(NumpyDecode):
    """The NumPy decode, recording how many new tokens each call feeds the model."""
    fed = []

    def __call__(self, idx, kv_cache):
        self.fed.append(idx.shape[1])
        return super().__call__(idx, kv_cache)


def test_a_cached_step_feeds_one_token_except_when_the_window_restarts():
    """Per-token work is O(context): after the prompt, every step feeds the model one token, and a restart
    re-feeds the n_ctx // 2 tokens the window keeps (recomputing would feed the whole window every step)."""
    gpt = GPT(Config(**TINY), seed=0)
    stepper = CachedStepper(gpt, CountingDecode)
    CountingDecode.fed = []
    stepper.start(np.zeros((1, 5), dtype=np.int64))
    for _ in range(20):
        stepper.push(np.zeros(1, dtype=np.int64))
    restarts = [n for n in range(6, 26) if window_start(n, 8) != window_start(n - 1, 8)]
    assert restarts == [9, 14, 19, 24]
    assert CountingDecode.fed == [5] + [4 if n in restarts else 1 for n in range(6, 26)]
