"""Finite-difference gradient checking in float64, shared by the layer and model tests.

A check compares the analytic gradient with central differences ``(f(x + eps) - f(x - eps)) / (2 eps)`` at a
few entries of one array, and reports the relative error of the probed vectors,
``||analytic - numeric|| / max(||analytic||, ||numeric||, 1e-4)``. The floor is for gradients that are exactly
zero: the key bias, for one, never changes a softmax (adding one constant to every score of a row), so its
analytic gradient is ~1e-17 while finite differences return rounding noise of ~1e-11; without a floor that reads
as a 100% error. With the 1e-6 tolerance the floor still demands an absolute agreement of 1e-10 there.

The probed entries are random; for a whole model they are chosen per head and per expert (``model_parts``), so
a bug confined to one head's columns of w_qkv or to one expert's weights cannot slip between the probes.
"""

import math

import numpy as np

from littlebaby.model import gpt_forward
from littlebaby.nn import cross_entropy_forward

EPS = 1e-5  # balances truncation error O(eps^2) against rounding O(1e-16 / eps); measured best here
TOLERANCE = 1e-6


def numerical_grad(f, x, flat_positions, eps=EPS):
    """Central differences of the scalar f() with respect to x.flat[i] for each i (x is perturbed in place)."""
    out = np.empty(len(flat_positions))
    for n, i in enumerate(flat_positions):
        original = x.flat[i]
        x.flat[i] = original + eps
        plus = f()
        x.flat[i] = original - eps
        minus = f()
        x.flat[i] = original
        out[n] = (plus - minus) / (2 * eps)
    return out


def probe_error(analytic, numeric):
    """Relative error of the probed vectors, with the floor explained above."""
    scale = max(np.linalg.norm(analytic), np.linalg.norm(numeric), 1e-4)
    return float(np.linalg.norm(analytic - numeric) / scale)


def probe_positions(shape, rng, n_probes, parts=None):
    """Flat indices of the entries to probe: n_probes random ones; or, when ``parts`` = (axis, count) cuts the
    array into count equal slices along axis (one per head or per expert), ceil(n_probes / count) random
    entries in every slice, so each slice is probed."""
    size = math.prod(shape)
    if parts is None:
        return rng.choice(size, size=min(n_probes, size), replace=False)
    axis, count = parts
    per_part, width = -(-n_probes // count), shape[axis] // count
    positions = []
    for part in range(count):
        index = [rng.integers(0, n, per_part) for n in shape]           # random along every axis ...
        index[axis] = part * width + rng.integers(0, width, per_part)    # ... and inside this slice along axis
        positions.append(np.ravel_multi_index(index, shape))
    return np.unique(np.concatenate(positions))


def grad_error(f, x, analytic, rng, n_probes=12, parts=None):
    """Relative error between analytic (shaped like x) and finite differences at the probed entries of x."""
    assert analytic.shape == x.shape, f"gradient shape {analytic.shape} != array shape {x.shape}"
    positions = probe_positions(x.shape, rng, n_probes, parts)
    numeric = numerical_grad(f, x, positions)
    return probe_error(analytic.reshape(-1)[positions], numeric)


def model_parts(name, config):
    """(axis, count) of a parameter's per-head or per-expert slices, or None for a parameter that has none.

    w_qkv's 3H columns are Q, K, V of each head in turn (3 NH slices of hs); mha's w_proj reads each head from hs
    rows; a mixture of heads gates each head with one column; every expert array stacks the experts on axis 0,
    but for the gate, which has one column per expert."""
    NH, NE = config.n_heads, config.n_experts
    parts = {"attn.w_qkv": (1, 3 * NH), "attn.b_qkv": (0, 3 * NH), "attn.w_gate": (1, NH), "attn.b_gate": (0, NH),
             "moe.w_gate": (1, NE), "moe.b_gate": (0, NE), "moe.w_fc": (0, NE), "moe.b_fc": (0, NE),
             "moe.w_proj": (0, NE), "moe.b_proj": (0, NE)}
    if config.c_attention == "mha":
        parts["attn.w_proj"] = (0, NH)
    return parts.get(name.split(".", 2)[-1]) if name.startswith("blocks.") else None


def model_grad_errors(gpt, idx, targets, dropout_seed, n_probes=4) -> dict:
    """name -> relative error of every parameter's gradient (``gpt.loss_and_grads``, dropout masks from
    ``dropout_seed``) against finite differences of the same training loss, probed per head and per expert."""
    _, grads = gpt.loss_and_grads(idx, targets, rng=np.random.default_rng(dropout_seed))

    def f():  # the training loss, forward only, with the same dropout masks at every evaluation
        logits, cache = gpt_forward(gpt.params, gpt.config, idx, np.random.default_rng(dropout_seed))
        return cross_entropy_forward(logits, targets)[0] + cache[-1]   # cache[-1]: the experts' aux loss

    rng = np.random.default_rng(5)
    return {name: grad_error(f, gpt.params[name], grads[name], rng, n_probes, model_parts(name, gpt.config))
            for name in gpt.params}


def randn(rng, *shape):
    return rng.standard_normal(shape)


def check_layer(rng, forward, backward, inputs, **kwargs):
    """Check d/d(each array in inputs) of sum(forward(*inputs) * R), R random. Returns the worst relative error."""
    out, cache = forward(*inputs, **kwargs)
    dout = randn(rng, *out.shape)
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert len(grads) == len(inputs)

    def f():
        return float(np.sum(forward(*inputs, **kwargs)[0] * dout))

    errors = [grad_error(f, x, g, rng) for x, g in zip(inputs, grads)]
    assert max(errors) < TOLERANCE, errors
    return max(errors)
