"""The transformer block, in the order the config's ``c_sequence`` names:

    pre  (default)  x = x + drop(mixer(ln_1(x)));   x = x + drop(network(ln_2(x)))
    post            x = ln_1(x + drop(mixer(x)));   x = ln_2(x + drop(network(x)))

The mixer is multi-head attention (``c_attention = "mha"``) or mixture of heads (``"moh"``); the network is an
MLP (``c_network = "mlp"``) or a mixture of experts (``"moe"``). Parameters come as a dict with the block's
short names (``ln_1.w``, ``attn.w_qkv``, ...); gradients go back as a dict with exactly the same keys.
Dropout masks are drawn from ``rng`` in a fixed order: the attention weights, after the mixer, after the network.

Derivation: docs/layers/block.md.
"""

from littlebaby.nn.attention import attention_backward, attention_forward
from littlebaby.nn.dropout import dropout_backward, dropout_forward
from littlebaby.nn.layernorm import layernorm_backward, layernorm_forward
from littlebaby.nn.mlp import mlp_backward, mlp_forward
from littlebaby.nn.moe import moe_backward, moe_forward
from littlebaby.nn.moh import moh_backward, moh_forward

# the parameters each part reads, in the order its forward takes them and its backward returns their gradients
MIXER_PARAMS = {"mha": ("attn.w_qkv", "attn.b_qkv", "attn.w_proj", "attn.b_proj"),
                "moh": ("attn.w_qkv", "attn.b_qkv", "attn.w_gate", "attn.b_gate", "attn.w_proj", "attn.b_proj")}
NETWORK_PARAMS = {"mlp": ("mlp.w_fc", "mlp.b_fc", "mlp.w_proj", "mlp.b_proj"),
                  "moe": ("moe.w_gate", "moe.b_gate", "moe.w_fc", "moe.b_fc", "moe.w_proj", "moe.b_proj")}


def mixer_forward(x, p, config, rng, kv=None):
    """x (B, T, C) -> (B, T, C): the attention variant the config names."""
    weights = [p[name] for name in MIXER_PARAMS[config.c_attention]]
    forward = attention_forward if config.c_attention == "mha" else moh_forward
    return forward(x, *weights, config.n_heads, config.dropout, rng, kv)


def network_forward(x, p, config):
    """x (B, T, C) -> (B, T, C), the auxiliary loss (0.0 unless sparse experts), cache."""
    weights = [p[name] for name in NETWORK_PARAMS[config.c_network]]
    if config.c_network == "moe":
        return moe_forward(x, *weights, config.moe_top_k, config.moe_aux_weight)
    out, cache = mlp_forward(x, *weights)
    return out, 0.0, cache


def block_forward(x, p, config, rng=None, kv=None):
    """x (B, T, C) -> out (B, T, C), aux_loss (float), cache. ``p``: the block's parameters by short name.
    ``kv``: this block's KV cache slot when generating (see attention.heads_forward)."""
    pre = config.c_sequence == "pre"
    h, ln1_cache = layernorm_forward(x, p["ln_1.w"], p["ln_1.b"]) if pre else (x, None)  # (B, T, C)
    a, mixer_cache = mixer_forward(h, p, config, rng, kv)           # (B, T, C)
    a, mixer_drop_cache = dropout_forward(a, config.dropout, rng)   # (B, T, C)
    x = x + a                                                       # (B, T, C) residual
    if not pre:
        x, ln1_cache = layernorm_forward(x, p["ln_1.w"], p["ln_1.b"])  # (B, T, C)
    h, ln2_cache = layernorm_forward(x, p["ln_2.w"], p["ln_2.b"]) if pre else (x, None)  # (B, T, C)
    m, aux, network_cache = network_forward(h, p, config)           # (B, T, C)
    m, network_drop_cache = dropout_forward(m, config.dropout, rng)  # (B, T, C)
    out = x + m                                                     # (B, T, C) residual
    if not pre:
        out, ln2_cache = layernorm_forward(out, p["ln_2.w"], p["ln_2.b"])  # (B, T, C)
    cache = (config, ln1_cache, mixer_cache, mixer_drop_cache, ln2_cache, network_cache, network_drop_cache)
    return out, aux, cache


def block_backward(dout, cache):
    """dout (B, T, C) -> dx (B, T, C), grads keyed like the block's parameters (the aux loss included)."""
    config, ln1_cache, mixer_cache, mixer_drop_cache, ln2_cache, network_cache, network_drop_cache = cache
    pre = config.c_sequence == "pre"
    g = {}
    if not pre:  # out = ln_2(x + m)
        dout, g["ln_2.w"], g["ln_2.b"] = layernorm_backward(dout, ln2_cache)
    # out = x + m: the residual stream fans out, so x's gradient is the sum of both paths
    dm = dropout_backward(dout, network_drop_cache)                 # (B, T, C)
    backward = moe_backward if config.c_network == "moe" else mlp_backward
    dh, *network_grads = backward(dm, network_cache)                # (B, T, C)
    g.update(zip(NETWORK_PARAMS[config.c_network], network_grads))
    if pre:  # h = ln_2(x)
        dh, g["ln_2.w"], g["ln_2.b"] = layernorm_backward(dh, ln2_cache)
    dx = dh + dout                                                  # (B, T, C)
    if not pre:  # x = ln_1(x + a)
        dx, g["ln_1.w"], g["ln_1.b"] = layernorm_backward(dx, ln1_cache)
    # x = x + a
    da = dropout_backward(dx, mixer_drop_cache)                     # (B, T, C)
    backward = moh_backward if config.c_attention == "moh" else attention_backward
    dh, *mixer_grads = backward(da, mixer_cache)                    # (B, T, C)
    g.update(zip(MIXER_PARAMS[config.c_attention], mixer_grads))
    if pre:  # h = ln_1(x)
        dh, g["ln_1.w"], g["ln_1.b"] = layernorm_backward(dh, ln1_cache)
    dx_in = dh + dx                                                 # (B, T, C)
    return dx_in, g
