"""The NumPy GPT equals an independent PyTorch implementation: logits, loss, every gradient, and AdamW steps.

Relative error of a tensor, used throughout: ``max|ours - ref| / max|ref|`` (the worst element's error measured
against the reference tensor's largest magnitude). Tolerances: float64 < 1e-9, float32 < 1e-4; optimizer
steps < 1e-6 in float64. On failure every tensor is listed with its max-diff, like llm.c's test_gpt2.

The reference (``tests/torch_reference.py``) is itself checked against a plain loop over heads and positions,
and the comparison helper is shown to flag a single perturbed gradient entry, so a pass means something.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the parity tests need PyTorch (pip install -e '.[test]')")

from littlebaby.model import GPT, Config  # noqa: E402
from littlebaby.optim import AdamW, clip_grad_norm, lr_schedule  # noqa: E402
from torch_reference import TorchGPT, causal_self_attention, expected_param_shapes, no_dropout  # noqa: E402

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
OPTIMIZER_TOLERANCE = 1e-6

# Small shapes that still exercise every path: several heads, two blocks, a vocabulary that is not a power of 2.
SQUARE = dict(vocab_size=11, n_ctx=8, n_emb=16, head_size=16, n_heads=4, n_layers=2)
# head_size != n_emb: the attention projection is (H, C), not square; run with T < n_ctx.
WIDE_HEADS = dict(vocab_size=13, n_ctx=9, n_emb=24, head_size=32, n_heads=4, n_layers=2)
SHAPES = {"square_full_context": (SQUARE, 8), "wide_heads_short_context": (WIDE_HEADS, 5)}
BATCH = 3


def make_config(shape: dict, dtype: str, dropout: float = 0.0) -> Config:
    return Config(**shape, dropout=dropout, batch_size=BATCH, lr=1e-3, dtype=dtype)


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


def make_pair(shape: dict, dtype: str, dropout: float = 0.0, seed: int = 0) -> tuple[GPT, TorchGPT]:
    """Our model with random non-trivial parameters, and the reference loaded with the very same values."""
    cfg = make_config(shape, dtype, dropout)
    gpt = GPT(cfg, seed=seed)
    randomize_params(gpt.params, np.random.default_rng(1000 + seed))
    return gpt, TorchGPT(cfg, gpt.params)


def relative_error(ours, ref) -> float:
    """max|ours - ref| / max|ref|; the absolute max-diff when the reference is all zeros."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    diff = float(np.max(np.abs(ours - ref)))
    scale = float(np.max(np.abs(ref)))
    return diff / scale if scale > 0 else diff


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
