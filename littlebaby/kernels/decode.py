"""The decode step compiled by numba: the whole model for a few new tokens in one call, the twin of
``littlebaby.decode`` (NumPy) and of ``gpt_forward`` with a KV cache (the general layers).

Why. A NumPy decode step makes about 45 calls per block on arrays of a few hundred numbers, and each call costs
microseconds of overhead that the arithmetic does not; one compiled call per step pays that overhead once.

What it computes, for multi-head attention with one MLP (pre- or post-norm, tied or untied head): the new
tokens' embeddings, then per block LayerNorm, Q K V, their keys and values into the cache, each query's softmax
over every key before it, the projection, the MLP, and after the last block ln_f and the head for the last new
token of each sequence. The weights are the NumPy fast path's (``decode_weights``: the LayerNorm gains, the
attention scale and GELU's 0.5 folded in), stacked over the layers once per generation. Mixture of heads and
of experts are not covered (``supports``); they take the NumPy path.

What makes it fast. Each product is a loop over the input channels whose inner loop runs along one contiguous
row of the weights (stored (in, out)), for every row of the batch while that weight row is in cache; LLVM
vectorizes the inner loop, and four input channels are taken together so that each pass over the output row
does four multiply-adds. The last block computes keys and values for every new token but everything after
attention for the last token only, since nothing else reads it. In float32 the exponentials (softmax, GELU)
are computed by ``exp_inplace`` in a form LLVM vectorizes, within 2 ulp; in float64 they are the library's.
"""

import math
from functools import lru_cache

import numba
import numpy as np

from littlebaby.decode import decode_weights
from littlebaby.kvcache import KVCache
from littlebaby.model import GPT, Config
from littlebaby.nn.gelu import COEFF, SQRT_2_OVER_PI
from littlebaby.nn.layernorm import EPS

# compiled once and kept in __pycache__; releases the GIL; "contract" lets a multiply and an add become one fused
# multiply-add (one rounding instead of two), about 8% faster here. No flag assumes away NaN or inf.
jit = numba.njit(cache=True, nogil=True, fastmath={"contract"})
LN2 = math.log(2.0)
LN2_HIGH = 0.693359375       # ln 2 in 10 bits: k * LN2_HIGH is exact in float32 for |k| < 2^14
LN2_LOW = LN2 - LN2_HIGH     # the rest, -2.12e-4


def supports(config):
    """Whether the kernel covers this variant: multi-head attention and one MLP."""
    return config.c_attention == "mha" and config.c_network == "mlp"


class NumbaDecode:
    """A cached stepper's forward: idx (B, T) new tokens -> logits (B, V) after the last of them, in one
    compiled call. The weights are folded and stacked when a generation starts; the parameters must not change
    during it."""

    def __init__(self, params, config):
        folded = decode_weights(params, config)
        blocks = folded["blocks"]

        def stacked(name):  # (L, ...) one array per kind of weight, contiguous for the kernel
            return np.ascontiguousarray(np.stack([block[name] for block in blocks]))

        self.weights = (
            np.ascontiguousarray(folded["wte"]), np.ascontiguousarray(folded["wpe"]),
            stacked("attn.w_qkv"), stacked("attn.b_qkv"), stacked("attn.w_proj"), stacked("attn.b_proj"),
            stacked("mlp.w_fc"), stacked("mlp.b_fc"), stacked("mlp.w_proj"), stacked("mlp.b_proj"),
            np.stack([stacked("ln_1.w"), stacked("ln_2.w")], axis=1),  # (L, 2, C), read by post-norm only
            np.stack([stacked("ln_1.b"), stacked("ln_2.b")], axis=1),  # (L, 2, C)
            np.ascontiguousarray(folded["head.w"]), np.ascontiguousarray(folded["head.b"]),
        )
        self.n_heads, self.pre_norm = config.n_heads, config.c_sequence == "pre"
        self.vocab_size, self.dtype = config.vocab_size, np.dtype(config.dtype)

    def __call__(self, idx, kv_cache):
        B, T = idx.shape
        if kv_cache.buffer.shape[:2] != (len(self.weights[2]), B) or kv_cache.length + T > kv_cache.n_ctx:
            raise ValueError(f"a KV cache {kv_cache.buffer.shape} at {kv_cache.length} cannot take {T} more "
                             f"tokens of {B} sequences")  # the kernel does not check its indices
        logits = np.empty((B, self.vocab_size), self.dtype)         # (B, V)
        decode_tokens(np.ascontiguousarray(idx, dtype=np.int64), kv_cache.length, *self.weights, self.n_heads,
                      self.pre_norm, kv_cache.buffer, logits)
        kv_cache.advance(T)
        return logits


