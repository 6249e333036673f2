"""Causal multi-head self-attention, all heads in one batched computation.

Q, K and V have total width H = head_size, split into NH heads of hs = H // NH; the heads' outputs are
concatenated back to width H and projected to C. Derivation: docs/layers/attention.md.
"""

import math
from functools import lru_cache

import numpy as np

from littlebaby.nn.backend import array_module
from littlebaby.nn.dropout import dropout_mask
from littlebaby.nn.linear import linear_backward, linear_forward


@lru_cache(maxsize=64)
def causal_mask(T, S=None):
    """(T, S) bool, True where a query may not look: the last T of S positions are the queries, so query i sits
    at position S - T + i and sees keys 0 .. S - T + i. S defaults to T (no cached past)."""
    S = T if S is None else S
    mask = np.triu(np.ones((T, S), dtype=bool), k=S - T + 1)        # (T, S)
    mask.flags.writeable = False
    return mask


@lru_cache(maxsize=64)
def causal_bias(T, S=None, dtype=np.float32, xp=np):
    """(T, S) of 0 where a query may look and -inf where it may not: ``causal_mask`` as a term to add.

    ``scores += causal_bias(...)`` gives bitwise the scores that ``scores[..., causal_mask] = -inf`` gives (x + 0
    is x, x - inf is -inf), but as one broadcast add instead of a boolean fancy-index write: about 25x faster.
    Built on the host; ``xp`` names the array module that should hold it (one cached copy per module).
    """
    bias = np.where(causal_mask(T, S), -np.inf, 0.0).astype(dtype)  # (T, S)
    bias.flags.writeable = False
    return bias if xp is np else xp.asarray(bias)


def attention_forward(x, w_qkv, b_qkv, w_proj, b_proj, n_heads, dropout=0.0, rng=None, kv=None):
    """x (B, T, C) -> (B, T, C): the heads' outputs side by side, projected back to C.

    Dropout (on the attention weights) is active when rng is given and dropout > 0. ``kv``: see heads_forward.
    """
    y, heads_cache = heads_forward(x, w_qkv, b_qkv, n_heads, dropout, rng, kv)  # (B, T, NH, hs)
    B, T, NH, hs = y.shape
    out, proj_cache = linear_forward(y.reshape(B, T, NH * hs), w_proj, b_proj)  # (B, T, C)
    cache = (heads_cache, proj_cache)
    return out, cache


def attention_backward(dout, cache):
    """dout (B, T, C) -> dx (B, T, C), dw_qkv (C, 3H), db_qkv (3H,), dw_proj (H, C), db_proj (C,)."""
    heads_cache, proj_cache = cache
    dy, dw_proj, db_proj = linear_backward(dout, proj_cache)        # (B, T, H)
    dx, dw_qkv, db_qkv = heads_backward(dy, heads_cache)            # (B, T, C)
    return dx, dw_qkv, db_qkv, dw_proj, db_proj


def heads_forward(x, w_qkv, b_qkv, n_heads, dropout=0.0, rng=None, kv=None):
    """x (B, T, C) -> y (B, T, NH, hs): every head's causal attention output, before they are combined.

    Shared by multi-head attention (concatenate, project) and mixture of heads (gate, sum, project).
    ``kv`` is for generation with a KV cache (no backward): ``(k_all, v_all, start)`` with k_all, v_all
    (B, NH, n_ctx, hs) holding the keys and values of positions 0 .. start-1; the new tokens' keys and values
    are written at start .. start+T-1 and the queries attend over all S = start + T positions.
    """
    xp = array_module(x)
    B, T, C = x.shape
    hs = w_qkv.shape[1] // 3 // n_heads
    qkv, qkv_cache = linear_forward(x, w_qkv, b_qkv)                # (B, T, 3H)
    qkv = qkv.reshape(B, T, 3, n_heads, hs).transpose(2, 0, 3, 1, 4)  # (3, B, NH, T, hs) a view
    q, k, v = qkv                                                   # each (B, NH, T, hs)
    if kv is not None:
        k_all, v_all, start = kv
        k_all[:, :, start:start + T] = k
        v_all[:, :, start:start + T] = v
        k, v = k_all[:, :, :start + T], v_all[:, :, :start + T]     # (B, NH, S, hs)
    S = k.shape[2]
    att = q @ k.transpose(0, 1, 3, 2)                               # (B, NH, T, S)
    att *= 1.0 / math.sqrt(hs)
    att += causal_bias(T, S, att.dtype, xp)                             # -inf where the query may not look
    softmax_rows_inplace(att)                                       # (B, NH, T, S) rows sum to 1
    if dropout > 0.0 and rng is not None:
        # att_drop = att * keep / (1 - p); the scale is applied to the smaller y instead of the (T, S) weights
        keep = xp.asarray(dropout_mask(att.shape, dropout, rng))    # (B, NH, T, S) bool, drawn on the host
        y = (att * keep) @ v                                        # (B, NH, T, hs)
        y *= 1.0 / (1.0 - dropout)
        drop_cache = (keep, dropout)
    else:
        y = att @ v                                                 # (B, NH, T, hs)
        drop_cache = None
    y = y.transpose(0, 2, 1, 3)                                     # (B, T, NH, hs)
    # softmax backward needs only its output (att); q, k, v are views of one (B, T, 3H) buffer
    cache = (qkv_cache, q, k, v, att, drop_cache)
    return y, cache


