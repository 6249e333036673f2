"""The GPT: its config, parameter init, ``gpt_forward`` / ``gpt_backward``, parameter count and FLOPs.

Parameters (a plain dict of arrays, weights stored (in, out)):

    wte (V, C)  token embedding            wpe (n_ctx, C)  position embedding
    blocks.{i}.ln_1.w, ln_1.b (C,)         blocks.{i}.attn.w_qkv (C, 3H), attn.b_qkv (3H,)
    blocks.{i}.attn.w_proj (H, C), .b (C,) blocks.{i}.ln_2.w, ln_2.b (C,)
    blocks.{i}.mlp.w_fc (C, F), b_fc (F,)  blocks.{i}.mlp.w_proj (F, C), b_proj (C,)
    ln_f.w, ln_f.b (C,)                    lm_head.w (C, V), lm_head.b (V,)

Activations cached by one training forward (what the backward keeps alive), per layer:
    ln_1, ln_2: xhat (B, T, C) and rstd (B, T, 1);   attn: input (B, T, C), qkv (B, T, 3H),
    softmax output (B, NH, T, T), dropout mask (B, NH, T, T) bool, head outputs (B, T, H);
    mlp: input (B, T, C), pre-GELU (B, T, F), tanh (B, T, F), GELU output (B, T, F);
    residual dropout masks 2 x (B, T, C) bool.
And once: token ids (B, T), ln_f (B, T, C), its output (B, T, C), softmax probabilities (B*T, V).
The (B, NH, T, T) attention weights dominate at long contexts.
"""

import dataclasses
import math
from typing import Literal

import numpy as np

from littlebaby import config as configlib
from littlebaby.errors import BabyError, ConfigError
from littlebaby.nn import (
    block_backward,
    block_forward,
    cross_entropy_backward,
    cross_entropy_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    position_embedding_backward,
    position_embedding_forward,
    token_embedding_backward,
    token_embedding_forward,
)

BLOCK_PARAMS = ("ln_1.w", "ln_1.b", "attn.w_qkv", "attn.b_qkv", "attn.w_proj", "attn.b_proj",
                "ln_2.w", "ln_2.b", "mlp.w_fc", "mlp.b_fc", "mlp.w_proj", "mlp.b_proj")


