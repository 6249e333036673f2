"""Every kernel rewritten for speed against its plain twin, kept here in the form that reads like the math.

The fast paths (in ``littlebaby/nn`` and ``littlebaby/optim.py``) trade clarity for fewer passes over memory:
in-place updates, additive masks instead of fancy indexing, einsum row sums, folded scale factors. Each test
runs the fast kernel and its twin on the same random inputs and requires agreement to rounding: 1e-12 relative
in float64, 1e-5 in float32 (the order of float32 epsilon times a few passes). Dropout masks must be identical.
"""

import math

import numpy as np
import pytest

from helpers import relative_error
from littlebaby.nn import attention, dropout, gelu, layernorm, softmax
from littlebaby.optim import AdamW

TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
DTYPES = ["float64", "float32"]


def assert_agree(fast, simple, dtype, what):
    fast, simple = tuple(np.atleast_1d(f) for f in fast), tuple(np.atleast_1d(s) for s in simple)
    assert len(fast) == len(simple), what
    for i, (f, s) in enumerate(zip(fast, simple)):
        assert f.shape == s.shape, f"{what}[{i}]: shape {f.shape} != {s.shape}"
        assert f.dtype == s.dtype, f"{what}[{i}]: dtype {f.dtype} != {s.dtype}"
        err = relative_error(f, s)
        assert err < TOLERANCE[dtype], f"{what}[{i}]: relative error {err:.2e} >= {TOLERANCE[dtype]:g}"


def randn(rng, dtype, *shape):
    return rng.standard_normal(shape).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


# --- the plain twins -----------------------------------------------------------------------------------------

def heads_forward_simple(x, w_qkv, b_qkv, n_heads, dropout_p=0.0, rng=None):
    """Attention heads as first written: boolean-mask write, max/sum reductions, divisions, separate dropout."""
    B, T, C = x.shape
    hs = w_qkv.shape[1] // 3 // n_heads
    qkv = x @ w_qkv + b_qkv                                         # (B, T, 3H)
    q, k, v = qkv.reshape(B, T, 3, n_heads, hs).transpose(2, 0, 3, 1, 4)  # each (B, NH, T, hs)
    att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)               # (B, NH, T, T)
    att[:, :, np.triu(np.ones((T, T), dtype=bool), k=1)] = -np.inf
    att = np.exp(att - att.max(axis=-1, keepdims=True))             # (B, NH, T, T)
    att = att / att.sum(axis=-1, keepdims=True)                     # (B, NH, T, T)
    keep = None
    att_drop = att
    if dropout_p > 0 and rng is not None:
        keep = rng.random(att.shape, dtype=np.float32) >= dropout_p  # (B, NH, T, T)
        att_drop = att * keep / (1.0 - dropout_p)                   # (B, NH, T, T)
    y = (att_drop @ v).transpose(0, 2, 1, 3)                        # (B, T, NH, hs)
    return y, (x, w_qkv, q, k, v, att, keep, dropout_p)


def heads_backward_simple(dy, cache):
    x, w_qkv, q, k, v, att, keep, p = cache
    B, NH, T, hs = q.shape
    dy = dy.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)             # (B, NH, T, hs)
    att_drop = att if keep is None else att * keep / (1.0 - p)     # (B, NH, T, T)
    dv = att_drop.transpose(0, 1, 3, 2) @ dy                        # (B, NH, T, hs)
    datt = dy @ v.transpose(0, 1, 3, 2)                             # (B, NH, T, T)
    if keep is not None:
        datt = datt * keep / (1.0 - p)
    dpre = att * (datt - (datt * att).sum(axis=-1, keepdims=True)) / math.sqrt(hs)  # (B, NH, T, T)
    dq, dk = dpre @ k, dpre.transpose(0, 1, 3, 2) @ q               # (B, NH, T, hs) each
    dqkv = np.stack([dq, dk, dv], axis=2).transpose(0, 3, 2, 1, 4).reshape(B, T, 3 * NH * hs)  # (B, T, 3H)
    dx = dqkv @ w_qkv.T                                             # (B, T, C)
    dw_qkv = x.reshape(-1, x.shape[-1]).T @ dqkv.reshape(-1, dqkv.shape[-1])  # (C, 3H)
    return dx, dw_qkv, dqkv.reshape(-1, dqkv.shape[-1]).sum(axis=0)


