"""The architecture switches: each variant's layers and whole model against finite differences, and each
combination trains."""

import numpy as np
import pytest

from gradcheck import TOLERANCE, check_layer, grad_error, model_grad_errors, randn
from helpers import COMBINATIONS, ORIGINAL_VARIANTS, SHAPE, nontrivial_gpt, variant_id
from littlebaby import nn
from littlebaby.errors import ConfigError
from littlebaby.model import GPT, Config, num_params
from littlebaby.nn import moe as moe_module
from littlebaby.nn.moe import moe_backward, moe_forward
from littlebaby.nn.moh import moh_backward, moh_forward
from littlebaby.nn.softmax import softmax_backward, softmax_forward
from littlebaby.optim import AdamW

B, T, C, H, NH, NE, F = 2, 5, 8, 12, 3, 4, 16


@pytest.fixture
def rng():
    return np.random.default_rng(77)


def test_softmax(rng):
    check_layer(rng, softmax_forward, softmax_backward, [randn(rng, B, T, NE) * 2])


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_mixture_of_heads(rng, dropout):
    def forward(*arrays):
        return moh_forward(*arrays, NH, dropout, np.random.default_rng(1))

    hs = H // NH
    inputs = [randn(rng, B, T, C), randn(rng, C, 3 * H) * 0.5, randn(rng, 3 * H), randn(rng, C, NH),
              randn(rng, NH), randn(rng, hs, C), randn(rng, C)]
    check_layer(rng, forward, moh_backward, inputs)


def test_mixture_of_heads_is_the_gated_sum_of_heads(rng):
    x, w_qkv, b_qkv = randn(rng, B, T, C), randn(rng, C, 3 * H), randn(rng, 3 * H)
    w_gate, b_gate = randn(rng, C, NH), randn(rng, NH)
    hs = H // NH
    out, _ = moh_forward(x, w_qkv, b_qkv, w_gate, b_gate, np.eye(hs), np.zeros(hs), NH)  # (B, T, hs)
    heads, _ = nn.attention.heads_forward(x, w_qkv, b_qkv, NH)                             # (B, T, NH, hs)
    gate = np.exp(x @ w_gate + b_gate)
    gate /= gate.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("btn,btnd->btd", gate, heads), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("top_k, aux_weight", [(0, 0.0), (1, 0.3), (2, 0.3), (4, 0.3)])
def test_mixture_of_experts(rng, top_k, aux_weight):
    inputs = [randn(rng, B, T, C), randn(rng, C, NE), randn(rng, NE), randn(rng, NE, C, F) * 0.5,
              randn(rng, NE, F), randn(rng, NE, F, C) * 0.5, randn(rng, NE, C)]
    out, aux, cache = moe_forward(*inputs, top_k, aux_weight)
    dout = randn(rng, *out.shape)
    dx, *grads = moe_backward(dout, cache)

    def f():
        out, aux, _ = moe_forward(*inputs, top_k, aux_weight)
        return float(np.sum(out * dout)) + aux

    errors = [grad_error(f, x, g, rng) for x, g in zip(inputs, [dx, *grads])]
    assert max(errors) < TOLERANCE, errors
    assert (aux > 0) == (top_k > 0)


def test_dense_experts_are_the_gate_weighted_sum(rng):
    x, w_gate, b_gate = randn(rng, B, T, C), randn(rng, C, NE), randn(rng, NE)
    w_fc, b_fc, w_proj, b_proj = randn(rng, NE, C, F), randn(rng, NE, F), randn(rng, NE, F, C), randn(rng, NE, C)
    out, _, _ = moe_forward(x, w_gate, b_gate, w_fc, b_fc, w_proj, b_proj)
    gate = np.exp(x @ w_gate + b_gate)
    gate /= gate.sum(-1, keepdims=True)
    expected = sum(gate[..., e, None] * nn.mlp_forward(x, w_fc[e], b_fc[e], w_proj[e], b_proj[e])[0]
                   for e in range(NE))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_sparse_routing_skips_the_unchosen_experts(rng, monkeypatch):
    rows_seen = []
    real_mlp_forward = moe_module.mlp_forward
    monkeypatch.setattr(moe_module, "mlp_forward", lambda x, *w: (rows_seen.append(len(x)), real_mlp_forward(x, *w))[1])
    inputs = [randn(rng, B, T, C), randn(rng, C, NE), randn(rng, NE), randn(rng, NE, C, F),
              randn(rng, NE, F), randn(rng, NE, F, C), randn(rng, NE, C)]
    moe_forward(*inputs, top_k=2)
    assert len(rows_seen) == NE and sum(rows_seen) == B * T * 2  # each token ran exactly 2 experts
    rows_seen.clear()
    moe_forward(*inputs, top_k=0)
    assert sum(rows_seen) == B * T * NE


def test_load_balancing_loss_is_its_weight_when_the_load_is_even(rng):
    """aux = weight * NE * sum_e f_e P_e: with every expert getting 1/NE of the tokens and 1/NE of the gate's
    mass it is the weight itself; with every token sent to one expert it is larger."""
    N, weight = 2 * NE, 0.3
    experts = [randn(rng, NE, C, F), randn(rng, NE, F), randn(rng, NE, F, C), randn(rng, NE, C)]
    x = np.zeros((1, N, C))
    x[0, np.arange(N), np.arange(N) % NE] = 1e-3      # token n leans to expert n % NE through the gate below
    w_gate, b_gate = np.eye(C, NE), np.zeros(NE)
    _, even, cache = moe_forward(x, w_gate, b_gate, *experts, top_k=1, aux_weight=weight)
    routed_share = cache[3]
    np.testing.assert_allclose(routed_share, 1.0 / NE, rtol=0, atol=1e-15)   # the load is even
    assert even == pytest.approx(weight, rel=1e-12)
    x[0, :, 0] = 1.0                                   # now every token prefers expert 0
    _, uneven, _ = moe_forward(x, w_gate, b_gate, *experts, top_k=1, aux_weight=weight)
    assert uneven > 1.5 * weight