@dataclasses.dataclass
class Config:
    """The model's shape and the seed's training hyperparameters. JSON keys are the field names."""
    vocab_size: int = 65          # V: number of distinct tokens
    n_ctx: int = 64               # the context length: how many tokens the model sees at once
    n_emb: int = 128              # C: width of the residual stream
    head_size: int = 128          # H: total width of Q, K, V across all heads (may differ from n_emb)
    n_heads: int = 16             # NH: heads; head_size must divide by it
    n_layers: int = 4             # L: transformer blocks
    dropout: float = 0.1          # probability of zeroing an activation in training, in [0, 1)
    batch_size: int = 16          # B: sequences per optimizer step
    lr: float = 1e-3              # peak learning rate of AdamW
    dtype: Literal["float32", "float64"] = "float32"  # float32 to train, float64 for gradient checks

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Refuse wrong types and impossible values with a message naming the key."""
        configlib.check_types(self, "model config")
        for key in ("vocab_size", "n_ctx", "n_emb", "head_size", "n_heads", "n_layers", "batch_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model config key {key!r} must be a positive integer, got {getattr(self, key)}")
        if self.head_size % self.n_heads:
            raise ConfigError(f"head_size ({self.head_size}) must be divisible by n_heads ({self.n_heads}): "
                              f"each head gets head_size / n_heads channels")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model config key 'dropout' must be in [0, 1), got {self.dropout}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"model config key 'lr' must be a positive number, got {self.lr}")

    def to_dict(self):
        return configlib.to_dict(self)

    @classmethod
    def from_dict(cls, data, what="model config"):
        return configlib.from_dict(cls, data, what)



def init_params(config, rng):
    """Parameters as GPT-2 initialises them: N(0, 0.02) weights, zero biases, unit LayerNorm gains; the two
    projections that write into the residual stream are scaled down by sqrt(2 L) so its variance stays put."""
    V, C, H, L = config.vocab_size, config.n_emb, config.head_size, config.n_layers
    F = 4 * C
    dtype = np.dtype(config.dtype)

    def normal(*shape, std=0.02):
        return (rng.standard_normal(shape) * std).astype(dtype)

    resid_std = 0.02 / math.sqrt(2 * L)
    params = {"wte": normal(V, C), "wpe": normal(config.n_ctx, C)}
    for i in range(L):
        params.update({
            f"blocks.{i}.ln_1.w": np.ones(C, dtype), f"blocks.{i}.ln_1.b": np.zeros(C, dtype),
            f"blocks.{i}.attn.w_qkv": normal(C, 3 * H), f"blocks.{i}.attn.b_qkv": np.zeros(3 * H, dtype),
            f"blocks.{i}.attn.w_proj": normal(H, C, std=resid_std), f"blocks.{i}.attn.b_proj": np.zeros(C, dtype),
            f"blocks.{i}.ln_2.w": np.ones(C, dtype), f"blocks.{i}.ln_2.b": np.zeros(C, dtype),
            f"blocks.{i}.mlp.w_fc": normal(C, F), f"blocks.{i}.mlp.b_fc": np.zeros(F, dtype),
            f"blocks.{i}.mlp.w_proj": normal(F, C, std=resid_std), f"blocks.{i}.mlp.b_proj": np.zeros(C, dtype),
        })
    params.update({"ln_f.w": np.ones(C, dtype), "ln_f.b": np.zeros(C, dtype),
                   "lm_head.w": normal(C, V), "lm_head.b": np.zeros(V, dtype)})
    return params


def param_shapes(config):
    """name -> shape of every parameter, in the order of ``init_params``."""
    V, C, H, F = config.vocab_size, config.n_emb, config.head_size, 4 * config.n_emb
    shapes = {"wte": (V, C), "wpe": (config.n_ctx, C)}
    block = {"ln_1.w": (C,), "ln_1.b": (C,), "attn.w_qkv": (C, 3 * H), "attn.b_qkv": (3 * H,),
             "attn.w_proj": (H, C), "attn.b_proj": (C,), "ln_2.w": (C,), "ln_2.b": (C,),
             "mlp.w_fc": (C, F), "mlp.b_fc": (F,), "mlp.w_proj": (F, C), "mlp.b_proj": (C,)}
    for i in range(config.n_layers):
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    shapes.update({"ln_f.w": (C,), "ln_f.b": (C,), "lm_head.w": (C, V), "lm_head.b": (V,)})
    return shapes


def block_params(params, i):
    """The parameters of block i under their short names (``ln_1.w``): no copies, the same arrays."""
    return {name: params[f"blocks.{i}.{name}"] for name in BLOCK_PARAMS}


def gpt_forward(params, config, idx, rng=None):
    """idx (B, T) -> logits (B, T, V), cache. Training mode (dropout) when rng is given and config.dropout > 0."""
    B, T = idx.shape
    tok, tok_cache = token_embedding_forward(idx, params["wte"])    # (B, T, C)
    pos, pos_cache = position_embedding_forward(T, params["wpe"])   # (T, C)
    x = tok + pos                                                   # (B, T, C)
    block_caches = []
    for i in range(config.n_layers):
        x, block_cache = block_forward(x, block_params(params, i), config.n_heads, config.dropout, rng)  # (B, T, C)
        block_caches.append(block_cache)
    x, lnf_cache = layernorm_forward(x, params["ln_f.w"], params["ln_f.b"])  # (B, T, C)
    logits, head_cache = linear_forward(x, params["lm_head.w"], params["lm_head.b"])  # (B, T, V)
    cache = (tok_cache, pos_cache, block_caches, lnf_cache, head_cache)
    return logits, cache


def gpt_backward(dlogits, cache, config):
    """dlogits (B, T, V) -> grads, a dict with exactly the keys and shapes of the parameters.

    The forward read in reverse: head, final LayerNorm, blocks from last to first, then the embeddings.
    """
    tok_cache, pos_cache, block_caches, lnf_cache, head_cache = cache
    grads = {}
    dx, grads["lm_head.w"], grads["lm_head.b"] = linear_backward(dlogits, head_cache)  # (B, T, C)
    dx, grads["ln_f.w"], grads["ln_f.b"] = layernorm_backward(dx, lnf_cache)          # (B, T, C)
    for i in reversed(range(config.n_layers)):
        dx, block_grads = block_backward(dx, block_caches[i])                         # (B, T, C)
        grads.update({f"blocks.{i}.{name}": g for name, g in block_grads.items()})
    # x = tok + pos: both receive dx; pos was broadcast over the batch
    grads["wpe"] = position_embedding_backward(dx, pos_cache)                         # (n_ctx, C)
    grads["wte"] = token_embedding_backward(dx, tok_cache)                            # (V, C)
    return {name: grads[name] for name in param_shapes(config)}  # in the parameters' order


class GPT:
    """A GPT whose parameters are ``self.params``; dropout masks come from ``self.rng`` unless told otherwise."""

    def __init__(self, config: Config, seed: int = 0, params=None):
        config.validate()
        self.config = config
        init_seed, dropout_seed = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.default_rng(dropout_seed)
        self.params = init_params(config, np.random.default_rng(init_seed)) if params is None else params
        check_params(self.params, config)

    @classmethod
    def from_params(cls, config, params, seed=0):
        """Wrap existing arrays (a loaded checkpoint) after checking their names, shapes and dtypes."""
        return cls(config, seed=seed, params=dict(params))

    def _check_idx(self, idx, name="idx"):
        idx = np.asarray(idx)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise BabyError(f"{name} must be a 2-D integer array (B, T), got shape {idx.shape} of {idx.dtype}")
        if idx.shape[1] > self.config.n_ctx:
            raise BabyError(f"{name} has {idx.shape[1]} positions but the model's context n_ctx is "
                            f"{self.config.n_ctx}; crop to the last n_ctx tokens")
        if idx.size and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
            raise BabyError(f"{name} holds token ids outside [0, {self.config.vocab_size})")
        return idx

    def forward(self, idx):
        """idx (B, T) -> logits (B, T, V), evaluation mode (no dropout)."""
        logits, _ = gpt_forward(self.params, self.config, self._check_idx(idx))
        return logits

    def loss(self, idx, targets):
        """Mean cross-entropy of the next-token predictions, evaluation mode."""
        loss, _ = cross_entropy_forward(self.forward(idx), self._check_idx(targets, "targets"))
        return loss

    def loss_and_grads(self, idx, targets, rng=None):
        """Training mode: (loss, grads keyed like params). Dropout masks come from rng (default self.rng)."""
        idx, targets = self._check_idx(idx), self._check_idx(targets, "targets")
        logits, cache = gpt_forward(self.params, self.config, idx, self.rng if rng is None else rng)
        loss, loss_cache = cross_entropy_forward(logits, targets)
        grads = gpt_backward(cross_entropy_backward(loss_cache), cache, self.config)
        return loss, grads

    def num_params(self):
        """The exact number of scalars in ``self.params`` (a test checks the formula against the arrays)."""
        return num_params(self.config)

    def flops_per_token(self):
        return flops_per_token(self.config)

    def grow_vocab(self, new_vocab_size, rng):
        """Append rows to wte and columns to the head for new tokens; existing ids keep their meaning."""
        old = self.config.vocab_size
        if new_vocab_size < old:
            raise BabyError(f"cannot shrink the vocabulary from {old} to {new_vocab_size}")
        extra, C, dtype = new_vocab_size - old, self.config.n_emb, self.params["wte"].dtype
        self.params["wte"] = np.concatenate([self.params["wte"], (rng.standard_normal((extra, C)) * 0.02).astype(dtype)])
        self.params["lm_head.w"] = np.concatenate(
            [self.params["lm_head.w"], (rng.standard_normal((C, extra)) * 0.02).astype(dtype)], axis=1)
        self.params["lm_head.b"] = np.concatenate([self.params["lm_head.b"], np.zeros(extra, dtype)])
        self.config = dataclasses.replace(self.config, vocab_size=new_vocab_size)


def check_params(params, config):
    """Refuse a parameter dict whose names, shapes or dtypes do not match the config, before any compute."""
    expected = param_shapes(config)
    missing, unknown = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or unknown:
        raise BabyError(f"parameters do not match the config: missing {missing[:3]}, unknown {unknown[:3]}")
    for name, shape in expected.items():
        array = params[name]
        if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != np.dtype(config.dtype):
            raise BabyError(f"parameter {name!r} should be {config.dtype} {shape}, got "
                            f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}")


def num_params(config):
    """P = V C + n_ctx C + L (12 C H / 3 ... ) written out:

        embeddings  V*C + n_ctx*C
        per block   4C (two LayerNorms) + C*3H + 3H (qkv) + H*C + C (proj) + C*F + F + F*C + C (MLP), F = 4C
        final       2C (ln_f) + C*V + V (head)
    """
    V, C, H, L, F = config.vocab_size, config.n_emb, config.head_size, config.n_layers, 4 * config.n_emb
    per_block = 4 * C + (C * 3 * H + 3 * H) + (H * C + C) + (C * F + F) + (F * C + C)
    return V * C + config.n_ctx * C + L * per_block + 2 * C + C * V + V


def flops_per_token(config):
    """Training FLOPs per token: 6 per weight of every matmul (2 forward, 4 backward) plus attention's term.

        matmul weights  N = L (3CH + HC + 2CF) + CV
        attention       per layer and token, q @ k^T and att @ v each cost 2 T H forward, so 4 T H,
                        times 3 for forward + backward: 12 L T H, with T = n_ctx (the full T x T is computed)
        total           F = 6 N + 12 L T H
    Element-wise work (LayerNorm, GELU, softmax, AdamW) and the embedding lookups are not counted.
    """
    V, C, H, L, F = config.vocab_size, config.n_emb, config.head_size, config.n_layers, 4 * config.n_emb
    matmul_weights = L * (3 * C * H + H * C + 2 * C * F) + C * V
    return 6 * matmul_weights + 12 * L * config.n_ctx * H
