"""Causal attention of every head, fused: the twin of ``nn.attention.causal_attention_forward`` / ``_backward``.

NumPy computes a head's attention as separate passes over (T, S) arrays: the scores product, the scale, the
causal bias, the row maximum, exp, the row sums, the normalisation, the dropout mask, the product with v. Here
one loop per (sequence, head) does all of it row by row while the row is in the CPU's first-level cache, and
only for the keys a query may see (the causal half): scores, softmax and the weighted sum of values for query
i touch keys 0 .. S-T+i and nothing else. The backward is the same walk, in the same order, of the same
derivation (docs/layers/attention.md).

Each head's q, k, v (and dy) are first copied into small contiguous scratch arrays, k and v also transposed,
so that every inner loop runs over contiguous memory and LLVM vectorizes it: over the keys j for the scores
``q_i . k_j`` (from k^T) and for ``dy_i . v_j`` (from v^T), over the head's channels d for the sums of rows.

The cache has the NumPy layer's layout with a one-entry plan: the (B, NH, T, S) weights, zero where a query
may not look. ``tests/test_kernels.py`` compares both directions with the NumPy layer in float64 and float32.
"""

import math

import numpy as np

from littlebaby.kernels.jit import constants, exp, kernel


def causal_attention_forward(q, k, v, keep, p, y):
    """q (B, NH, T, hs), the last T of the S positions of k, v (B, NH, S, hs) -> y (B, NH, T, hs), written
    into ``y``, and the cache. ``keep`` (B, NH, T, S) bool: the dropout mask at rate p, or None."""
    B, NH, T, hs = q.shape
    S = k.shape[2]
    att = np.empty((B, NH, T, S), dtype=q.dtype)                    # (B, NH, T, S) the softmax weights
    has_keep = keep is not None
    mask = keep if has_keep else np.ones((1, 1, 1, 1), dtype=np.bool_)
    scale, keep_scale, zero, one = constants(q.dtype, 1.0 / math.sqrt(hs), 1.0 / (1.0 - p) if has_keep else 1.0,
                                            0.0, 1.0)
    _forward(q, k, v, mask, has_keep, scale, keep_scale, zero, one, y, att)
    cache = (q, k, v, [(0, T, S)], [att], keep, p)  # the NumPy layer's cache, one block of queries
    return y, cache


def causal_attention_backward(dy, cache, dq, dk, dv):
    """dy (B, NH, T, hs) -> dq (B, NH, T, hs), dk, dv (B, NH, S, hs), written into the views given."""
    q, k, v, plan, atts, keep, p = cache
    assert len(plan) == 1 and len(atts) == 1, "the fused backward reads the weights of one block of queries"
    hs = q.shape[3]
    has_keep = keep is not None
    mask = keep if has_keep else np.ones((1, 1, 1, 1), dtype=np.bool_)
    scale, keep_scale, zero = constants(q.dtype, 1.0 / math.sqrt(hs), 1.0 / (1.0 - p) if has_keep else 1.0, 0.0)
    _backward(dy, q, k, v, atts[0], mask, has_keep, scale, keep_scale, zero, dq, dk, dv)