@lru_cache(maxsize=None)
def compile_error(dtype):
    """None when the kernel runs for parameters of ``dtype`` (compiling it, or loading it from numba's cache,
    on the first call), else one line saying why it does not."""
    config = Config(vocab_size=3, n_ctx=2, n_emb=4, head_size=4, n_heads=2, n_layers=1, dtype=str(np.dtype(dtype)))
    gpt = GPT(config)
    try:
        NumbaDecode(gpt.params, config)(np.zeros((1, 2), dtype=np.int64), KVCache(config, 1))
    except Exception as e:  # a numba typing or lowering error, or LLVM failing on this machine
        return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    return None


@jit
def decode_tokens(ids, start, wte, wpe, w_qkv, b_qkv, w_attn, b_attn, w_fc, b_fc, w_mlp, b_mlp, ln_w, ln_b,
                  head_w, head_b, n_heads, pre_norm, kv, logits):
    """ids (B, T) new tokens at positions start .. start+T-1 -> logits (B, V) after each sequence's last one;
    their keys and values go into kv (L, B, 2, NH, n_ctx, hs). Weights stacked over the L layers, folded as
    ``decode_weights`` folds them; ln_w, ln_b (L, 2, C) the two LayerNorms of each block, read by post-norm."""
    B, T = ids.shape
    L, C = w_qkv.shape[0], wte.shape[1]
    x = np.empty((B * T, C), wte.dtype)                             # (B*T, C) row b*T + t: sequence b, token t
    bits = np.empty(w_fc.shape[2], np.int32)                        # (F,) scratch for twice_gelu
    for b in range(B):
        for t in range(T):
            if not 0 <= ids[b, t] < wte.shape[0]:  # the one index that comes from outside
                raise IndexError("a token id is outside the vocabulary")
            for c in range(C):
                x[b * T + t, c] = wte[ids[b, t], c] + wpe[start + t, c]
    for layer in range(L):
        queries = 1 if layer == L - 1 else T  # the last block: only the last token's output is read
        qkv = linear(normalized(x) if pre_norm else x, w_qkv[layer], b_qkv[layer])  # (B*T, 3H)
        y = attend(qkv, kv[layer], start, T, queries, n_heads)      # (B*Q, H)
        x = last_rows(x, T, queries)                                # (B*Q, C)
        out = linear(y, w_attn[layer], b_attn[layer])               # (B*Q, C)
        x = residual(x, out, ln_w[layer, 0], ln_b[layer, 0], pre_norm)  # (B*Q, C)
        h = linear(normalized(x) if pre_norm else x, w_fc[layer], b_fc[layer])  # (B*Q, F)
        twice_gelu(h, bits)
        out = linear(h, w_mlp[layer], b_mlp[layer])                 # (B*Q, C) the 0.5 is folded into w_mlp
        x = residual(x, out, ln_w[layer, 1], ln_b[layer, 1], pre_norm)  # (B*Q, C)
    logits[:, :] = linear(normalized(x), head_w, head_b)            # (B, V) ln_f's gain and shift are folded in


@jit
def linear(x, w, b):
    """x (N, IN), w (IN, OUT), b (OUT,) -> x @ w + b (N, OUT).

    Loop order: input channels outer, rows, then the output row inner, contiguous in w and out; four input
    channels a pass, so each load and store of the output row carries four multiply-adds."""
    N, IN = x.shape
    OUT = w.shape[1]
    out = np.empty((N, OUT), x.dtype)                               # (N, OUT)
    for n in range(N):
        out[n, :] = b
    i = 0
    while i + 4 <= IN:
        for n in range(N):
            x0, x1, x2, x3 = x[n, i], x[n, i + 1], x[n, i + 2], x[n, i + 3]
            for o in range(OUT):
                out[n, o] += x0 * w[i, o] + x1 * w[i + 1, o] + x2 * w[i + 2, o] + x3 * w[i + 3, o]
        i += 4
    while i < IN:
        for n in range(N):
            xi = x[n, i]
            for o in range(OUT):
                out[n, o] += xi * w[i, o]
        i += 1
    return out


