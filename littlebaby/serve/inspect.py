"""The numbers behind the page's views, computed by the model's own layers (NumPy; no server needed).

    trace(gpt, ids)            one evaluation-mode forward over a window of ids, keeping what the views show:
                               the residual stream after each block, every block's attention weights, and
                               the logit lens (ln_f + head applied to each residual)
    sampling_probs(logits...)  the distribution ``generate.sample_next`` draws from, after temperature,
                               top-k and top-p
    explain(gpt, ids, p, ...)  why token ids[p] came out: the window the model saw, both distributions, the
                               attention of the position that predicted it, the logit lens at that position

``trace`` runs the blocks of ``littlebaby.nn`` one by one exactly as ``model.gpt_forward`` does (same functions,
same shapes, same order), so its logits are bitwise gpt_forward's; tests/test_serve.py checks that and the
attention weights against gpt_forward's own caches. Dimensions as in littlebaby.nn: T positions of the window,
C channels, V vocabulary, L blocks, NH heads.
"""

import dataclasses

import numpy as np

from littlebaby.kvcache import window_start
from littlebaby.model import block_params, head_weight
from littlebaby.nn import (
    block_forward,
    layernorm_forward,
    linear_forward,
    position_embedding_forward,
    token_embedding_forward,
)
from littlebaby.nn.softmax import softmax_inplace
from littlebaby.sampling import sampling_weights


@dataclasses.dataclass
class Trace:
    """What one forward over a window of T tokens computed, batch axis dropped."""
    ids: np.ndarray               # (T,) the window's token ids
    residuals: np.ndarray         # (L+1, T, C) the stream after the embeddings, then after each block
    attention: np.ndarray         # (L, NH, T, T) row t: how position t weighs positions 0..t (0 above the diagonal)
    lens_logits: np.ndarray       # (L+1, T, V) ln_f + head applied to each residual

    @property
    def logits(self):
        """(T, V) the model's own logits: the lens of the last residual (what gpt_forward returns)."""
        return self.lens_logits[-1]


def attention_weights(block_cache):
    """A block_forward cache -> its attention weights (B, NH, T, T), zeros where a query may not look.

    The mixer's cache starts with the heads' cache (multi-head attention and mixture of heads alike), whose
    attention part keeps the softmax output per causal block of queries and the plan of those blocks
    (``attention.query_blocks``); the blocks are laid back into one (T, T) map per head.
    """
    mixer_cache = block_cache[2]
    _, attention_cache = mixer_cache[0]                             # heads_forward's cache
    q, _, _, plan, atts, _, _ = attention_cache                     # causal_attention_forward's cache
    B, NH, T, _ = q.shape
    weights = np.zeros((B, NH, T, T), dtype=q.dtype)                # (B, NH, T, T)
    for (r0, r1, s1), att in zip(plan, atts, strict=True):
        weights[:, :, r0:r1, :s1] = att                             # (B, NH, Tq, s1)
    return weights


def trace(gpt, ids) -> Trace:
    """ids (T,) with T <= n_ctx -> Trace, in evaluation mode (no dropout). The loop is gpt_forward's."""
    params, config = gpt.params, gpt.config
    idx = np.asarray(ids, dtype=np.int64).reshape(1, -1)            # (1, T)
    T = idx.shape[1]
    if not 1 <= T <= config.n_ctx:
        raise ValueError(f"a trace covers 1 to n_ctx = {config.n_ctx} tokens, got {T}")
    tok, _ = token_embedding_forward(idx, params["wte"])            # (1, T, C)
    pos, _ = position_embedding_forward(T, params["wpe"], 0)        # (T, C)
    x = tok + pos                                                   # (1, T, C)
    residuals, attention = [x], []
    for i in range(config.n_layers):
        x, _, block_cache = block_forward(x, block_params(params, config, i), config)  # (1, T, C)
        residuals.append(x)
        attention.append(attention_weights(block_cache)[0])         # (NH, T, T)
    lens = [logit_lens(params, config, r)[0] for r in residuals]    # L+1 x (T, V)
    return Trace(idx[0], np.concatenate(residuals), np.stack(attention), np.stack(lens))


def logit_lens(params, config, x):
    """x (1, T, C) a residual -> (1, T, V): what the final LayerNorm and the head make of it, as at the top."""
    x, _ = layernorm_forward(x, params["ln_f.w"], params["ln_f.b"])  # (1, T, C)
    logits, _ = linear_forward(x, head_weight(params, config), params["lm_head.b"])  # (1, T, V)
    return logits


def softmax(logits):
    """logits (..., V) -> probabilities (..., V) in float64, as sampling computes them."""
    return softmax_inplace(np.array(logits, dtype=np.float64))      # (..., V) a copy, softmaxed in place


def sampling_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """logits (V,) -> (V,) float64, the distribution ``sampling.sample_next`` draws one token from: the same
    function computes it (``sampling.sampling_weights``), normalised here after top_p. Temperature 0 is greedy:
    all mass on the first largest logit."""
    logits = np.asarray(logits)
    if temperature == 0:
        probs = np.zeros(logits.shape[-1])                          # (V,)
        probs[np.argmax(logits)] = 1.0
        return probs
    probs = sampling_weights(logits[None], temperature, top_k, top_p)[0]  # (V,)
    return probs / probs.sum()


def ranked(probs, k=10):
    """probs (V,) -> the ids of the k likeliest with non-zero probability, likeliest first (ties: lower id)."""
    order = np.argsort(-probs, kind="stable")[:k]                   # (k,)
    return order[probs[order] > 0]


def rank_of(probs, token):
    """1 + how many tokens are strictly likelier than ``token``."""
    return int((probs > probs[token]).sum()) + 1


@dataclasses.dataclass
class Explanation:
    """Why token ids[position] came out; every array is over the window the model saw when predicting it."""
    position: int                 # index of the explained token in the whole sequence
    token: int                    # its id
    window: int                   # index of the window's first token: the model saw ids[window:position]
    sampled: np.ndarray           # (V,) the distribution it was drawn from (temperature, top-k, top-p)
    raw: np.ndarray               # (V,) the model's own softmax
    attention: np.ndarray         # (L, NH, S) how the predicting position weighed the S = position - window tokens
    lens: np.ndarray              # (L+1, V) softmax of the logit lens at the predicting position


def explain(gpt, ids, position, temperature=1.0, top_k=None, top_p=None) -> Explanation:
    """ids (N,) a whole sequence (prompt and sampled tokens), 1 <= position < N -> Explanation of ids[position].

    The window is the one generation used (``kvcache.window_start``): the last n_ctx // 2 to n_ctx tokens
    before ``position``, at positions 0.. of the model."""
    ids = np.asarray(ids, dtype=np.int64)                           # (N,)
    if not 1 <= position < len(ids):
        raise ValueError(f"position {position} is outside 1 .. {len(ids) - 1}")
    window = window_start(position, gpt.config.n_ctx)
    traced = trace(gpt, ids[window:position])                       # S = position - window
    logits = traced.logits[-1]                                      # (V,) at the position that predicted it
    return Explanation(position, int(ids[position]), window, sampling_probs(logits, temperature, top_k, top_p),
                       softmax(logits), traced.attention[:, :, -1, :], softmax(traced.lens_logits[:, -1]))
