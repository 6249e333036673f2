"""Causal multi-head self-attention, all heads in one batched computation.

Q, K and V have total width H = head_size, split into NH heads of hs = H // NH; the heads' outputs are
concatenated back to width H and projected to C. Derivation: docs/layers/attention.md.
"""

import math
from functools import lru_cache

import numpy as np

from littlebaby.nn.backend import array_module, compiled_twin
from littlebaby.nn.dropout import dropout_mask
from littlebaby.nn.linear import linear_backward, linear_forward
from littlebaby.nn.softmax import softmax_inplace

# Causal blocks of queries (see query_blocks), measured in docs/PERFORMANCE.md: more blocks skip more masked
# work, but each block's matmuls get smaller and less efficient. At T = 256, 4 blocks of 64 rows beat 2 of 128
# and 8 of 32 (by a few %); at T = 64, 2 blocks of 32 do about as well as 4 of 16.
MAX_QUERY_BLOCKS = 4
MIN_QUERY_BLOCK_ROWS = 32


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


def query_blocks(T, S):
    """The plan: [(r0, r1, s1), ...], the T queries in even blocks, queries r0 .. r1-1 seeing keys 0 .. s1-1 at
    most, with s1 = S - T + r1 (the queries are the last T of S positions). Example: query_blocks(8, 8) with at
    most 4 blocks of at least 2 rows gives [(0, 2, 2), (2, 4, 4), (4, 6, 6), (6, 8, 8)].

    Causal scores are a lower triangle: a block of queries never looks past its last query, so
    q[r0:r1] @ k[:s1]^T holds all its unmasked scores. Four blocks compute 62.5% of the (T, S) scores, weights
    and their gradients instead of all of them, three 66.7%, two 75%; a short sequence is one block.
    """
    n_blocks = min(MAX_QUERY_BLOCKS, T // MIN_QUERY_BLOCK_ROWS)
    if n_blocks <= 1:
        return [(0, T, S)]
    edges = [T * i // n_blocks for i in range(n_blocks + 1)]        # first 0, last T
    return [(r0, r1, S - T + r1) for r0, r1 in zip(edges[:-1], edges[1:])]


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
    q, k, v = qkv.reshape(B, T, 3, n_heads, hs).transpose(2, 0, 3, 1, 4)  # each (B, NH, T, hs) a view
    if kv is not None:
        k_all, v_all, start = kv
        k_all[:, :, start:start + T] = k
        v_all[:, :, start:start + T] = v
        k, v = k_all[:, :, :start + T], v_all[:, :, :start + T]     # (B, NH, S, hs)
    S = k.shape[2]
    # dropout on the attention weights: the whole (T, S) mask is drawn, masked part included, so the masks and
    # the generator's state do not depend on how the queries are split into blocks
    drawn = dropout > 0.0 and rng is not None
    keep = xp.asarray(dropout_mask((B, n_heads, T, S), dropout, rng)) if drawn else None  # (B, NH, T, S) bool
    y = xp.empty((B, T, n_heads, hs), dtype=q.dtype)                # (B, T, NH, hs) the heads side by side
    _, attention_cache = causal_attention_forward(q, k, v, keep, dropout, y.transpose(0, 2, 1, 3))
    cache = (qkv_cache, attention_cache)  # q, k, v are views of the one (B, T, 3H) buffer the linear made
    return y, cache


def heads_backward(dy, cache):
    """dy (B, T, NH, hs) or (B, T, H) -> dx (B, T, C), dw_qkv (C, 3H), db_qkv (3H,)."""
    qkv_cache, attention_cache = cache
    xp = array_module(dy)
    B, NH, T, hs = attention_cache[0].shape
    dy = dy.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)             # (B, NH, T, hs) a view
    dqkv = xp.empty((B, T, 3, NH, hs), dtype=dy.dtype)              # (B, T, 3, NH, hs) laid out as qkv
    dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)                      # each (B, NH, T, hs) a view
    causal_attention_backward(dy, attention_cache, dq, dk, dv)
    dx, dw_qkv, db_qkv = linear_backward(dqkv.reshape(B, T, 3 * NH * hs), qkv_cache)  # (B, T, C)
    return dx, dw_qkv, db_qkv


