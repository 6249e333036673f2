"""The decode fast path in NumPy: what ``gpt_forward`` with a KV cache computes, in fewer NumPy calls.

A generation step feeds one token per sequence, so every array holds a few hundred numbers and a step costs its
NumPy calls, not its arithmetic. ``decode_step`` computes what ``gpt_forward`` computes for T = 1 with fewer
calls: rows (B, C) instead of (B, T, C), no causal mask (the one query sees every cached key), no backward
caches, and constant factors folded into the weights once per generation (``decode_weights``). Mixture of heads
and of experts go through their general layers on a (B, 1, C) view. A prefill runs the general layers over all
but the window's last token, skipping the outputs no later step reads (``fill_cache``), then decodes the last
one (``NumpyDecode``). ``gpt_forward`` with a ``kv_cache`` is the plain twin of both; tests/test_decode.py
checks them against it for every variant. ``littlebaby.kernels.decode`` compiles the same step into one call.
"""

import math
from functools import lru_cache

import numpy as np

from littlebaby.model import block_params, head_bias, head_weight
from littlebaby.nn import (
    block_forward,
    layernorm_forward,
    linear_forward,
    position_embedding_forward,
    token_embedding_forward,
)
from littlebaby.nn.softmax import softmax_inplace
from littlebaby.nn.gelu import COEFF, SQRT_2_OVER_PI
from littlebaby.nn.layernorm import EPS
from littlebaby.nn.moe import moe_forward
from littlebaby.nn.moh import moh_forward


class NumpyDecode:
    """A cached stepper's forward on the host: idx (B, T) new tokens -> logits (B, V) after the last of them.

    Only the last token's logits are wanted, so the others only fill the cache (``fill_cache``) and the last one
    takes a ``decode_step``. The weights are folded once, when a generation starts: the parameters must not
    change during it."""

    def __init__(self, params, config):
        self.params, self.config = params, config
        self.weights = decode_weights(params, config)

    def __call__(self, idx, kv_cache):
        fill_cache(self.params, self.config, idx[:, :-1], kv_cache)
        return decode_step(self.weights, self.config, idx[:, -1], kv_cache)  # (B, V)


def fill_cache(params, config, idx, kv_cache):
    """idx (B, T) tokens at positions kv_cache.length .. -> their keys and values in every layer's cache, and
    nothing else: ``gpt_forward`` without what no later step reads (the last block's outputs, ln_f, the head)."""
    B, T = idx.shape
    if T == 0:
        return
    start = kv_cache.length
    tok, _ = token_embedding_forward(idx, params["wte"])           # (B, T, C)
    pos, _ = position_embedding_forward(T, params["wpe"], start)    # (T, C)
    x = tok + pos                                                   # (B, T, C)
    for i in range(config.n_layers - 1):
        x, _, _ = block_forward(x, block_params(params, config, i), config, None, kv_cache.slot(i))  # (B, T, C)
    last = block_params(params, config, config.n_layers - 1)
    if config.c_sequence == "pre":
        x, _ = layernorm_forward(x, last["ln_1.w"], last["ln_1.b"])  # (B, T, C)
    qkv, _ = linear_forward(x, last["attn.w_qkv"], last["attn.b_qkv"])  # (B, T, 3H)
    qkv = qkv.reshape(B, T, 3, config.n_heads, -1)                  # (B, T, 3, NH, hs) as heads_forward splits it
    kv_cache.buffers[-1][:, :, :, start:start + T] = qkv[:, :, 1:].transpose(0, 2, 3, 1, 4)  # (B, 2, NH, T, hs)
    kv_cache.advance(T)


# --- the fast path: one token per sequence, on rows (B, C) ------------------------------------------------------

