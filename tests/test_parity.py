"""The NumPy GPT equals an independent PyTorch implementation: logits, loss, every gradient, and AdamW steps.

Relative error of a tensor, used throughout: ``max|ours - ref| / max|ref|`` (the worst element's error measured
against the reference tensor's largest magnitude). Tolerances: float64 < 1e-9, float32 < 1e-4; optimizer
steps < 1e-6 in float64. On failure every tensor is listed with its max-diff, like llm.c's test_gpt2.

The reference (``tests/torch_reference.py``) is itself checked against a plain loop over heads and positions,
and the comparison helper is shown to flag a single perturbed gradient entry, so a pass means something.

The architecture switches (post-norm, mixture of heads, dense and sparse mixture of experts, weight tying, no Q,
K, V or gate biases, an LM head without bias) are checked the same way, each alone and in combinations, in both dtypes with dropout on;
for sparse experts the training loss and its gradients include the load-balancing term. The reference's mixture
of heads and mixture of experts are themselves checked against plain loops over heads, tokens and experts.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the parity tests need PyTorch (pip install -e '.[test]')")

from littlebaby.model import GPT, Config, param_shapes  # noqa: E402
from littlebaby.nn import attention  # noqa: E402
from littlebaby.optim import AdamW, clip_grad_norm, lr_schedule  # noqa: E402
from helpers import relative_error  # noqa: E402
from torch_reference import (  # noqa: E402
    TorchGPT, Variant, causal_self_attention, expected_param_shapes, mixture_of_experts, mixture_of_heads,
    no_dropout,
)

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
OPTIMIZER_TOLERANCE = 1e-6

# Small shapes that still exercise every path: several heads, two blocks, a vocabulary that is not a power of 2.
SQUARE = dict(vocab_size=11, n_ctx=8, n_emb=16, head_size=16, n_heads=4, n_layers=2)
# head_size != n_emb: the attention projection is (H, C), not square; run with T < n_ctx.
WIDE_HEADS = dict(vocab_size=13, n_ctx=9, n_emb=24, head_size=32, n_heads=4, n_layers=2)
SHAPES = {"square_full_context": (SQUARE, 8), "wide_heads_short_context": (WIDE_HEADS, 5)}
BATCH = 3


def make_config(shape: dict, dtype: str, dropout: float = 0.0, **switches) -> Config:
    """``switches``: architecture fields of Config (c_sequence, c_attention, ...); none gives the core GPT."""
    return Config(**shape, dropout=dropout, batch_size=BATCH, lr=1e-3, dtype=dtype, **switches)


def randomize_params(params: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Overwrite the init, in place, with values that hide no backward bug: no gain is 1 and no bias is 0."""
    for name, array in params.items():
        if array.ndim == 1 and name.endswith(".w"):  # LayerNorm gains, near 1
            values = 1.0 + 0.3 * rng.standard_normal(array.shape)  # (C,)
        elif array.ndim == 1:  # biases
            values = 0.2 * rng.standard_normal(array.shape)  # (n,)
        else:  # matrices and embeddings, scaled so activations stay O(1)
            values = rng.standard_normal(array.shape) / math.sqrt(array.shape[0])  # (n_in, n_out)
        array[...] = values