def causal_attention_forward(q, k, v, keep, p, y):
    """Queries q (B, NH, T, hs), the last T of the S positions of keys and values k, v (B, NH, S, hs) ->
    y (B, NH, T, hs), written into the view ``y`` the caller gives, and the cache. Dropout on the weights with
    ``keep`` (B, NH, T, S) bool at rate p; none when keep is None.

    The queries go block by block as ``query_blocks`` plans, each block multiplying only the keys it may see
    (a short sequence is a plan of one block). The plan is kept in the cache for the backward.
    """
    xp = array_module(q)
    T, S, hs = q.shape[2], k.shape[2], q.shape[3]
    plan = query_blocks(T, S)
    atts = []
    for r0, r1, s1 in plan:
        keep_block = None if keep is None else keep[:, :, r0:r1, :s1]  # (B, NH, Tq, s1) a view
        att = q[:, :, r0:r1] @ k[:, :, :s1].transpose(0, 1, 3, 2)   # (B, NH, Tq, s1) scores
        weights = causal_softmax_forward(att, 1.0 / math.sqrt(hs), keep_block)  # att: the softmax, in place
        xp.matmul(weights, v[:, :, :s1], out=y[:, :, r0:r1])        # (B, NH, Tq, hs)
        atts.append(att)
    if keep is not None:  # att_drop = att * keep / (1 - p): the scale goes on the smaller y
        y *= 1.0 / (1.0 - p)
    cache = (q, k, v, plan, atts, keep, p)  # softmax backward needs only its output, the blocks' weights
    return y, cache


def causal_attention_backward(dy, cache, dq, dk, dv):
    """dy (B, NH, T, hs) -> dq (B, NH, T, hs), dk, dv (B, NH, S, hs), written into the views given."""
    q, k, v, plan, atts, keep, p = cache
    assert len(plan) == len(atts), "the cache holds one array of weights per block of the plan"
    scale = 1.0 / math.sqrt(q.shape[3])
    dropout_scale = 1.0 if keep is None else 1.0 / (1.0 - p)
    # last block first: it sees every key, so its key and value gradients set dk and dv, and the earlier
    # blocks (which see fewer keys) add theirs: keys and values fan out to every later query
    for n, ((r0, r1, s1), att) in enumerate(zip(reversed(plan), reversed(atts))):
        keep_block = None if keep is None else keep[:, :, r0:r1, :s1]  # (B, NH, Tq, s1) a view
        dy_block = dy[:, :, r0:r1]                                  # (B, NH, Tq, hs)
        # y = att_drop @ v, with att_drop = att * keep / (1 - p) under dropout
        datt = dy_block @ v[:, :, :s1].transpose(0, 1, 3, 2)        # (B, NH, Tq, s1) gradient of att_drop
        dscores, weights = causal_softmax_backward(datt, att, keep_block, scale * dropout_scale)
        dv_block = weights.transpose(0, 1, 3, 2) @ dy_block         # (B, NH, s1, hs)
        if keep is not None:
            dv_block *= dropout_scale
        dq[:, :, r0:r1] = dscores @ k[:, :, :s1]                    # (B, NH, Tq, hs)
        dk_block = dscores.transpose(0, 1, 3, 2) @ q[:, :, r0:r1]   # (B, NH, s1, hs)
        if n == 0:
            dk[...], dv[...] = dk_block, dv_block
        else:
            dk[:, :, :s1] += dk_block
            dv[:, :, :s1] += dv_block
    return dq, dk, dv


def causal_softmax_forward(att, scale, keep=None):
    """Scores att (B, NH, Tq, s1) of the last Tq of s1 positions -> the weights the values are summed with:
    att, or att * keep (B, NH, Tq, s1) bool under dropout (unscaled: the caller scales the smaller result),
    with att itself overwritten by the causal softmax of att * scale."""
    twin = compiled_twin("causal_softmax_forward", att)             # littlebaby/kernels/attention.py, when in use
    if twin is not None:
        return twin(att, scale, keep)
    Tq = att.shape[2]
    att *= scale
    att[..., att.shape[3] - Tq:] += causal_bias(Tq, Tq, att.dtype, array_module(att))  # -inf: may not look
    softmax_inplace(att)                                            # (B, NH, Tq, s1) rows sum to 1
    return att if keep is None else att * keep


def causal_softmax_backward(datt, att, keep, scale):
    """datt (B, NH, Tq, s1), the gradient of the weights the values were summed with, and the softmax att ->
    (d scores, overwriting datt, times ``scale``; the weights again, att or att * keep, for the value gradient).

    Under dropout datt is first masked by keep (the weights were att * keep); then the softmax backward
    d scores = att * (datt - sum_j datt_j att_j); masked entries have att = 0, so they get 0.
    """
    twin = compiled_twin("causal_softmax_backward", datt)
    if twin is not None:
        return twin(datt, att, keep, scale)
    if keep is not None:
        datt *= keep
    datt -= array_module(datt).einsum("...j,...j->...", datt, att)[..., None]  # (B, NH, Tq, s1) row dot products
    datt *= att
    datt *= scale   # 1/sqrt(hs) and the dropout scale: the softmax backward is linear in datt
    return datt, (att if keep is None else att * keep)