@jit
def attend(qkv, kv, start, T, queries, n_heads):
    """qkv (B*T, 3H) of T new tokens a sequence, scale folded into q; kv (B, 2, NH, n_ctx, hs) one layer's
    cache -> y (B*Q, H), the heads' outputs side by side for each sequence's last Q = ``queries`` tokens.

    First every new key and value goes into the cache, then each query attends to the keys up to its own
    position (the causal mask, as a loop bound)."""
    N = qkv.shape[0]
    B, H = N // T, qkv.shape[1] // 3
    hs = H // n_heads
    for b in range(B):
        for t in range(T):
            for h in range(n_heads):
                for j in range(hs):
                    kv[b, 0, h, start + t, j] = qkv[b * T + t, H + h * hs + j]
                    kv[b, 1, h, start + t, j] = qkv[b * T + t, 2 * H + h * hs + j]
    y = np.zeros((B * queries, H), qkv.dtype)                       # (B*Q, H)
    scores = np.empty(start + T, qkv.dtype)                         # (S,) one query's scores, then weights
    bits = np.empty(start + T, np.int32)                            # (S,) scratch for exp_inplace
    for b in range(B):
        for r in range(queries):
            t = T - queries + r
            S = start + t + 1                                       # the keys this query sees
            for h in range(n_heads):
                q = qkv[b * T + t, h * hs:(h + 1) * hs]             # (hs,)
                out = y[b * queries + r, h * hs:(h + 1) * hs]       # (hs,) a view
                head_attention(q, kv[b, 0, h], kv[b, 1, h], S, scores[:S], bits, out)
    return y


@jit
def head_attention(q, keys, values, S, scores, bits, out):
    """One head, one query: q (hs,), keys and values (n_ctx, hs) of which the first S count -> out (hs,) the
    softmax-weighted sum of the values. ``scores`` (S,) and ``bits`` are scratch.

    The scores are q . k for four keys at a time, so that four sums are in flight instead of one chain of
    dependent adds; likewise four weighted values join each pass over ``out``. The weights are left unnormalised
    until the end: out = sum_s e_s v_s / sum_s e_s."""
    hs = q.shape[0]
    s = 0
    while s + 4 <= S:
        a0, a1, a2, a3 = q[0] * keys[s, 0], q[0] * keys[s + 1, 0], q[0] * keys[s + 2, 0], q[0] * keys[s + 3, 0]
        for j in range(1, hs):
            a0 += q[j] * keys[s, j]
            a1 += q[j] * keys[s + 1, j]
            a2 += q[j] * keys[s + 2, j]
            a3 += q[j] * keys[s + 3, j]
        scores[s], scores[s + 1], scores[s + 2], scores[s + 3] = a0, a1, a2, a3
        s += 4
    while s < S:
        a0 = q[0] * keys[s, 0]
        for j in range(1, hs):
            a0 += q[j] * keys[s, j]
        scores[s] = a0
        s += 1
    top = scores[0]
    for s in range(1, S):
        top = max(top, scores[s])
    for s in range(S):  # a stable softmax: exp(score - max)
        scores[s] -= top
    exp_inplace(scores, bits)
    total = 0.0
    s = 0
    while s + 4 <= S:
        e0, e1, e2, e3 = scores[s], scores[s + 1], scores[s + 2], scores[s + 3]
        total += (e0 + e1) + (e2 + e3)
        for j in range(hs):
            out[j] += e0 * values[s, j] + e1 * values[s + 1, j] + e2 * values[s + 2, j] + e3 * values[s + 3, j]
        s += 4
    while s < S:
        total += scores[s]
        for j in range(hs):
            out[j] += scores[s] * values[s, j]
        s += 1
    for j in range(hs):
        out[j] /= total