def random_batch(cfg: Config, T: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = rng.integers(0, cfg.vocab_size, size=(BATCH, T))  # (B, T)
    targets = rng.integers(0, cfg.vocab_size, size=(BATCH, T))  # (B, T)
    return idx, targets


def make_pair(shape: dict, dtype: str, dropout: float = 0.0, seed: int = 0, **switches) -> tuple[GPT, TorchGPT]:
    """Our model with random non-trivial parameters, and the reference loaded with the very same values."""
    cfg = make_config(shape, dtype, dropout, **switches)
    gpt = GPT(cfg, seed=seed)
    randomize_params(gpt.params, np.random.default_rng(1000 + seed))
    return gpt, TorchGPT(cfg, gpt.params)


def compare(ours: dict, ref: dict, tol: float) -> tuple[list[str], str]:
    """Compare same-named tensors; return the failing names and a per-tensor max-diff table."""
    lines = [f"{'tensor':<26} {'shape':<14} {'max|diff|':>10} {'max|ref|':>10} {'rel err':>10}  (tol {tol:g})"]
    failed = []
    for name, r in ref.items():
        o = np.asarray(ours[name])
        r = np.asarray(r)
        if o.shape != r.shape:
            failed.append(name)
            lines.append(f"{name:<26} shape {o.shape} != reference {r.shape}  FAIL")
            continue
        err = relative_error(o, r)
        ok = err < tol
        if not ok:
            failed.append(name)
        diff = float(np.max(np.abs(o.astype(np.float64) - r))) if r.size else 0.0
        lines.append(f"{name:<26} {str(r.shape):<14} {diff:>10.3e} {float(np.max(np.abs(r))):>10.3e} "
                     f"{err:>10.3e}  {'OK' if ok else 'FAIL'}")
    return failed, "\n".join(lines)


def assert_close(ours: dict, ref: dict, tol: float, what: str) -> None:
    failed, table = compare(ours, ref, tol)
    assert not failed, f"{what}: {len(failed)} of {len(ref)} tensors differ from PyTorch, first {failed[0]}\n{table}"


# --- the comparison itself can fail --------------------------------------------------------------------------


def test_compare_flags_one_perturbed_gradient():
    gpt, ref = make_pair(SQUARE, "float64")
    idx, targets = random_batch(make_config(SQUARE, "float64"), 8, np.random.default_rng(0))
    _, grads = ref.loss_and_grads(idx, targets)
    perturbed = {name: g.copy() for name, g in grads.items()}  # shapes of params
    perturbed["blocks.1.attn.w_qkv"][2, 5] += 1e-6 * np.max(np.abs(grads["blocks.1.attn.w_qkv"]))
    failed, table = compare(perturbed, grads, TOLERANCE["float64"])
    assert failed == ["blocks.1.attn.w_qkv"], table
    assert compare(grads, grads, TOLERANCE["float64"])[0] == []


def test_relative_error_is_scale_relative():
    assert relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert relative_error([1.0, 2.1], [1.0, 2.0]) == pytest.approx(0.05)
    assert relative_error([1e-3, 0.0], [0.0, 0.0]) == pytest.approx(1e-3)


# --- the reference itself follows the spec --------------------------------------------------------------------


def test_reference_attention_equals_a_loop_over_batch_heads_and_positions():
    """q, k, v split in that order, head n owns channels n*hs:(n+1)*hs, position t sees positions 0..t."""
    B, T, C, H, NH = 2, 5, 6, 8, 2
    hs = H // NH
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(B, T, C, generator=gen, dtype=torch.float64)  # (B, T, C)
    p = {"w_qkv": torch.randn(C, 3 * H, generator=gen, dtype=torch.float64),
         "b_qkv": torch.randn(3 * H, generator=gen, dtype=torch.float64),
         "w_proj": torch.randn(H, C, generator=gen, dtype=torch.float64),
         "b_proj": torch.randn(C, generator=gen, dtype=torch.float64)}
    qkv = h @ p["w_qkv"] + p["b_qkv"]  # (B, T, 3H)
    y = torch.zeros(B, T, H, dtype=torch.float64)  # (B, T, H)
    for b in range(B):
        for n in range(NH):
            heads = slice(n * hs, (n + 1) * hs)
            q, k, v = qkv[b, :, :H][:, heads], qkv[b, :, H:2 * H][:, heads], qkv[b, :, 2 * H:][:, heads]  # (T, hs)
            for t in range(T):
                scores = torch.stack([q[t] @ k[s] for s in range(t + 1)]) / math.sqrt(hs)  # (t+1,)
                weights = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()  # (t+1,)
                y[b, t, heads] = sum(weights[s] * v[s] for s in range(t + 1))
    expected = y @ p["w_proj"] + p["b_proj"]  # (B, T, C)
    got = causal_self_attention(h, p, NH, no_dropout)  # (B, T, C)
    assert relative_error(got.numpy(), expected.numpy()) < 1e-12


@pytest.mark.parametrize("model", ["ours", "reference"])
def test_logits_are_causal(model):
    """Changing the last token moves only the last position's logits."""
    gpt, ref = make_pair(SQUARE, "float64")
    idx, _ = random_batch(make_config(SQUARE, "float64"), 8, np.random.default_rng(7))
    changed = idx.copy()  # (B, T)
    changed[:, -1] = (changed[:, -1] + 1) % SQUARE["vocab_size"]
    logits_of = gpt.forward if model == "ours" else (lambda i: ref.forward(i).detach().numpy())
    before, after = logits_of(idx), logits_of(changed)  # (B, T, V) each
    np.testing.assert_allclose(before[:, :-1], after[:, :-1], rtol=0, atol=1e-12)
    assert not np.allclose(before[:, -1], after[:, -1])


def test_reference_refuses_parameters_that_are_not_the_spec():
    cfg = make_config(SQUARE, "float64")
    params = {name: np.zeros(shape) for name, shape in expected_param_shapes(cfg).items()}
    del params["blocks.1.ln_2.b"]
    with pytest.raises(ValueError, match="blocks.1.ln_2.b"):
        TorchGPT(cfg, params)


# --- parameters: names, shapes, dtype ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_params_have_the_spec_names_shapes_and_dtype(shape_name, dtype):
    shape, _ = SHAPES[shape_name]
    cfg = make_config(shape, dtype)
    gpt = GPT(cfg, seed=0)
    assert {n: a.shape for n, a in gpt.params.items()} == expected_param_shapes(cfg)
    assert {n: a.dtype for n, a in gpt.params.items()} == {n: np.dtype(dtype) for n in gpt.params}


# --- forward, loss, gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_logits_match_torch_in_eval_mode(shape_name, dtype):
    """forward() is eval mode: with dropout configured it must still equal the reference without masks."""
    shape, T = SHAPES[shape_name]
    gpt, ref = make_pair(shape, dtype, dropout=0.1)
    idx, _ = random_batch(make_config(shape, dtype), T, np.random.default_rng(1))
    logits = gpt.forward(idx)  # (B, T, V)
    ref_logits = ref.forward(idx).detach().numpy()  # (B, T, V)
    assert logits.dtype == ref_logits.dtype == np.dtype(dtype)
    assert_close({"logits": logits}, {"logits": ref_logits}, TOLERANCE[dtype],
                 f"logits {shape_name} {dtype}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_loss_and_every_gradient_match_torch(shape_name, dtype):
    shape, T = SHAPES[shape_name]
    gpt, ref = make_pair(shape, dtype)
    idx, targets = random_batch(make_config(shape, dtype), T, np.random.default_rng(2))
    loss, grads = gpt.loss_and_grads(idx, targets, rng=np.random.default_rng(3))
    ref_loss, ref_grads = ref.loss_and_grads(idx, targets)
    assert set(grads) == set(gpt.params), "grads must be keyed exactly like params"
    assert all(grads[n].dtype == np.dtype(dtype) for n in grads), "grads must have the config dtype"
    assert_close({"loss": loss, **grads}, {"loss": ref_loss, **ref_grads}, TOLERANCE[dtype],
                 f"loss and gradients {shape_name} {dtype}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_dropout_with_shared_masks_matches_torch(shape_name, dtype):
    """Same seed, same draw order: the two models drop the same units and agree to the usual tolerance."""
    shape, T = SHAPES[shape_name]
    gpt, ref = make_pair(shape, dtype, dropout=0.1)
    idx, targets = random_batch(make_config(shape, dtype), T, np.random.default_rng(4))
    loss, grads = gpt.loss_and_grads(idx, targets, rng=np.random.default_rng(5))
    ref_loss, ref_grads = ref.loss_and_grads(idx, targets, mask_rng=np.random.default_rng(5))
    assert_close({"loss": loss, **grads}, {"loss": ref_loss, **ref_grads}, TOLERANCE[dtype],
                 f"dropout loss and gradients {shape_name} {dtype}")
    # the masks really changed something: the same batch without dropout gives another loss
    assert abs(ref_loss - ref.loss(idx, targets).item()) > 1e-3


# --- architecture switches -----------------------------------------------------------------------------------

# head_size (24) differs from n_emb (16) and hs = 6, so every projection, mixture of heads' (hs, C) one included,
# is rectangular; T = 7 < n_ctx.
VARIANT_SHAPE = dict(vocab_size=11, n_ctx=8, n_emb=16, head_size=24, n_heads=4, n_layers=2)
VARIANT_T = 7
# aux weight 0.1 (not the default 0.01) so the load-balancing term weighs visibly in the loss and the gate grads
MOE = dict(c_network="moe", n_experts=4, moe_expansion=2, moe_aux_weight=0.1)
VARIANTS = {
    "post_norm": dict(c_sequence="post"),
    "mixture_of_heads": dict(c_attention="moh"),
    "moe_dense": dict(MOE, moe_top_k=0),
    "moe_top1": dict(MOE, moe_top_k=1),
    "moe_top2": dict(MOE, moe_top_k=2),
    "weight_tying": dict(weight_tying=True),
    "no_head_bias": dict(lm_head_bias=False),
    "gpt2_head_tied_no_bias": dict(weight_tying=True, lm_head_bias=False),
    "post_moh": dict(c_sequence="post", c_attention="moh"),
    "post_moe_top1_tied": dict(MOE, c_sequence="post", moe_top_k=1, weight_tying=True),
    "moh_moe_top2_tied": dict(MOE, c_attention="moh", moe_top_k=2, weight_tying=True),
    "post_moh_moe_dense_tied": dict(MOE, c_sequence="post", c_attention="moh", moe_top_k=0, weight_tying=True),
    # without the Q, K, V and gate biases, as the original notebook's models are (docs/IMPORT.md)
    "no_qkv_bias": dict(qkv_bias=False),
    "moe_top2_no_gate_bias": dict(MOE, moe_top_k=2, gate_bias=False),
    "original_moh_moe_dense": dict(MOE, c_attention="moh", moe_top_k=0, qkv_bias=False, gate_bias=False),
    "original_post": dict(c_sequence="post", qkv_bias=False, gate_bias=False),
}
SPARSE = [name for name, switches in VARIANTS.items() if switches.get("moe_top_k", 0) > 0]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_params_have_the_spec_names_and_shapes(variant):
    cfg = make_config(VARIANT_SHAPE, "float64", **VARIANTS[variant])
    assert param_shapes(cfg) == expected_param_shapes(cfg)
    assert {n: a.shape for n, a in GPT(cfg, seed=0).params.items()} == expected_param_shapes(cfg)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_matches_torch_in_eval_and_in_training_with_dropout(variant, dtype):
    """Eval: logits and cross-entropy. Training, dropout masks shared: the loss (with the aux term for sparse
    experts) and every gradient."""
    gpt, ref = make_pair(VARIANT_SHAPE, dtype, dropout=0.1, **VARIANTS[variant])
    idx, targets = random_batch(gpt.config, VARIANT_T, np.random.default_rng(8))
    ref_logits = ref.forward(idx).detach().numpy()  # (B, T, V)
    eval_loss, ref_eval_loss = gpt.loss(idx, targets), ref.loss(idx, targets, with_aux=False).item()
    assert_close({"logits": gpt.forward(idx), "eval loss": eval_loss},
                 {"logits": ref_logits, "eval loss": ref_eval_loss}, TOLERANCE[dtype], f"eval {variant} {dtype}")

    loss, grads = gpt.loss_and_grads(idx, targets, rng=np.random.default_rng(9))
    ref_loss, ref_grads = ref.loss_and_grads(idx, targets, mask_rng=np.random.default_rng(9))
    assert set(grads) == set(gpt.params), "grads must be keyed exactly like params"
    assert all(grads[n].dtype == np.dtype(dtype) for n in grads), "grads must have the config dtype"
    assert_close({"loss": loss, **grads}, {"loss": ref_loss, **ref_grads}, TOLERANCE[dtype],
                 f"training loss and gradients {variant} {dtype}")
    # the masks really changed something: the same batch without dropout gives another loss
    assert abs(ref_loss - ref.loss(idx, targets).item()) > 1e-3


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", ["core", "mixture_of_heads"])
def test_attention_in_causal_query_blocks_matches_torch(variant, dtype, monkeypatch):
    """Attention in blocks of 2 or 3 queries, the path long sequences take (nn.attention.query_blocks), equals
    the reference in eval and in training with shared dropout masks."""
    monkeypatch.setattr(attention, "MIN_QUERY_BLOCK_ROWS", 2)
    assert len(attention.query_blocks(VARIANT_T, VARIANT_T)) == 3
    gpt, ref = make_pair(VARIANT_SHAPE, dtype, dropout=0.1, **VARIANTS.get(variant, {}))
    idx, targets = random_batch(gpt.config, VARIANT_T, np.random.default_rng(11))
    assert_close({"logits": gpt.forward(idx)}, {"logits": ref.forward(idx).detach().numpy()}, TOLERANCE[dtype],
                 f"eval in query blocks {variant} {dtype}")
    loss, grads = gpt.loss_and_grads(idx, targets, rng=np.random.default_rng(12))
    ref_loss, ref_grads = ref.loss_and_grads(idx, targets, mask_rng=np.random.default_rng(12))
    assert_close({"loss": loss, **grads}, {"loss": ref_loss, **ref_grads}, TOLERANCE[dtype],
                 f"training in query blocks {variant} {dtype}")
    assert abs(ref_loss - ref.loss(idx, targets).item()) > 1e-3


@pytest.mark.parametrize("variant", SPARSE)
def test_sparse_training_loss_is_cross_entropy_plus_the_load_balancing_term(variant):
    """Without dropout the training loss minus the eval loss is the aux term alone, and it is far from 0."""
    gpt, ref = make_pair(VARIANT_SHAPE, "float64", **VARIANTS[variant])
    idx, targets = random_batch(gpt.config, VARIANT_T, np.random.default_rng(10))
    loss, _ = gpt.loss_and_grads(idx, targets)
    aux = loss - gpt.loss(idx, targets)
    _, ref_aux = ref.forward_with_aux(idx)
    assert relative_error(aux, ref_aux.item()) < TOLERANCE["float64"], (aux, ref_aux.item())
    # even load gives aux_weight per block: the term is a visible part of the loss, not a rounding error
    assert ref_aux.item() > 0.5 * gpt.config.n_layers * gpt.config.moe_aux_weight, ref_aux.item()


def dict_config(**fields):
    """An object carrying just the given Config fields (the reference reads the others' defaults)."""
    return type("Fields", (), fields)()


def test_reference_variant_refuses_unknown_switches():
    with pytest.raises(ValueError, match="c_attention"):
        Variant.of(dict_config(c_attention="gqa"))
    with pytest.raises(ValueError, match="moe_top_k"):
        Variant.of(dict_config(c_network="moe", n_experts=2, moe_top_k=3))


def test_reference_mixture_of_heads_equals_a_loop_over_tokens_and_heads():
    """Each token's output is sum_n gate[n] * head_n(token), with gate = softmax of the token's gate logits."""
    B, T, C, H, NH = 2, 4, 6, 8, 2
    hs = H // NH
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(B, T, C, generator=gen, dtype=torch.float64)  # (B, T, C)
    shapes = {"w_qkv": (C, 3 * H), "b_qkv": (3 * H,), "w_gate": (C, NH), "b_gate": (NH,), "w_proj": (hs, C),
              "b_proj": (C,)}
    p = {name: torch.randn(*shape, generator=gen, dtype=torch.float64) for name, shape in shapes.items()}
    concat = {"w_qkv": p["w_qkv"], "b_qkv": p["b_qkv"], "w_proj": torch.eye(H, dtype=torch.float64),
              "b_proj": torch.zeros(H, dtype=torch.float64)}
    heads = causal_self_attention(h, concat, NH, no_dropout)  # (B, T, H) the heads side by side, unprojected
    expected = torch.zeros(B, T, C, dtype=torch.float64)  # (B, T, C)
    for b in range(B):
        for t in range(T):
            logits = h[b, t] @ p["w_gate"] + p["b_gate"]  # (NH,)
            gate = [math.exp(z) / sum(math.exp(y) for y in logits.tolist()) for z in logits.tolist()]
            mixed = sum(gate[n] * heads[b, t, n * hs:(n + 1) * hs] for n in range(NH))  # (hs,)
            expected[b, t] = mixed @ p["w_proj"] + p["b_proj"]
    got = mixture_of_heads(h, p, NH, no_dropout)  # (B, T, C)
    assert relative_error(got.numpy(), expected.numpy()) < 1e-12


@pytest.mark.parametrize("top_k", [0, 1, 2])
def test_reference_mixture_of_experts_equals_a_loop_over_tokens_and_experts(top_k):
    """Token by token: its top_k experts by gate probability, weighted by those probabilities over their sum (all
    experts by the probabilities when dense); aux = w * NE * sum_e (share of slots routed to e) * (mean prob of e)."""
    N, C, Fe, NE, aux_weight = 7, 5, 6, 3, 0.3
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, N, C, generator=gen, dtype=torch.float64)  # (1, N, C)
    shapes = {"w_gate": (C, NE), "b_gate": (NE,), "w_fc": (NE, C, Fe), "b_fc": (NE, Fe), "w_proj": (NE, Fe, C),
              "b_proj": (NE, C)}
    p = {name: torch.randn(*shape, generator=gen, dtype=torch.float64) for name, shape in shapes.items()}
    expected = torch.zeros(N, C, dtype=torch.float64)  # (N, C)
    routed = [0] * NE
    mean_probs = [0.0] * NE
    for n in range(N):
        scores = [math.exp(z) for z in (x[0, n] @ p["w_gate"] + p["b_gate"]).tolist()]
        probs = [s / sum(scores) for s in scores]
        chosen = sorted(range(NE), key=lambda e: -probs[e])[:top_k or NE]
        for e in chosen:
            u = x[0, n] @ p["w_fc"][e] + p["b_fc"][e]  # (Fe,)
            hidden = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))  # (Fe,) GELU
            expected[n] += probs[e] / sum(probs[c] for c in chosen) * (hidden @ p["w_proj"][e] + p["b_proj"][e])
            routed[e] += 1
        mean_probs = [m + probs[e] / N for e, m in enumerate(mean_probs)]
    expected_aux = aux_weight * NE * sum(routed[e] / (N * top_k) * mean_probs[e] for e in range(NE)) if top_k else 0
    got, aux = mixture_of_experts(x, p, top_k, aux_weight)  # (1, N, C), ()
    assert relative_error(got[0].numpy(), expected.numpy()) < 1e-12
    assert aux.item() == pytest.approx(expected_aux, rel=1e-12, abs=0)