# --- attention -----------------------------------------------------------------------------------------------

def heads_fast(x, w, b, NH, p, seed, dy):
    """heads_forward then heads_backward: y (B, T, NH, hs), dx, dw_qkv, db_qkv and the generator afterwards."""
    rng = np.random.default_rng(seed)
    y, cache = attention.heads_forward(x, w, b, NH, p, rng)
    return (y, *attention.heads_backward(dy, cache)), rng


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("min_rows", [32, 2], ids=["default_blocks", "blocks_of_2"])
@pytest.mark.parametrize("B,T,C,NH,hs", [(2, 7, 12, 3, 4), (3, 16, 8, 2, 8), (2, 64, 8, 2, 4)])
def test_attention_heads_agree_with_the_simple_twin(rng, monkeypatch, dtype, p, min_rows, B, T, C, NH, hs):
    """The fast heads, in causal blocks of queries or in one, against the twin that computes all T x T scores."""
    monkeypatch.setattr(attention, "MIN_QUERY_BLOCK_ROWS", min_rows)
    x, w, b = randn(rng, dtype, B, T, C), randn(rng, dtype, C, 3 * NH * hs) / 2, randn(rng, dtype, 3 * NH * hs)
    dy = randn(rng, dtype, B, T, NH, hs)
    y, cache = attention.heads_forward(x, w, b, NH, p, np.random.default_rng(9))
    y_simple, cache_simple = heads_forward_simple(x, w, b, NH, p, np.random.default_rng(9))
    assert_agree([y], [y_simple], dtype, "heads_forward")
    assert_agree(attention.heads_backward(dy, cache), heads_backward_simple(dy, cache_simple), dtype,
                 "heads_backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_causal_query_blocks_agree_with_one_block(rng, monkeypatch, dtype, p):
    """Four blocks of queries against one, the plain path (all T x T scores): the same outputs and gradients
    to rounding, the same dropout masks and the generator left in the same state."""
    B, T, C, NH, hs = 2, 128, 16, 2, 8
    x, w, b = randn(rng, dtype, B, T, C), randn(rng, dtype, C, 3 * NH * hs) / 2, randn(rng, dtype, 3 * NH * hs)
    dy = randn(rng, dtype, B, T, NH, hs)
    assert [r1 for _, r1, _ in attention.query_blocks(T, T)] == [32, 64, 96, 128]
    blocked, blocked_rng = heads_fast(x, w, b, NH, p, 9, dy)
    monkeypatch.setattr(attention, "MAX_QUERY_BLOCKS", 1)
    assert attention.query_blocks(T, T) == [(0, T, T)]
    plain, plain_rng = heads_fast(x, w, b, NH, p, 9, dy)
    assert_agree(blocked, plain, dtype, "blocked heads")
    assert blocked_rng.bit_generator.state == plain_rng.bit_generator.state


@pytest.mark.parametrize("start", [0, 5])
def test_causal_query_blocks_fill_the_kv_cache_like_one_block(rng, monkeypatch, start):
    """A prefill of T tokens after ``start`` cached ones, in blocks of queries, equals the uncached forward's
    last T outputs, and leaves the same keys and values in the cache."""
    monkeypatch.setattr(attention, "MIN_QUERY_BLOCK_ROWS", 2)
    B, T, C, NH, hs, n_ctx = 2, 9, 8, 2, 4, 16
    x, w = randn(rng, "float64", B, start + T, C), randn(rng, "float64", C, 3 * NH * hs) / 2
    b = randn(rng, "float64", 3 * NH * hs)
    assert len(attention.query_blocks(T, start + T)) == 4
    k_all, v_all = np.zeros((2, B, NH, n_ctx, hs))                  # (B, NH, n_ctx, hs) each
    if start:
        attention.heads_forward(x[:, :start], w, b, NH, kv=(k_all, v_all, 0))
    y_cached, _ = attention.heads_forward(x[:, start:], w, b, NH, kv=(k_all, v_all, start))  # (B, T, NH, hs)
    y_simple, (_, _, q, k, v, _, _, _) = heads_forward_simple(x, w, b, NH)
    assert_agree([y_cached], [y_simple[:, start:]], "float64", "prefill")
    assert_agree([k_all[:, :, :start + T], v_all[:, :, :start + T]], [k, v], "float64", "cached keys, values")
    assert not k_all[:, :, start + T:].any()


def test_causal_bias_is_the_mask_as_a_term_to_add():
    for T, S in [(5, 5), (1, 9), (3, 8)]:
        bias = attention.causal_bias(T, S, np.dtype(np.float32))
        assert bias.dtype == np.float32
        assert np.array_equal(np.isneginf(bias), attention.causal_mask(T, S))
        assert np.all(bias[~attention.causal_mask(T, S)] == 0)


@pytest.mark.parametrize("rows", [4 * 6, softmax.SMALL // 9 + 1])   # both sides of SMALL: both paths
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_inplace_matches_the_definition(rng, rows, dtype):
    x = randn(rng, dtype, rows, 9) * 5
    x[..., 3:] = -np.inf
    x[::2, 1] = 100.0                                               # float32 rows whose exp would overflow unshifted
    assert (x.size <= softmax.SMALL) == (rows == 24)
    expected = np.exp(x - x.max(axis=-1, keepdims=True))
    expected /= expected.sum(axis=-1, keepdims=True)
    assert_agree([softmax.softmax_inplace(x.copy())], [expected], dtype, "softmax")



BIG = (2, softmax.SMALL // 34 + 3, 17)                              # above SMALL: reduceat and einsum, not NumPy's


def test_row_max_is_the_max_over_the_last_axis(rng):
    assert np.prod(BIG) > softmax.SMALL
    for shape in [(4, 6, 9), (2, 3, 1, 17), (5, 1), (1,), (3, 0, 4), BIG]:
        x = randn(rng, "float64", *shape)
        if x.size:
            x.reshape(-1, shape[-1])[::2, 1:] = -np.inf             # rows that are mostly masked
        for array in (x, x.astype(np.float32), x[..., ::-1]):      # the last one is not contiguous
            expected = array.max(axis=-1, keepdims=True)
            assert np.array_equal(softmax.row_max(array), expected) and softmax.row_max(array).dtype == array.dtype


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_row_sum_is_the_sum_over_the_last_axis(rng, dtype):
    assert softmax.row_sum(np.ones((3, 4, 0), dtype)).shape == (3, 4, 1)    # empty rows sum to 0
    for shape in [(4, 6, 9), (5, 1), BIG]:
        x = np.exp(randn(rng, dtype, *shape))                       # positive, as softmax sums them
        got = softmax.row_sum(x)
        assert got.shape == (*shape[:-1], 1) and got.dtype == x.dtype
        assert_agree([got], [x.sum(axis=-1, keepdims=True)], dtype, "row sums")


# --- dropout masks -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 1e-9, 0.999999])
def test_dropout_mask_is_bitwise_the_simple_mask_and_leaves_the_same_state(p):
    """Odd and even sizes, in sequence, so the generator's buffered half-draw is carried in and out."""
    fast, simple = np.random.default_rng(11), np.random.default_rng(11)
    for shape in [(3, 5), (4, 4), (1,), (7,), (0,), (2, 3, 64, 64), (5, 3)]:
        assert np.array_equal(dropout.dropout_mask(shape, p, fast), dropout.dropout_mask_simple(shape, p, simple))
        assert fast.bit_generator.state == simple.bit_generator.state, shape
    assert fast.random() == simple.random()


def test_dropout_mask_falls_back_for_other_generators():
    fast, simple = np.random.Generator(np.random.MT19937(3)), np.random.Generator(np.random.MT19937(3))
    assert np.array_equal(dropout.dropout_mask((9, 9), 0.3, fast), dropout.dropout_mask_simple((9, 9), 0.3, simple))


# --- LayerNorm and GELU --------------------------------------------------------------------------------------

def layernorm_forward_simple(x, w, b, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)                           # (..., 1)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)            # (..., 1)
    xhat = (x - mean) / np.sqrt(var + eps)                          # (..., C)
    return xhat * w + b, (xhat, 1.0 / np.sqrt(var + eps), w)


def layernorm_backward_simple(dout, cache):
    xhat, rstd, w = cache
    C = xhat.shape[-1]
    g = dout * w                                                    # (..., C)
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, (dout * xhat).reshape(-1, C).sum(axis=0), dout.reshape(-1, C).sum(axis=0)


def gelu_forward_simple(x):
    t = np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x))  # (...)
    return 0.5 * x * (1.0 + t), (x, t)


def gelu_backward_simple(dout, cache):
    x, t = cache
    du_dx = math.sqrt(2.0 / math.pi) * (1.0 + 3.0 * 0.044715 * x * x)  # (...)
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_agrees_with_the_simple_twin(rng, dtype):
    x, w, b = randn(rng, dtype, 4, 7, 24) * 3 + 1, 1 + randn(rng, dtype, 24) / 3, randn(rng, dtype, 24)
    dout = randn(rng, dtype, 4, 7, 24)
    out, cache = layernorm.layernorm_forward(x, w, b)
    out_simple, cache_simple = layernorm_forward_simple(x, w, b)
    assert_agree([out], [out_simple], dtype, "layernorm_forward")
    assert_agree(layernorm.layernorm_backward(dout, cache), layernorm_backward_simple(dout, cache_simple), dtype,
                 "layernorm_backward")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_agrees_with_the_simple_twin(rng, dtype):
    x = randn(rng, dtype, 5, 6, 32) * 3
    dout = randn(rng, dtype, 5, 6, 32)
    out, cache = gelu.gelu_forward(x)
    out_simple, cache_simple = gelu_forward_simple(x)
    assert_agree([out], [out_simple], dtype, "gelu_forward")
    assert_agree([gelu.gelu_backward(dout, cache)], [gelu_backward_simple(dout, cache_simple)], dtype,
                 "gelu_backward")


# --- AdamW ---------------------------------------------------------------------------------------------------

def adamw_steps_simple(params, grads_per_step, lr, betas, eps, weight_decay):
    """AdamW written as the formulas: m, v, their bias corrections, then the update."""
    beta1, beta2 = betas
    params = {n: p.copy() for n, p in params.items()}
    m = {n: np.zeros_like(p) for n, p in params.items()}
    v = {n: np.zeros_like(p) for n, p in params.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        for n, p in params.items():
            if p.ndim >= 2:
                p -= lr * weight_decay * p
            m[n] = beta1 * m[n] + (1 - beta1) * grads[n]
            v[n] = beta2 * v[n] + (1 - beta2) * grads[n] ** 2
            p -= lr * (m[n] / (1 - beta1 ** t)) / (np.sqrt(v[n] / (1 - beta2 ** t)) + eps)
    return params


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_agrees_with_the_simple_twin(rng, dtype):
    params = {"w": randn(rng, dtype, 6, 5), "b": randn(rng, dtype, 5)}
    grads_per_step = [{n: randn(rng, dtype, *p.shape) * 10.0 ** -k for n, p in params.items()} for k in range(4)]
    expected = adamw_steps_simple(params, grads_per_step, 1e-2, (0.9, 0.99), 1e-8, 0.1)
    opt = AdamW(params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for grads in grads_per_step:
        opt.step(params, grads)
    assert_agree([params["w"], params["b"]], [expected["w"], expected["b"]], dtype, "AdamW")
