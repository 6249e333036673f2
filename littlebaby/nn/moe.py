"""Mixture of experts: several MLPs ("experts") and a gate that decides how much of each a token gets.

A gate reads each token and gives a softmax over the NE experts.
- Dense (``top_k = 0``, the original's soft gate): every expert runs on every token; the output is the
  gate-weighted sum of all experts' outputs.
- Sparse (``top_k = k``): each token runs only its k highest-gated experts, weighted by the gate renormalised
  over those k (the softmax of the chosen logits). Unchosen experts do no work for that token. A load-balancing
  loss ``aux_weight * NE * sum_e f_e * P_e`` (f_e: share of routed slots that went to expert e, P_e: mean gate
  probability of e) pushes the gate to spread tokens; it is 1 * aux_weight when the load is perfectly even.
Parameters: ``w_gate`` (C, NE), ``b_gate`` (NE,), and stacked expert MLPs ``w_fc`` (NE, C, F), ``b_fc`` (NE, F),
``w_proj`` (NE, F, C), ``b_proj`` (NE, C), F = expansion * C.

The loop over experts is a loop over NE weight sets (a handful), each doing one batched MLP over its tokens.

Derivation: docs/layers/moe.md.
"""

from littlebaby.nn.backend import array_module
from littlebaby.nn.linear import linear_backward, linear_forward
from littlebaby.nn.mlp import mlp_backward, mlp_forward
from littlebaby.nn.softmax import softmax_backward, softmax_forward


def route(probs, top_k):
    """probs (N, NE) -> weights (N, NE): each token's share of each expert, zero where the expert does not run."""
    if top_k == 0:
        return probs
    xp = array_module(probs)
    N, NE = probs.shape
    chosen = xp.argpartition(-probs, top_k - 1, axis=1)[:, :top_k]  # (N, k) the k largest, in any order
    weights = xp.zeros_like(probs)                                  # (N, NE)
    rows = xp.arange(N)[:, None]                                    # (N, 1)
    weights[rows, chosen] = probs[rows, chosen]
    weights /= weights.sum(axis=1, keepdims=True)                   # renormalised over the chosen k
    return weights


def moe_forward(x, w_gate, b_gate, w_fc, b_fc, w_proj, b_proj, top_k=0, aux_weight=0.0):
    """x (B, T, C) -> out (B, T, C), aux_loss (float, already weighted; 0.0 when dense), cache."""
    xp = array_module(x)
    B, T, C = x.shape
    NE = w_gate.shape[1]
    x_flat = x.reshape(-1, C)                                       # (N, C), N = B*T
    gate_logits, gate_cache = linear_forward(x_flat, w_gate, b_gate)  # (N, NE)
    probs, _ = softmax_forward(gate_logits)                         # (N, NE)
    weights = route(probs, top_k)                                   # (N, NE)
    out = xp.zeros_like(x_flat)                                     # (N, C)
    expert_caches = []
    for e in range(NE):
        tokens = xp.flatnonzero(weights[:, e])                      # (M,) the tokens routed to expert e
        y, mlp_cache = mlp_forward(x_flat[tokens], w_fc[e], b_fc[e], w_proj[e], b_proj[e])  # (M, C)
        out[tokens] += weights[tokens, e, None] * y
        expert_caches.append((tokens, y, mlp_cache))  # y: the gate's gradient is <dout, y>
    routed_share = (weights > 0).mean(axis=0) / max(top_k, 1)       # (NE,) f_e
    aux = aux_weight * NE * float(routed_share @ probs.mean(axis=0)) if top_k else 0.0
    cache = (gate_cache, probs, weights, routed_share, expert_caches, top_k, aux_weight, x.shape)
    return out.reshape(B, T, C), aux, cache


def moe_backward(dout, cache):
    """dout (B, T, C) -> dx (B, T, C), dw_gate, db_gate, dw_fc, db_fc, dw_proj, db_proj.

    Includes the gradient of the auxiliary loss (its weight was applied in the forward).
    """
    gate_cache, probs, weights, routed_share, expert_caches, top_k, aux_weight, shape = cache
    xp = array_module(dout)
    N, NE = probs.shape
    dout = dout.reshape(N, -1)                                      # (N, C)
    dx = xp.zeros_like(dout)                                        # (N, C)
    dweights = xp.zeros_like(probs)                                 # (N, NE)
    expert_grads = []
    for e, (tokens, y, mlp_cache) in enumerate(expert_caches):
        # out[tokens] += weights[tokens, e] * y
        dweights[tokens, e] = (dout[tokens] * y).sum(axis=1)
        dx_e, *grads = mlp_backward(weights[tokens, e, None] * dout[tokens], mlp_cache)  # (M, C)
        dx[tokens] += dx_e
        expert_grads.append(grads)
    if top_k:
        # weights = probs / S over the chosen k (S = their sum): d probs_j = (dweights_j - sum_i dweights_i w_i) / S
        chosen_sum = (probs * (weights > 0)).sum(axis=1, keepdims=True)  # (N, 1) S
        dprobs = (dweights - (dweights * weights).sum(axis=1, keepdims=True)) / chosen_sum * (weights > 0)
        dprobs += aux_weight * NE * routed_share / N                # aux = w NE sum_e f_e mean_n probs[n, e]
    else:
        dprobs = dweights
    dgate_logits = softmax_backward(dprobs, probs)                  # (N, NE)
    dx_gate, dw_gate, db_gate = linear_backward(dgate_logits, gate_cache)  # (N, C)
    dx += dx_gate  # the input fans out to the experts and the gate
    dw_fc, db_fc, dw_proj, db_proj = (xp.stack(g) for g in zip(*expert_grads))  # (NE, ...) each
    return dx.reshape(shape), dw_gate, db_gate, dw_fc, db_fc, dw_proj, db_proj
