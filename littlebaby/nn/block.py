"""The transformer block, pre-norm: ``x = x + drop(attn(ln_1(x))); x = x + drop(mlp(ln_2(x)))``.

Parameters come as a dict with the block's short names (``ln_1.w``, ``attn.w_qkv``, ...); the gradients go back
as a dict with exactly the same keys. Dropout masks are drawn from ``rng`` in a fixed order: the attention
weights, then after the attention projection, then after the MLP.
"""

from littlebaby.nn.attention import attention_backward, attention_forward
from littlebaby.nn.dropout import dropout_backward, dropout_forward
from littlebaby.nn.layernorm import layernorm_backward, layernorm_forward
from littlebaby.nn.mlp import mlp_backward, mlp_forward


def block_forward(x, p, n_heads, dropout=0.0, rng=None):
    """x (B, T, C) -> (B, T, C). ``p``: the block's parameters by short name."""
    h, ln1_cache = layernorm_forward(x, p["ln_1.w"], p["ln_1.b"])   # (B, T, C)
    a, attn_cache = attention_forward(h, p["attn.w_qkv"], p["attn.b_qkv"], p["attn.w_proj"], p["attn.b_proj"],
                                      n_heads, dropout, rng)        # (B, T, C)
    a, attn_drop_cache = dropout_forward(a, dropout, rng)           # (B, T, C)
    x = x + a                                                       # (B, T, C) residual
    h, ln2_cache = layernorm_forward(x, p["ln_2.w"], p["ln_2.b"])   # (B, T, C)
    m, mlp_cache = mlp_forward(h, p["mlp.w_fc"], p["mlp.b_fc"], p["mlp.w_proj"], p["mlp.b_proj"])  # (B, T, C)
    m, mlp_drop_cache = dropout_forward(m, dropout, rng)            # (B, T, C)
    out = x + m                                                     # (B, T, C) residual
    cache = (ln1_cache, attn_cache, attn_drop_cache, ln2_cache, mlp_cache, mlp_drop_cache)
    return out, cache


def block_backward(dout, cache):
    """dout (B, T, C) -> dx (B, T, C), grads keyed like the block's parameters."""
    ln1_cache, attn_cache, attn_drop_cache, ln2_cache, mlp_cache, mlp_drop_cache = cache
    g = {}
    # out = x + m: the residual stream fans out, so its gradient is the sum of both paths
    dm = dropout_backward(dout, mlp_drop_cache)                     # (B, T, C)
    dh, g["mlp.w_fc"], g["mlp.b_fc"], g["mlp.w_proj"], g["mlp.b_proj"] = mlp_backward(dm, mlp_cache)
    dx, g["ln_2.w"], g["ln_2.b"] = layernorm_backward(dh, ln2_cache)  # (B, T, C)
    dx += dout
    # x = x + a
    da = dropout_backward(dx, attn_drop_cache)                      # (B, T, C)
    dh, g["attn.w_qkv"], g["attn.b_qkv"], g["attn.w_proj"], g["attn.b_proj"] = attention_backward(da, attn_cache)
    dx_in, g["ln_1.w"], g["ln_1.b"] = layernorm_backward(dh, ln1_cache)  # (B, T, C)
    dx_in += dx
    return dx_in, g