def decode_weights(params, config):
    """The parameters as ``decode_step`` reads them, with constant factors folded in once per generation so that
    each step makes fewer NumPy calls. Each fold is exact algebra (only the rounding changes):

      pre-norm only, each LayerNorm's gain and shift into the products that read it (its output feeds nothing
      else): (xhat * w + b) @ W + c = xhat @ (w[:, None] * W) + (b @ W + c). ln_1 into attn.w_qkv (and the
      gate of mixture of heads), ln_2 into mlp.w_fc (or the gate and every first layer of the experts);
      ln_f, always, into the head;
      multi-head attention: the scale into the query columns, (x Wq + bq) / sqrt(hs) = x (Wq / sqrt(hs)) + ...
      (mixture of heads runs the general ``heads_forward``, which scales by itself);
      the MLP: GELU's 0.5 into its second product, 0.5 a @ W = a @ (0.5 W) (see ``network_step``).

    Returns a dict: wte, wpe, head.w, head.b, and blocks, a list of each block's dict by short name.
    The parameters themselves are not modified.
    """
    blocks = []
    for i in range(config.n_layers):
        p = dict(block_params(params, config, i))
        if config.c_sequence == "pre":
            ln_1_readers = ("attn.w_qkv", "attn.w_gate") if config.c_attention == "moh" else ("attn.w_qkv",)
            ln_2_readers = ("moe.w_gate", "moe.w_fc") if config.c_network == "moe" else ("mlp.w_fc",)
            for ln, readers in (("ln_1", ln_1_readers), ("ln_2", ln_2_readers)):
                for w in readers:
                    b = w.replace(".w_", ".b_")
                    p[w], p[b] = fold_gain_and_shift(p[f"{ln}.w"], p[f"{ln}.b"], p[w], p[b])
        if config.c_attention == "mha":
            if config.c_sequence == "post":  # not folded above: copy before scaling in place
                p["attn.w_qkv"], p["attn.b_qkv"] = p["attn.w_qkv"].copy(), p["attn.b_qkv"].copy()
            scale = 1.0 / math.sqrt(config.head_size // config.n_heads)
            p["attn.w_qkv"][:, :config.head_size] *= scale          # the query columns come first
            p["attn.b_qkv"][:config.head_size] *= scale
        if config.c_network == "mlp":
            p["mlp.w_proj"] = 0.5 * p["mlp.w_proj"]
        blocks.append(p)
    head_w, head_b = fold_gain_and_shift(params["ln_f.w"], params["ln_f.b"], head_weight(params, config),
                                         head_bias(params, config))
    return {"wte": params["wte"], "wpe": params["wpe"], "blocks": blocks, "head.w": head_w, "head.b": head_b}


def fold_gain_and_shift(gain, shift, w, b):
    """gain, shift (C,), w (..., C, OUT), b (..., OUT) -> w', b' with (xhat * gain + shift) @ w + b = xhat @ w' + b'.
    A stack of weights (experts) folds each one."""
    w_folded = gain[:, None] * w                                    # (..., C, OUT)
    b_folded = b + np.einsum("c,...co->...o", shift, w)             # (..., OUT)
    return w_folded, b_folded


def decode_step(weights, config, ids, kv_cache):
    """ids (B,) one new token per sequence -> logits (B, V). The tokens take position kv_cache.length and attend
    to everything cached before them: the same logits as ``gpt_forward(params, config, ids[:, None],
    kv_cache=kv_cache)[0][:, -1]``, from ``weights = decode_weights(params, config)``."""
    start = kv_cache.length
    x = weights["wte"][ids] + weights["wpe"][start]                 # (B, C)
    for p, kv_buffer in zip(weights["blocks"], kv_cache.buffers):
        x = block_step(x, p, config, kv_buffer, start)              # (B, C)
    logits = np.dot(normalize_rows(x), weights["head.w"])           # (B, V) ln_f's gain and shift are folded in
    logits += weights["head.b"]
    kv_cache.advance(1)
    return logits


def block_step(x, p, config, kv_buffer, start):
    """x (B, C) -> (B, C): ``nn.block.block_forward`` at T = 1 in evaluation mode. Pre-norm: the LayerNorms'
    gains and shifts are folded into the next products (see decode_weights); post-norm applies them here."""
    if config.c_sequence == "pre":
        x = x + mixer_step(normalize_rows(x), p, config, kv_buffer, start)  # (B, C) residual
        x += network_step(normalize_rows(x), p, config)             # (B, C) residual; x is this step's own array
        return x
    x = layernorm_rows(x + mixer_step(x, p, config, kv_buffer, start), p["ln_1.w"], p["ln_1.b"])  # (B, C)
    return layernorm_rows(x + network_step(x, p, config), p["ln_2.w"], p["ln_2.b"])  # (B, C)


def mixer_step(x, p, config, kv_buffer, start):
    """x (B, C) -> (B, C): multi-head attention on rows, or mixture of heads through its general layer."""
    if config.c_attention == "moh":
        kv = (kv_buffer[:, 0], kv_buffer[:, 1], start)              # the slot heads_forward reads and writes
        out, _ = moh_forward(x[:, None], p["attn.w_qkv"], p["attn.b_qkv"], p["attn.w_gate"], p["attn.b_gate"],
                             p["attn.w_proj"], p["attn.b_proj"], config.n_heads, kv=kv)  # (B, 1, C)
        return out[:, 0]                                            # (B, C)
    y = heads_step(x, p["attn.w_qkv"], p["attn.b_qkv"], config.n_heads, kv_buffer, start)  # (B, H)
    out = np.dot(y, p["attn.w_proj"])                               # (B, C)
    out += p["attn.b_proj"]
    return out


def heads_step(x, w_qkv, b_qkv, n_heads, kv_buffer, start):
    """x (B, C) -> y (B, H): ``attention.heads_forward`` for one query per sequence, with the scale 1/sqrt(hs)
    already in the query weights. The query sees every cached key, so there is no mask. The new key and value
    go to position ``start`` of kv_buffer (B, 2, NH, n_ctx, hs)."""
    B = x.shape[0]
    hs = w_qkv.shape[1] // 3 // n_heads
    qkv = np.dot(x, w_qkv)                                          # (B, 3H)
    qkv += b_qkv
    qkv = qkv.reshape(B, 3, n_heads, hs)                            # (B, 3, NH, hs)
    kv_buffer[:, :, :, start] = qkv[:, 1:]                          # keys and values in one write
    k, v = kv_buffer[:, 0, :, :start + 1], kv_buffer[:, 1, :, :start + 1]  # each (B, NH, S, hs), S = start + 1
    att = qkv[:, 0, :, None, :] @ k.transpose(0, 1, 3, 2)           # (B, NH, 1, S) scaled scores
    softmax_inplace(att)                                            # (B, NH, 1, S) rows sum to 1
    y = att @ v                                                     # (B, NH, 1, hs)
    return y.reshape(B, n_heads * hs)                               # (B, H) heads side by side, as concatenated


def network_step(x, p, config):
    """x (B, C) -> (B, C): the MLP on rows, or the mixture of experts through its general layer."""
    if config.c_network == "moe":
        out, _, _ = moe_forward(x[:, None], p["moe.w_gate"], p["moe.b_gate"], p["moe.w_fc"], p["moe.b_fc"],
                                p["moe.w_proj"], p["moe.b_proj"], config.moe_top_k)  # (B, 1, C)
        return out[:, 0]                                            # (B, C)
    h = np.dot(x, p["mlp.w_fc"])                                    # (B, F)
    h += p["mlp.b_fc"]
    # twice nn.gelu's GELU, h (1 + tanh(u)), u = sqrt(2/pi) h (1 + 0.044715 h^2); the 0.5 is folded into w_proj
    a = h * h                                                       # (B, F)
    a *= COEFF * SQRT_2_OVER_PI
    a += SQRT_2_OVER_PI
    a *= h                                                          # u
    np.tanh(a, out=a)
    a += 1.0
    a *= h                                                          # 2 gelu(h)
    out = np.dot(a, p["mlp.w_proj"])                                # (B, C)
    out += p["mlp.b_proj"]
    return out


def layernorm_rows(x, w, b):
    """x (B, C) -> (B, C): ``layernorm_forward`` without its cache."""
    xhat = normalize_rows(x)                                        # (B, C)
    xhat *= w
    xhat += b
    return xhat


def normalize_rows(x):
    """x (B, C) -> xhat (B, C), each row at zero mean and unit variance: LayerNorm before its gain and shift.
    The row mean and variance are products with a (C, 1) column of 1/C, cheaper than reductions on short rows."""
    mean_column = _mean_column(x.shape[1], x.dtype)                 # (C, 1)
    xhat = x - np.dot(x, mean_column)                               # (B, C) centred
    std = np.dot(xhat * xhat, mean_column)                          # (B, 1) the biased variance, as in training
    std += EPS
    np.sqrt(std, out=std)                                           # (B, 1) sqrt(var + eps)
    xhat /= std
    return xhat


@lru_cache(maxsize=8)
def _mean_column(C, dtype):
    column = np.full((C, 1), 1.0 / C, dtype=dtype)                  # (C, 1)
    column.flags.writeable = False
    return column