@jit
def exp_inplace(a, bits):
    """a (n,) -> exp(a), in place; bits (>= n,) int32 scratch. float64: the library's exp. float32: as
    exp(x) = 2^k e^r with k = round(x / ln 2) and |r| <= ln(2) / 2, e^r by its Taylor series to r^7 (the
    next term is below 2^-27) and 2^k built from its bits, (k + 127) << 23; every step is arithmetic on a
    contiguous array, so LLVM vectorizes it, where a call to the library's expf would run one number at a time.
    Within 2 ulp of the exact value; exp(-inf) = 0, exp(inf) = inf, NaN stays NaN."""
    if a.itemsize == 8:
        for i in range(a.size):
            a[i] = math.exp(a[i])
        return
    low, high = np.float32(-88.0), np.float32(89.0)  # past them 2^k is 0 (k = -127) or inf (k = 128)
    for i in range(a.size):
        x = a[i]
        x = low if x < low else x   # comparisons are False for NaN, which goes on as NaN
        x = high if x > high else x
        k = np.floor((x if x == x else np.float32(0.0)) * np.float32(1 / LN2) + np.float32(0.5))
        r = (x - k * np.float32(LN2_HIGH)) - k * np.float32(LN2_LOW)  # exact: k * LN2_HIGH needs no rounding
        p = np.float32(1 / 5040)
        p = p * r + np.float32(1 / 720)
        p = p * r + np.float32(1 / 120)
        p = p * r + np.float32(1 / 24)
        p = p * r + np.float32(1 / 6)
        p = p * r + np.float32(1 / 2)
        p = p * r + np.float32(1.0)
        a[i] = p * r + np.float32(1.0)                              # e^r
        bits[i] = (np.int32(k) + np.int32(127)) << np.int32(23)    # the float32 2^k
    scale = bits[:a.size].view(np.float32)
    for i in range(a.size):
        a[i] *= scale[i]


@jit
def last_rows(x, T, queries):
    """x (B*T, C) -> (B*Q, C): each sequence's last Q = ``queries`` rows (x itself when Q = T)."""
    if queries == T:
        return x
    B = x.shape[0] // T
    out = np.empty((B * queries, x.shape[1]), x.dtype)              # (B*Q, C)
    for b in range(B):
        for r in range(queries):
            out[b * queries + r, :] = x[b * T + T - queries + r, :]
    return out


@jit
def residual(x, out, w, b, pre_norm):
    """x, out (N, C) -> the block's stream after a sublayer: pre-norm x + out (in place), post-norm
    LayerNorm(x + out) with gain w and shift b (C,)."""
    x += out
    if pre_norm:
        return x
    xhat = normalized(x)                                            # (N, C)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            xhat[n, c] = xhat[n, c] * w[c] + b[c]
    return xhat


@jit
def normalized(x):
    """x (N, C) -> (N, C), each row at zero mean and unit variance: LayerNorm before its gain and shift. The
    statistics are summed in float64, as ``layernorm_forward``'s are not: the error is well below float32's."""
    N, C = x.shape
    xhat = np.empty_like(x)                                         # (N, C)
    for n in range(N):
        mean = 0.0
        for c in range(C):
            mean += x[n, c]
        mean /= C
        var = 0.0
        for c in range(C):
            d = x[n, c] - mean
            var += d * d
        rstd = 1.0 / math.sqrt(var / C + EPS)                       # the biased variance, as in training
        for c in range(C):
            xhat[n, c] = (x[n, c] - mean) * rstd
    return xhat


@jit
def twice_gelu(h, bits):
    """h (N, F) -> 2 gelu(h) in place, nn.gelu's GELU without its 0.5 (decode_weights folds it into the next
    product): h (1 + tanh(u)) with u = sqrt(2/pi) (h + 0.044715 h^3), computed as 2 h / (1 + exp(-2u)), the
    same number (1 + tanh(u) = 2 / (1 + e^-2u)) from one exp, which exp_inplace vectorizes. bits (>= F,)."""
    N, F = h.shape
    constants = np.array([-2.0 * SQRT_2_OVER_PI, COEFF, 1.0, 2.0]).astype(h.dtype)  # in h's dtype: float32 stays
    minus_two_c, coeff, one, two = constants[0], constants[1], constants[2], constants[3]
    e = np.empty(F, h.dtype)                                        # (F,) -2u, then exp(-2u)
    for n in range(N):
        row = h[n]                                                  # (F,)
        for f in range(F):
            v = row[f]
            e[f] = minus_two_c * v * (one + coeff * v * v)
        exp_inplace(e, bits)
        for f in range(F):
            row[f] = two * row[f] / (one + e[f])
