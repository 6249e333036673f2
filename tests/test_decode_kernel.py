"""The compiled decode step (littlebaby/kernels/decode.py) against its twins: the NumPy fast path and
``gpt_forward`` with a KV cache, for every variant it covers; its exp and GELU; how generation picks it."""

import importlib
import math

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is not installed: the compiled decode step cannot exist here")

from littlebaby.decode import NumpyDecode  # noqa: E402
from littlebaby.errors import BabyError  # noqa: E402
from littlebaby.sampling import CachedStepper, GeneralDecode, UncachedStepper, make_stepper, sample_ids  # noqa: E402
from littlebaby.kernels import decode as kernel  # noqa: E402
from littlebaby.kvcache import KVCache  # noqa: E402
from littlebaby.model import GPT, Config, gpt_forward  # noqa: E402
from littlebaby.nn.gelu import gelu_forward  # noqa: E402
from test_decode import TOLERANCE  # noqa: E402
from helpers import COMBINATIONS, ORIGINAL_VARIANTS, nontrivial_gpt  # noqa: E402
from helpers import SHAPE as TINY  # noqa: E402

generate = importlib.import_module("littlebaby.sampling")  # the module of the steppers
COVERED = [v for v in COMBINATIONS + ORIGINAL_VARIANTS if kernel.supports(Config(**TINY, **v))]
NAMED = {"ids": lambda v: "-".join(str(x) for x in v.values())}


def setting(variant, key):
    """A switch of a variant, which names only the switches it changes."""
    return variant.get(key, getattr(Config(), key))


def test_the_kernel_covers_multi_head_attention_with_one_mlp_and_nothing_else():
    assert {(setting(v, "c_sequence"), setting(v, "weight_tying")) for v in COVERED} == {
        (s, t) for s in ("pre", "post") for t in (False, True)}
    assert all(setting(v, "c_attention") == "mha" and setting(v, "c_network") == "mlp" for v in COVERED)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", COVERED, **NAMED)
def test_the_kernel_equals_the_numpy_fast_path_and_the_general_forward(variant, dtype):
    """A prefill of 3 tokens for 3 sequences, then one token at a time to the end of the context: the same
    logits as both twins at every step, and the same keys and values in the cache."""
    gpt = nontrivial_gpt(variant, dtype=dtype)
    params, config = gpt.params, gpt.config
    ids = np.random.default_rng(3).integers(0, config.vocab_size, (3, config.n_ctx))  # (B, n_ctx)
    compiled, fast = kernel.NumbaDecode(params, config), NumpyDecode(params, config)
    caches = {name: KVCache(config, 3) for name in ("compiled", "fast", "plain")}
    for t0, t1 in [(0, 3)] + [(t, t + 1) for t in range(3, config.n_ctx)]:
        logits = compiled(ids[:, t0:t1], caches["compiled"])     # (B, V)
        expected, _ = gpt_forward(params, config, ids[:, t0:t1], kv_cache=caches["plain"])  # (B, T, V)
        atol = TOLERANCE[dtype] * np.abs(expected).max()
        assert logits.shape == (3, config.vocab_size) and logits.dtype == np.dtype(dtype)
        np.testing.assert_allclose(logits, expected[:, -1], rtol=0, atol=atol, err_msg=f"tokens {t0}..{t1 - 1}")
        np.testing.assert_allclose(logits, fast(ids[:, t0:t1], caches["fast"]), rtol=0, atol=atol)
    assert {cache.length for cache in caches.values()} == {config.n_ctx}
    plain = caches["plain"].buffer
    for name in ("compiled", "fast"):
        np.testing.assert_allclose(caches[name].buffer, plain, rtol=0, atol=TOLERANCE[dtype] * np.abs(plain).max())


def test_a_nan_in_the_weights_reaches_the_logits():
    """No fastmath flag lets the compiler assume NaN away: a NaN goes where the NumPy layers would take it."""
    gpt = nontrivial_gpt(COVERED[0], dtype="float32")
    gpt.params["blocks.1.mlp.w_fc"][3, 5] = np.nan
    ids = np.array([[1, 2, 3]])
    compiled = kernel.NumbaDecode(gpt.params, gpt.config)(ids, KVCache(gpt.config, 1))
    plain, _ = gpt_forward(gpt.params, gpt.config, ids, kv_cache=KVCache(gpt.config, 1))
    assert np.isnan(plain[:, -1]).all() and np.isnan(compiled).all()


def test_the_kernel_refuses_what_would_read_or_write_outside_its_arrays():
    gpt = GPT(Config(**TINY), seed=0)
    compiled, cache = kernel.NumbaDecode(gpt.params, gpt.config), KVCache(gpt.config, 2)
    with pytest.raises(IndexError, match="outside the vocabulary"):
        compiled(np.array([[1], [11]]), cache)
    with pytest.raises(ValueError, match="cannot take"):
        compiled(np.zeros((3, 1), dtype=np.int64), cache)        # a cache made for 2 sequences
    with pytest.raises(ValueError, match="cannot take"):
        compiled(np.zeros((2, 9), dtype=np.int64), cache)        # more than n_ctx = 8 positions
    assert cache.length == 0


