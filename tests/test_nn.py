"""Every layer alone: its hand-written backward against float64 finite differences.

Each layer is turned into a scalar ``sum(forward(...) * R)`` with a fixed random R, so dout = R.
Parameters are non-trivial random values: zeros and ones hide backward bugs.
"""

import numpy as np
import pytest

from gradcheck import TOLERANCE, check_layer, grad_error, randn
from littlebaby import nn
from littlebaby.model import Config, param_shapes
from littlebaby.nn.embedding import token_embedding_backward_simple

B, T, C, H, NH, V = 3, 5, 8, 12, 3, 7


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_linear(rng):
    check_layer(rng, nn.linear_forward, nn.linear_backward, [randn(rng, B, T, C), randn(rng, C, H), randn(rng, H)])


def test_layernorm(rng):
    x = randn(rng, B, T, C) * 3 + 1
    check_layer(rng, nn.layernorm_forward, nn.layernorm_backward, [x, 1 + randn(rng, C) * 0.5, randn(rng, C)])


def test_gelu(rng):
    check_layer(rng, nn.gelu_forward, nn.gelu_backward, [randn(rng, B, T, C) * 2])


def test_dropout_with_fixed_mask(rng):
    x = randn(rng, B, T, C)
    out, cache = nn.dropout_forward(x, 0.3, np.random.default_rng(0))
    assert 0 < np.mean(out == 0) < 0.6  # some, not all, zeroed
    check_layer(rng, lambda x: nn.dropout_forward(x, 0.3, np.random.default_rng(0)), nn.dropout_backward, [x])


def test_dropout_is_identity_in_eval(rng):
    x = randn(rng, B, T, C)
    out, cache = nn.dropout_forward(x, 0.3, None)
    assert out is x and cache is None


def test_dropout_keeps_expectation():
    x = np.ones((200, 500))
    out, _ = nn.dropout_forward(x, 0.25, np.random.default_rng(0))
    assert abs(out.mean() - 1.0) < 0.01


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_attention(rng, dropout):
    def forward(x, w_qkv, b_qkv, w_proj, b_proj):
        return nn.attention_forward(x, w_qkv, b_qkv, w_proj, b_proj, NH, dropout, np.random.default_rng(7))

    inputs = [randn(rng, B, T, C), randn(rng, C, 3 * H) * 0.5, randn(rng, 3 * H), randn(rng, H, C), randn(rng, C)]
    check_layer(rng, forward, nn.attention_backward, inputs)


def test_attention_heads_are_independent_slices(rng):
    """One head computed alone with plain 2-D matrices equals the batched computation's slice."""
    x, w_qkv, b_qkv = randn(rng, 1, T, C), randn(rng, C, 3 * H), randn(rng, 3 * H)
    # an identity output projection makes the output the heads' outputs side by side (1, T, H)
    y_batched, _ = nn.attention_forward(x, w_qkv, b_qkv, np.eye(H), np.zeros(H), NH)
    hs = H // NH
    for h in range(NH):
        qkv = x[0] @ w_qkv + b_qkv
        q, k, v = (qkv[:, j * H + h * hs: j * H + (h + 1) * hs] for j in range(3))
        scores = q @ k.T / np.sqrt(hs) + np.triu(np.full((T, T), -np.inf), 1)
        weights = np.exp(scores - scores.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        np.testing.assert_allclose(y_batched[0, :, h * hs:(h + 1) * hs], weights @ v, rtol=1e-12, atol=1e-12)


def test_mlp(rng):
    inputs = [randn(rng, B, T, C), randn(rng, C, 4 * C) * 0.5, randn(rng, 4 * C), randn(rng, 4 * C, C), randn(rng, C)]
    check_layer(rng, nn.mlp_forward, nn.mlp_backward, inputs)


VARIANTS = [dict(), dict(c_sequence="post"), dict(c_attention="moh"), dict(c_network="moe"),
            dict(c_network="moe", moe_top_k=2, moe_aux_weight=0.1),
            dict(c_sequence="post", c_attention="moh", c_network="moe", moe_top_k=1)]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())) or "default")
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_block(rng, dropout, variant):
    config = Config(vocab_size=V, n_ctx=T, n_emb=C, head_size=H, n_heads=NH, n_layers=1, dropout=dropout,
                    dtype="float64", n_experts=3, moe_expansion=2, **variant)
    p = {name: randn(rng, *shape) * 0.4 + (1.0 if ".ln_" in name and name.endswith(".w") else 0.0)
         for name, shape in param_shapes(config).items() if name.startswith("blocks.0.")}
    p = {name.removeprefix("blocks.0."): value for name, value in p.items()}
    x = randn(rng, B, T, C)

    def forward():
        return nn.block_forward(x, p, config, np.random.default_rng(3))

    out, aux, cache = forward()
    dout = randn(rng, *out.shape)
    dx, grads = nn.block_backward(dout, cache)
    assert set(grads) == set(p) and all(grads[k].shape == p[k].shape for k in p)

    def f():  # the block's aux loss is part of the objective its backward differentiates
        out, aux, _ = forward()
        return float(np.sum(out * dout)) + aux

    errors = {name: grad_error(f, p[name], grads[name], rng) for name in p}
    errors["x"] = grad_error(f, x, dx, rng)
    assert max(errors.values()) < TOLERANCE, errors