def heads_backward(dy, cache):
    """dy (B, T, NH, hs) or (B, T, H) -> dx (B, T, C), dw_qkv (C, 3H), db_qkv (3H,)."""
    qkv_cache, q, k, v, att, drop_cache = cache
    xp = array_module(dy)
    B, NH, T, hs = q.shape
    dy = dy.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)             # (B, NH, T, hs)
    # y = att_drop @ v, with att_drop = att * keep / (1 - p) under dropout
    datt = dy @ v.transpose(0, 1, 3, 2)                             # (B, NH, T, T) gradient of att_drop
    scale = 1.0 / math.sqrt(hs)
    if drop_cache is None:
        dv = att.transpose(0, 1, 3, 2) @ dy                         # (B, NH, T, hs)
    else:
        keep, p = drop_cache
        dv = (att * keep).transpose(0, 1, 3, 2) @ dy                # (B, NH, T, hs)
        dv *= 1.0 / (1.0 - p)
        datt *= keep
        scale /= 1.0 - p  # folded with 1/sqrt(hs) below: the softmax backward is linear in datt
    # softmax: d(pre) = att * (datt - sum_j datt_j att_j); masked entries have att = 0, so they get 0
    datt -= xp.einsum("...j,...j->...", datt, att)[..., None]       # (B, NH, T, T) row dot products
    datt *= att
    datt *= scale                                                   # (B, NH, T, T) gradient of q @ k^T
    dqkv = xp.empty((B, T, 3, NH, hs), dtype=dy.dtype)              # (B, T, 3, NH, hs)
    dqkv[:, :, 0] = (datt @ k).transpose(0, 2, 1, 3)                # dq (B, T, NH, hs)
    dqkv[:, :, 1] = (datt.transpose(0, 1, 3, 2) @ q).transpose(0, 2, 1, 3)  # dk
    dqkv[:, :, 2] = dv.transpose(0, 2, 1, 3)                        # dv
    dx, dw_qkv, db_qkv = linear_backward(dqkv.reshape(B, T, 3 * NH * hs), qkv_cache)  # (B, T, C)
    return dx, dw_qkv, db_qkv


def softmax_rows_inplace(att):
    """Softmax along the last axis, overwriting ``att`` (..., S); rows may hold -inf but not only -inf.

    The row maxima come from ``row_max``; the row sums use einsum, which adds a contiguous row several times
    faster than ``att.sum(axis=-1)``, and the division becomes a multiplication by the (..., 1) reciprocals.
    """
    xp = array_module(att)
    att -= row_max(att)                                             # (..., S) for a stable exp
    xp.exp(att, out=att)
    att *= 1.0 / xp.einsum("...j->...", att)[..., None]             # (..., S) rows sum to 1
    return att


def row_max(x):
    """x (..., S) -> (..., 1): ``x.max(axis=-1, keepdims=True)``, 2.5x faster on rows of tens of values.

    NumPy's max along the last axis pays a fixed cost per row; ``maximum.reduceat`` at every row's first index
    of the flat array reduces all the rows in one pass.
    """
    if array_module(x) is not np:  # one reduction kernel on a GPU; the per-row cost is NumPy's
        return x.max(axis=-1, keepdims=True)                        # (..., 1)
    flat = x.reshape(-1)                                            # (N * S,) a view when x is contiguous
    return np.maximum.reduceat(flat, _row_starts(flat.size, x.shape[-1])).reshape(*x.shape[:-1], 1)  # (..., 1)


@lru_cache(maxsize=64)
def _row_starts(size, S):
    starts = np.arange(0, size, S)                                  # (N,) where each row of S values begins
    starts.flags.writeable = False
    return starts