def test_float32_exp_is_within_two_ulp_and_keeps_inf_and_nan():
    x = np.concatenate([np.linspace(-87.3, 88.3, 400_001), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    out = x.copy()
    kernel.exp_inplace(out, np.empty(x.size, np.int32))
    exact = np.exp(x.astype(np.float64))                        # float32's exp, correctly rounded, is within 0.5 ulp
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(out - exact) / ulp) <= 2.0
    special = np.array([-np.inf, np.inf, np.nan, -100.0, 100.0], np.float32)
    kernel.exp_inplace(special, np.empty(5, np.int32))
    assert special[0] == 0 and special[1] == np.inf and np.isnan(special[2])
    assert 0 <= special[3] < 1e-37 and special[4] == np.inf    # underflow to (almost) 0, overflow to inf


def test_float64_exp_is_the_library_exp():
    x = np.linspace(-700, 700, 1001)
    out = x.copy()
    kernel.exp_inplace(out, np.empty(x.size, np.int32))
    assert np.array_equal(out, [math.exp(v) for v in x])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_twice_gelu_is_twice_the_gelu_layer(dtype):
    h = (np.random.default_rng(6).standard_normal((3, 40)) * 4).astype(dtype)  # (N, F) into both tails
    expected, _ = gelu_forward(h)
    out = h.copy()
    kernel.twice_gelu(out, np.empty(40, np.int32))
    np.testing.assert_allclose(out, 2 * expected, rtol=0, atol=TOLERANCE[dtype] * np.abs(h).max())


def test_generation_uses_the_kernel_where_it_covers_the_variant_and_the_text_is_unchanged():
    tiny = dict(TINY, dropout=0.0)
    assert make_stepper(GPT(Config(**tiny))).make_decode is kernel.NumbaDecode
    assert make_stepper(GPT(Config(**tiny)), kernels="numpy").make_decode is NumpyDecode
    assert make_stepper(GPT(Config(**tiny, c_network="moe"))).make_decode is NumpyDecode
    assert make_stepper(GPT(Config(**tiny, c_attention="moh"))).make_decode is NumpyDecode
    gpt = GPT(Config(**tiny, dtype="float64"), seed=3)  # float64: a rounding difference cannot flip a draw
    rng = np.random.default_rng

    def sample(**options):  # 30 tokens past n_ctx = 8: the window restarts four times
        return np.array(list(sample_ids(gpt, [1, 2], 30, rng=rng(5), num_samples=2, **options)))

    compiled = sample()
    assert np.array_equal(compiled, sample(kernels="numpy"))
    assert np.array_equal(compiled, sample(use_cache=False))


def test_without_numba_generation_says_so_once_and_uses_numpy(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "numba", None)   # import numba now raises ImportError
    monkeypatch.setattr(generate, "SAID", set())
    gpt = GPT(Config(**TINY), seed=0)
    for _ in range(2):
        assert make_stepper(gpt).make_decode is NumpyDecode
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "numba" in lines[0] and "NumPy" in lines[0] and "Traceback" not in lines[0]
    with pytest.raises(BabyError, match="`kernels='numba'`"):
        make_stepper(gpt, kernels="numba")


def test_a_kernel_that_fails_to_compile_falls_back_with_one_line(monkeypatch, capsys):
    import numba

    @numba.njit
    def untypable(*args):
        return args[0] + "a string"   # a typing error when compiled

    monkeypatch.setattr(kernel, "decode_tokens", untypable)
    monkeypatch.setattr(generate, "SAID", set())
    kernel.compile_error.cache_clear()
    try:
        gpt = GPT(Config(**TINY, dtype="float64"), seed=0)
        assert make_stepper(gpt).make_decode is NumpyDecode
        assert make_stepper(gpt, kernels="numba").make_decode is NumpyDecode
    finally:
        kernel.compile_error.cache_clear()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "did not compile" in lines[0] and "TypingError" in lines[0]


def test_the_cached_steppers_with_every_decode_equal_the_uncached_one():
    gpt = nontrivial_gpt(COVERED[0], dtype="float64")
    prompt = np.random.default_rng(2).integers(0, 11, (2, 5))
    steppers = [CachedStepper(gpt, decode) for decode in (GeneralDecode, NumpyDecode, kernel.NumbaDecode)]
    plain = UncachedStepper(gpt)
    logits = [s.start(prompt) for s in steppers], plain.start(prompt)
    for step in range(12):
        for mine in logits[0]:
            np.testing.assert_allclose(mine, logits[1], rtol=0, atol=1e-12 * np.abs(logits[1]).max())
        next_ids = logits[1].argmax(axis=-1)
        logits = [s.push(next_ids) for s in steppers], plain.push(next_ids)