@kernel
def _forward(q, k, v, keep, has_keep, scale, keep_scale, zero, one, y, att):
    B, NH, T, hs = q.shape
    S = k.shape[2]
    qs = np.empty((T, hs), dtype=q.dtype)                           # this head's queries, scaled
    kt = np.empty((hs, S), dtype=q.dtype)                           # its keys, transposed
    vs = np.empty((S, hs), dtype=q.dtype)                           # its values
    scores = np.empty(S, dtype=q.dtype)
    row = np.empty(hs, dtype=q.dtype)
    for b in range(B):
        for h in range(NH):
            for i in range(T):
                for d in range(hs):
                    qs[i, d] = q[b, h, i, d] * scale
            for j in range(S):
                for d in range(hs):
                    kt[d, j] = k[b, h, j, d]
                    vs[j, d] = v[b, h, j, d]
            for i in range(T):
                n = S - T + i + 1                                   # query i sees keys 0 .. n-1
                # scores q_i . k_j / sqrt(hs) for every key (whole rows vectorize best), softmax over the n
                for j in range(S):
                    scores[j] = zero
                for d in range(hs):
                    qd = qs[i, d]
                    for j in range(S):
                        scores[j] += qd * kt[d, j]
                top = scores[0]
                for j in range(1, n):
                    top = scores[j] if scores[j] > top else top
                total = zero
                for j in range(n):
                    e = exp(scores[j] - top)
                    scores[j] = e
                    total += e
                inverse = one / total
                for j in range(n):
                    att[b, h, i, j] = scores[j] * inverse
                for j in range(n, S):                               # the keys it may not see weigh 0
                    att[b, h, i, j] = zero
                for d in range(hs):                                 # y_i = sum_j att_drop_ij v_j
                    row[d] = zero
                for j in range(n):
                    w = att[b, h, i, j]
                    if has_keep and not keep[b, h, i, j]:
                        w = zero
                    for d in range(hs):
                        row[d] += w * vs[j, d]
                for d in range(hs):
                    y[b, h, i, d] = row[d] * keep_scale


@kernel
def _backward(dy, q, k, v, att, keep, has_keep, scale, keep_scale, zero, dq, dk, dv):
    B, NH, T, hs = q.shape
    S = k.shape[2]
    qs = np.empty((T, hs), dtype=q.dtype)                           # this head's queries, scaled
    ks = np.empty((S, hs), dtype=q.dtype)
    vt = np.empty((hs, S), dtype=q.dtype)                           # its values, transposed
    dys = np.empty((T, hs), dtype=q.dtype)
    dks = np.empty((S, hs), dtype=q.dtype)                          # gradients summed over the queries
    dvs = np.empty((S, hs), dtype=q.dtype)
    datt = np.empty(S, dtype=q.dtype)
    row = np.empty(hs, dtype=q.dtype)
    for b in range(B):
        for h in range(NH):
            for i in range(T):
                for d in range(hs):
                    qs[i, d] = q[b, h, i, d] * scale
                    dys[i, d] = dy[b, h, i, d]
            for j in range(S):
                for d in range(hs):
                    ks[j, d] = k[b, h, j, d]
                    vt[d, j] = v[b, h, j, d]
                    dks[j, d] = zero
                    dvs[j, d] = zero
            for i in range(T):
                n = S - T + i + 1
                # y_i = sum_j att_drop_ij v_j, att_drop = att * keep * keep_scale:
                # d att_drop_ij = dy_i . v_j (whole rows vectorize best) and dv_j += att_drop_ij dy_i
                for j in range(S):
                    datt[j] = zero
                for d in range(hs):
                    g = dys[i, d]
                    for j in range(S):
                        datt[j] += g * vt[d, j]
                for j in range(n):
                    w = att[b, h, i, j] * keep_scale
                    if has_keep and not keep[b, h, i, j]:
                        w = zero
                        datt[j] = zero
                    for d in range(hs):
                        dvs[j, d] += w * dys[i, d]
                # softmax: d scores_j = att_j (datt_j - sum_l datt_l att_l), times keep_scale for the dropout
                dot = zero
                for j in range(n):
                    dot += datt[j] * att[b, h, i, j]
                for j in range(n):
                    datt[j] = att[b, h, i, j] * (datt[j] - dot) * keep_scale
                # scores = (q_i / sqrt(hs)) . k_j: dq_i = sum_j dscores_j k_j / sqrt(hs), dk_j += dscores_j q_i / sqrt(hs)
                for d in range(hs):
                    row[d] = zero
                for j in range(n):
                    s = datt[j]
                    for d in range(hs):
                        row[d] += s * ks[j, d]
                        dks[j, d] += s * qs[i, d]
                for d in range(hs):
                    dq[b, h, i, d] = row[d] * scale
            for j in range(S):
                for d in range(hs):
                    dk[b, h, j, d] = dks[j, d]
                    dv[b, h, j, d] = dvs[j, d]