def test_token_embedding(rng):
    idx = rng.integers(0, V, size=(B, T))
    wte = randn(rng, V, C)
    out, cache = nn.token_embedding_forward(idx, wte)
    dout = randn(rng, *out.shape)
    dwte = nn.token_embedding_backward(dout, cache)
    error = grad_error(lambda: float(np.sum(nn.token_embedding_forward(idx, wte)[0] * dout)), wte, dwte, rng, 30)
    assert error < TOLERANCE


def test_token_embedding_fast_path_equals_simple_twin(rng):
    idx = rng.integers(0, 50, size=(16, 64))
    idx[0, :10] = 3  # long runs of one id
    dout = randn(rng, 16, 64, C).astype(np.float32)
    _, cache = nn.token_embedding_forward(idx, randn(rng, 60, C))
    fast, simple = nn.token_embedding_backward(dout, cache), token_embedding_backward_simple(dout, cache)
    assert fast.shape == (60, C) and not fast[50:].any()
    np.testing.assert_allclose(fast, simple, rtol=1e-5, atol=1e-5)


def test_position_embedding(rng):
    wpe = randn(rng, 9, C)
    x = randn(rng, B, T, C)

    def forward(wpe):
        pos, cache = nn.position_embedding_forward(T, wpe, start=2)
        return x + pos, cache

    out, cache = forward(wpe)
    dout = randn(rng, *out.shape)
    dwpe = nn.position_embedding_backward(dout, cache)
    assert not dwpe[:2].any() and not dwpe[2 + T:].any()
    assert grad_error(lambda: float(np.sum(forward(wpe)[0] * dout)), wpe, dwpe, rng, 30) < TOLERANCE


def test_cross_entropy(rng):
    logits, targets = randn(rng, B, T, V) * 2, rng.integers(0, V, size=(B, T))
    loss, cache = nn.cross_entropy_forward(logits, targets)
    manual = -np.mean(np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))[
        np.arange(B)[:, None], np.arange(T)[None, :], targets])
    assert abs(loss - manual) < 1e-12
    dlogits = nn.cross_entropy_backward(cache)
    assert grad_error(lambda: nn.cross_entropy_forward(logits, targets)[0], logits, dlogits, rng, 30) < TOLERANCE


def test_gradcheck_catches_a_wrong_gradient(rng):
    """The checker must fail when the backward is off by a little: a test that cannot fail is a defect."""
    x, w, b = randn(rng, B, T, C), randn(rng, C, H), randn(rng, H)
    out, cache = nn.linear_forward(x, w, b)
    dout = randn(rng, *out.shape)
    _, dw, _ = nn.linear_backward(dout, cache)
    dw_wrong = dw * (1 + 1e-4)
    f = lambda: float(np.sum(nn.linear_forward(x, w, b)[0] * dout))  # noqa: E731
    assert grad_error(f, w, dw, rng) < TOLERANCE
    assert grad_error(f, w, dw_wrong, rng) > TOLERANCE


@pytest.mark.parametrize("forward", ["linear", "layernorm", "gelu", "attention", "mlp"])
def test_float32_stays_float32(rng, forward):
    x = randn(rng, B, T, C).astype(np.float32)
    f32 = lambda *shape: randn(rng, *shape).astype(np.float32)  # noqa: E731
    args = {"linear": (x, f32(C, H), f32(H)), "layernorm": (x, f32(C), f32(C)), "gelu": (x,),
            "attention": (x, f32(C, 3 * H), f32(3 * H), f32(H, C), f32(C), NH),
            "mlp": (x, f32(C, 4 * C), f32(4 * C), f32(4 * C, C), f32(C))}[forward]
    out, cache = getattr(nn, f"{forward}_forward")(*args)
    grads = getattr(nn, f"{forward}_backward")(np.ones_like(out), cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
