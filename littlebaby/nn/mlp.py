"""The position-wise MLP: expand C -> F = 4C, GELU, project back F -> C.

Derivation: docs/layers/mlp.md.
"""

from littlebaby.nn.gelu import gelu_backward, gelu_forward
from littlebaby.nn.linear import linear_backward, linear_forward


def mlp_forward(x, w_fc, b_fc, w_proj, b_proj):
    """x (B, T, C) -> (B, T, C)."""
    h, fc_cache = linear_forward(x, w_fc, b_fc)                     # (B, T, F)
    a, gelu_cache = gelu_forward(h)                                 # (B, T, F)
    out, proj_cache = linear_forward(a, w_proj, b_proj)             # (B, T, C)
    cache = (fc_cache, gelu_cache, proj_cache)
    return out, cache


def mlp_backward(dout, cache):
    """dout (B, T, C) -> dx (B, T, C), dw_fc (C, F), db_fc (F,), dw_proj (F, C), db_proj (C,)."""
    fc_cache, gelu_cache, proj_cache = cache
    da, dw_proj, db_proj = linear_backward(dout, proj_cache)        # (B, T, F)
    dh = gelu_backward(da, gelu_cache)                              # (B, T, F)
    dx, dw_fc, db_fc = linear_backward(dh, fc_cache)                # (B, T, C)
    return dx, dw_fc, db_fc, dw_proj, db_proj
