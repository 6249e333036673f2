"""Mixture of heads: attention whose heads are mixed by a learned per-token softmax gate instead of concatenated.

Every head computes its causal attention output as in multi-head attention. A gate reads the same input and gives
each token a softmax over the heads; the token's output is the gated sum of its heads' outputs (width hs, not H),
projected back to C. Extra parameters: ``w_gate`` (C, NH), ``b_gate`` (NH,); ``w_proj`` is (hs, C).

Derivation: docs/layers/moh.md.
"""

from littlebaby.nn.attention import heads_backward, heads_forward
from littlebaby.nn.linear import linear_backward, linear_forward
from littlebaby.nn.softmax import softmax_backward, softmax_forward


def moh_forward(x, w_qkv, b_qkv, w_gate, b_gate, w_proj, b_proj, n_heads, dropout=0.0, rng=None, kv=None):
    """x (B, T, C) -> (B, T, C). ``kv``: the KV cache slot for generation, see heads_forward."""
    y, heads_cache = heads_forward(x, w_qkv, b_qkv, n_heads, dropout, rng, kv)  # (B, T, NH, hs)
    gate_logits, gate_cache = linear_forward(x, w_gate, b_gate)     # (B, T, NH)
    gate, gate_softmax_cache = softmax_forward(gate_logits)         # (B, T, NH) sums to 1 over heads
    mixed = (gate[:, :, None, :] @ y)[:, :, 0, :]                   # (B, T, hs) sum_h gate_h * y_h
    out, proj_cache = linear_forward(mixed, w_proj, b_proj)         # (B, T, C)
    cache = (heads_cache, gate_cache, gate_softmax_cache, y, proj_cache)  # mixing backward needs y and gate
    return out, cache


def moh_backward(dout, cache):
    """dout (B, T, C) -> dx (B, T, C), dw_qkv, db_qkv, dw_gate (C, NH), db_gate (NH,), dw_proj (hs, C), db_proj."""
    heads_cache, gate_cache, gate_softmax_cache, y, proj_cache = cache
    gate = gate_softmax_cache                                       # (B, T, NH) the softmax output
    dmixed, dw_proj, db_proj = linear_backward(dout, proj_cache)    # (B, T, hs)
    # mixed = sum_h gate_h * y_h
    dgate = (y @ dmixed[:, :, :, None])[:, :, :, 0]                 # (B, T, NH)
    dy = gate[:, :, :, None] * dmixed[:, :, None, :]                # (B, T, NH, hs)
    dgate_logits = softmax_backward(dgate, gate_softmax_cache)      # (B, T, NH)
    dx_gate, dw_gate, db_gate = linear_backward(dgate_logits, gate_cache)  # (B, T, C)
    dx, dw_qkv, db_qkv = heads_backward(dy, heads_cache)            # (B, T, C)
    dx += dx_gate  # the input fans out to the heads and the gate
    return dx, dw_qkv, db_qkv, dw_gate, db_gate, dw_proj, db_proj