@pytest.mark.parametrize("variant", COMBINATIONS + ORIGINAL_VARIANTS, ids=variant_id)
def test_whole_model_gradients_for_every_combination(variant):
    """Every parameter against finite differences, with entries probed in every head and every expert."""
    gpt = nontrivial_gpt(variant, dropout=0.1)
    rng = np.random.default_rng(5)
    idx, targets = rng.integers(0, 11, (3, 6)), rng.integers(0, 11, (3, 6))
    assert list(gpt.loss_and_grads(idx, targets)[1]) == list(gpt.params)
    assert gpt.num_params() == sum(p.size for p in gpt.params.values())
    errors = model_grad_errors(gpt, idx, targets, dropout_seed=9, n_probes=4)
    assert max(errors.values()) < TOLERANCE, {k: v for k, v in errors.items() if v >= TOLERANCE}


def test_the_whole_model_check_finds_a_bug_in_one_expert_or_one_head(monkeypatch):
    """A gradient wrong in a single expert's slice, or in a single head's columns of w_qkv, fails the check
    above: the probes reach every expert and every head."""
    gpt = nontrivial_gpt(dict(c_network="moe", moe_top_k=2))
    rng = np.random.default_rng(5)
    idx, targets = rng.integers(0, 11, (3, 6)), rng.integers(0, 11, (3, 6))
    hs = gpt.config.head_size // gpt.config.n_heads
    original = GPT.loss_and_grads
    for name, part in [("blocks.1.moe.w_fc", np.s_[2]), ("blocks.0.attn.w_qkv", np.s_[:, 2 * hs:3 * hs])]:
        def wrong_in_one_part(self, idx, targets, rng=None, name=name, part=part):
            loss, grads = original(self, idx, targets, rng)
            grads[name][part] *= 1.01
            return loss, grads

        monkeypatch.setattr(GPT, "loss_and_grads", wrong_in_one_part)
        errors = model_grad_errors(gpt, idx, targets, dropout_seed=9, n_probes=4)
        assert errors[name] > 100 * TOLERANCE and max(e for n, e in errors.items() if n != name) < TOLERANCE


@pytest.mark.parametrize("variant", COMBINATIONS + ORIGINAL_VARIANTS, ids=variant_id)
def test_every_combination_trains(variant):
    gpt = GPT(Config(**SHAPE, **variant, dropout=0.0, lr=1e-2), seed=1)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 11, (4, 8))
    targets = np.roll(idx, -1, axis=1)
    opt = AdamW(gpt.params, lr=1e-2)
    losses = []
    for _ in range(25):
        loss, grads = gpt.loss_and_grads(idx, targets)
        opt.step(gpt.params, grads)
        losses.append(loss)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("variant", ORIGINAL_VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_switched_off_biases_are_absent_and_counted(variant):
    config = Config(**SHAPE, **variant)
    gpt = GPT(config)
    names = {name.split(".", 2)[-1] for name in gpt.params}
    assert ("attn.b_qkv" in names) == config.qkv_bias
    assert not ({"attn.b_gate", "moe.b_gate"} & names) or config.gate_bias
    assert num_params(config) == sum(p.size for p in gpt.params.values())
    with_biases = Config(**SHAPE, **{**variant, "qkv_bias": True, "gate_bias": True})
    assert num_params(config) < num_params(with_biases)


def test_weight_tying_shares_one_array():
    gpt = GPT(Config(**SHAPE, weight_tying=True))
    assert "lm_head.w" not in gpt.params
    assert num_params(gpt.config) == num_params(Config(**SHAPE)) - 12 * 11


def test_a_head_without_bias_has_no_bias_and_computes_x_at_the_head():
    gpt = GPT(Config(**SHAPE, weight_tying=True, lm_head_bias=False, dtype="float64"))
    assert "lm_head.b" not in gpt.params
    assert num_params(gpt.config) == num_params(Config(**SHAPE)) - 12 * 11 - 11
    with_bias = GPT.from_params(Config(**SHAPE, weight_tying=True, dtype="float64"),
                                {**gpt.params, "lm_head.b": np.zeros(11)})
    idx = np.random.default_rng(0).integers(0, 11, (2, 8))
    np.testing.assert_array_equal(gpt.forward(idx), with_bias.forward(idx))   # x @ head + 0 is x @ head
    gpt.grow_vocab(13, np.random.default_rng(1))
    assert "lm_head.b" not in gpt.params and gpt.forward(idx).shape == (2, 8, 13)


@pytest.mark.parametrize("data, message", [
    ({"c_sequence": "middle"}, "'c_sequence' must be of type 'pre' | 'post'"),
    ({"c_network": "moe", "moe_top_k": 5}, "moe_top_k (5) must be between 0"),
    ({"moe_aux_weight": -1.0}, "'moe_aux_weight' must be >= 0"),
])
def test_switch_values_are_checked(data, message):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({**SHAPE, **data})
    assert message in str(err.value)