# --- optimizer: schedule, clipping, AdamW --------------------------------------------------------------------

LR, MIN_LR, WARMUP, MAX_STEPS = 1e-2, 1e-3, 2, 4
BETAS, EPS, WEIGHT_DECAY, MAX_NORM = (0.9, 0.99), 1e-8, 0.1, 0.05


def spec_lr(step: int) -> float:
    """The schedule as the spec states it: linear warmup, then cosine from LR to MIN_LR, then MIN_LR."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    if step > MAX_STEPS:
        return MIN_LR
    progress = (step - WARMUP) / (MAX_STEPS - WARMUP)
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * progress)) * (LR - MIN_LR)


def test_lr_schedule_follows_warmup_then_cosine():
    ours = [lr_schedule(step, MAX_STEPS, LR, WARMUP, MIN_LR) for step in range(MAX_STEPS + 3)]
    assert ours == pytest.approx([spec_lr(step) for step in range(MAX_STEPS + 3)], rel=1e-12, abs=0)


def test_adamw_steps_with_schedule_and_clipping_match_torch():
    """Four steps (lr LR/2, LR, LR, then cosine-decayed): clipped grads, norms and new weights equal torch's."""
    gpt, ref = make_pair(SQUARE, "float64")
    decay = [t for t in ref.params.values() if t.ndim >= 2]
    no_decay = [t for t in ref.params.values() if t.ndim < 2]
    torch_opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS, eps=EPS)
    opt = AdamW(gpt.params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    batches = np.random.default_rng(6)
    lrs = []
    for step in range(MAX_STEPS):
        idx, targets = random_batch(make_config(SQUARE, "float64"), 8, batches)
        lr_t = lr_schedule(step, MAX_STEPS, LR, WARMUP, MIN_LR)
        lrs.append(lr_t)

        _, grads = gpt.loss_and_grads(idx, targets)
        norm = clip_grad_norm(grads, MAX_NORM)
        before = {n: a.copy() for n, a in gpt.params.items()}
        opt.step(gpt.params, grads, lr_t)

        torch_opt.zero_grad()
        ref.loss(idx, targets).backward()
        ref_norm = torch.nn.utils.clip_grad_norm_(list(ref.params.values()), MAX_NORM).item()
        for group in torch_opt.param_groups:
            group["lr"] = float(lr_t)
        torch_opt.step()

        assert ref_norm > 2 * MAX_NORM, "the test must exercise clipping; lower MAX_NORM"
        assert relative_error(norm, ref_norm) < TOLERANCE["float64"], (norm, ref_norm)
        ref_grads = {n: t.grad.numpy() for n, t in ref.params.items()}
        assert_close(grads, ref_grads, TOLERANCE["float64"], f"clipped gradients, step {step}")
        new_ref = ref.numpy_params()
        assert_close(gpt.params, new_ref, OPTIMIZER_TOLERANCE, f"weights after step {step} (lr {lr_t:.3g})")
        # the weights move by ~lr per step, so also compare the step itself, relative to its own size
        assert_close({n: gpt.params[n] - before[n] for n in before}, {n: new_ref[n] - before[n] for n in before},
                     OPTIMIZER_TOLERANCE, f"weight updates of step {step}")
    assert len(set(np.round(lrs, 12))) >= 3, f"the schedule should give at least 3 distinct lrs, got {lrs}"
