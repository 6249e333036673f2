"""The GPT: its config, parameter init, ``gpt_forward`` / ``gpt_backward``, parameter count and FLOPs.

Parameters (a plain dict of arrays, weights stored (in, out)):

    wte (V, C)  token embedding            wpe (n_ctx, C)  position embedding
    blocks.{i}.ln_1.w, ln_1.b (C,)         blocks.{i}.attn.w_qkv (C, 3H), attn.b_qkv (3H,)
    blocks.{i}.attn.w_proj (H, C), .b (C,) blocks.{i}.ln_2.w, ln_2.b (C,)
    blocks.{i}.mlp.w_fc (C, F), b_fc (F,)  blocks.{i}.mlp.w_proj (F, C), b_proj (C,)
    ln_f.w, ln_f.b (C,)                    lm_head.w (C, V), lm_head.b (V,)
The switches change this list (``param_shapes`` gives each variant's): mixture of heads adds attn.w_gate
(C, NH) and attn.b_gate (NH,) and projects from hs; experts replace mlp.* with moe.* stacked per expert;
weight tying drops lm_head.w.

Activations cached by one training forward (what the backward keeps alive), per layer:
    ln_1, ln_2: xhat (B, T, C) and rstd (B, T, 1);   attn: input (B, T, C), qkv (B, T, 3H),
    softmax output (B, NH, T, T) in causal blocks of queries (62.5% of it from T = 128, 75% at T = 64 to 127,
    see nn.attention.query_blocks), dropout mask (B, NH, T, T) bool, head outputs (B, T, H);
    mlp: input (B, T, C), pre-GELU (B, T, F), GELU gate 0.5 (1 + tanh) (B, T, F), GELU output (B, T, F);
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
from littlebaby.nn.backend import array_module
from littlebaby.nn.block import MIXER_PARAMS, NETWORK_PARAMS


@dataclasses.dataclass
class Config(configlib.TypedConfig):
    """The model's shape and the seed's training hyperparameters. JSON keys are the field names."""
    WHAT = "model config"

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
    c_sequence: Literal["pre", "post"] = "pre"    # LayerNorm before each sublayer, or after each residual add
    c_attention: Literal["mha", "moh"] = "mha"    # multi-head attention, or mixture of heads (gated head sum)
    c_network: Literal["mlp", "moe"] = "mlp"      # one MLP, or a mixture of MLP experts
    n_experts: int = 4            # NE: experts per block when c_network = "moe"
    moe_top_k: int = 0            # 0: dense soft gate, every expert runs; k > 0: each token runs its top k experts
    moe_expansion: int = 4        # an expert's hidden width is moe_expansion * n_emb
    moe_aux_weight: float = 0.01  # weight of the load-balancing loss (sparse routing only)
    weight_tying: bool = False    # the LM head reuses the token embedding (lm_head.w is wte transposed)

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Refuse wrong types and impossible values with a message naming the key."""
        configlib.check_types(self, "model config")
        for key in ("vocab_size", "n_ctx", "n_emb", "head_size", "n_heads", "n_layers", "batch_size",
                    "n_experts", "moe_expansion"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model config key {key!r} must be a positive integer, got {getattr(self, key)}")
        if self.head_size % self.n_heads:
            raise ConfigError(f"head_size ({self.head_size}) must be divisible by n_heads ({self.n_heads}): "
                              f"each head gets head_size / n_heads channels")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model config key 'dropout' must be in [0, 1), got {self.dropout}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"model config key 'lr' must be a positive number, got {self.lr}")
        if not 0 <= self.moe_top_k <= self.n_experts:
            raise ConfigError(f"moe_top_k ({self.moe_top_k}) must be between 0 (dense) and n_experts "
                              f"({self.n_experts})")
        if not self.moe_aux_weight >= 0:
            raise ConfigError(f"model config key 'moe_aux_weight' must be >= 0, got {self.moe_aux_weight}")




def param_shapes(config):
    """name -> shape of every parameter the config's variant has, in a fixed order."""
    V, C, H, NH = config.vocab_size, config.n_emb, config.head_size, config.n_heads
    shapes = {"wte": (V, C), "wpe": (config.n_ctx, C)}
    block = {"ln_1.w": (C,), "ln_1.b": (C,), "attn.w_qkv": (C, 3 * H), "attn.b_qkv": (3 * H,)}
    if config.c_attention == "mha":
        block.update({"attn.w_proj": (H, C), "attn.b_proj": (C,)})
    else:  # mixture of heads: a gate over the heads, and a projection from one head's width
        block.update({"attn.w_gate": (C, NH), "attn.b_gate": (NH,), "attn.w_proj": (H // NH, C), "attn.b_proj": (C,)})
    block.update({"ln_2.w": (C,), "ln_2.b": (C,)})
    if config.c_network == "mlp":
        F = 4 * C
        block.update({"mlp.w_fc": (C, F), "mlp.b_fc": (F,), "mlp.w_proj": (F, C), "mlp.b_proj": (C,)})
    else:
        NE, F = config.n_experts, config.moe_expansion * C
        block.update({"moe.w_gate": (C, NE), "moe.b_gate": (NE,), "moe.w_fc": (NE, C, F), "moe.b_fc": (NE, F),
                      "moe.w_proj": (NE, F, C), "moe.b_proj": (NE, C)})
    for i in range(config.n_layers):
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    shapes.update({"ln_f.w": (C,), "ln_f.b": (C,)})
    if not config.weight_tying:
        shapes["lm_head.w"] = (C, V)
    shapes["lm_head.b"] = (V,)
    return shapes


def init_params(config, rng):
    """Parameters as GPT-2 initialises them: N(0, 0.02) weights, zero biases, unit LayerNorm gains; the
    projections that write into the residual stream (``w_proj``) are scaled down by sqrt(2 L) so the stream's
    variance does not grow with depth."""
    dtype = np.dtype(config.dtype)
    resid_std = 0.02 / math.sqrt(2 * config.n_layers)
    params = {}
    for name, shape in param_shapes(config).items():
        leaf = name.rsplit(".", 1)[-1]                  # "w", "b", "w_qkv", "b_fc", "wte", ...
        if leaf.startswith("b"):
            params[name] = np.zeros(shape, dtype)
        elif name.startswith("ln") or ".ln_" in name:
            params[name] = np.ones(shape, dtype)
        else:
            std = resid_std if leaf == "w_proj" else 0.02
            params[name] = (rng.standard_normal(shape) * std).astype(dtype)
    return params


def block_params(params, config, i):
    """The parameters of block i under their short names (``ln_1.w``): no copies, the same arrays."""
    names = ("ln_1.w", "ln_1.b", "ln_2.w", "ln_2.b") + MIXER_PARAMS[config.c_attention] + \
        NETWORK_PARAMS[config.c_network]
    return {name: params[f"blocks.{i}.{name}"] for name in names}


def head_weight(params, config):
    """lm_head.w (C, V), or the token embedding transposed (a view) when the weights are tied."""
    return params["wte"].T if config.weight_tying else params["lm_head.w"]


def gpt_forward(params, config, idx, rng=None, kv_cache=None):
    """idx (B, T) -> logits (B, T, V), cache. Training mode (dropout) when rng is given and config.dropout > 0.

    The cache's last item is the summed auxiliary loss of the blocks (mixture-of-experts load balancing; 0.0
    otherwise), which the training loss adds to the cross-entropy.

    With a ``kv_cache`` (generation, see littlebaby.kvcache) idx holds only the new tokens: they take positions
    kv_cache.length .. and attend to everything cached before them.
    """
    idx = array_module(params["wte"]).asarray(idx)                  # (B, T) on the parameters' device
    B, T = idx.shape
    start = 0 if kv_cache is None else kv_cache.length
    tok, tok_cache = token_embedding_forward(idx, params["wte"])    # (B, T, C)
    pos, pos_cache = position_embedding_forward(T, params["wpe"], start)  # (T, C)
    x = tok + pos                                                   # (B, T, C)
    block_caches, aux_loss = [], 0.0
    for i in range(config.n_layers):
        kv = None if kv_cache is None else kv_cache.slot(i)
        x, aux, block_cache = block_forward(x, block_params(params, config, i), config, rng, kv)  # (B, T, C)
        block_caches.append(block_cache)
        aux_loss += aux
    x, lnf_cache = layernorm_forward(x, params["ln_f.w"], params["ln_f.b"])  # (B, T, C)
    logits, head_cache = linear_forward(x, head_weight(params, config), params["lm_head.b"])  # (B, T, V)
    cache = (tok_cache, pos_cache, block_caches, lnf_cache, head_cache, aux_loss)
    if kv_cache is not None:
        kv_cache.advance(T)
    return logits, cache


def gpt_backward(dlogits, cache, config):
    """dlogits (B, T, V) -> grads, a dict with exactly the keys and shapes of the parameters.

    The forward read in reverse: head, final LayerNorm, blocks from last to first, then the embeddings.
    """
    tok_cache, pos_cache, block_caches, lnf_cache, head_cache, _ = cache
    grads = {}
    dx, dhead_w, grads["lm_head.b"] = linear_backward(dlogits, head_cache)           # (B, T, C)
    dx, grads["ln_f.w"], grads["ln_f.b"] = layernorm_backward(dx, lnf_cache)          # (B, T, C)
    for i in reversed(range(config.n_layers)):
        dx, block_grads = block_backward(dx, block_caches[i])                         # (B, T, C)
        grads.update({f"blocks.{i}.{name}": g for name, g in block_grads.items()})
    # x = tok + pos: both receive dx; pos was broadcast over the batch
    grads["wpe"] = position_embedding_backward(dx, pos_cache)                         # (n_ctx, C)
    grads["wte"] = token_embedding_backward(dx, tok_cache)                            # (V, C)
    if config.weight_tying:  # wte is read twice, by the embedding and (transposed) by the head: sum both
        grads["wte"] += dhead_w.T
    else:
        grads["lm_head.w"] = dhead_w
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

    def move_to(self, xp):
        """Put the parameters in the memory of array module ``xp`` (NumPy: the CPU; CuPy: the current GPU) and
        return self. Layers follow their inputs (see ``littlebaby.nn.backend``), so nothing else changes; make
        the optimizer after the move, since its moments are made like the parameters."""
        self.params = {name: xp.asarray(p) for name, p in self.params.items()}
        return self

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
        """Training mode: (loss, grads keyed like params). Dropout masks come from rng (default self.rng).

        The loss is the one the gradients differentiate: cross-entropy plus, with sparse experts, the weighted
        load-balancing loss. ``loss()`` (evaluation) is the cross-entropy alone.
        """
        idx, targets = self._check_idx(idx), self._check_idx(targets, "targets")
        logits, cache = gpt_forward(self.params, self.config, idx, self.rng if rng is None else rng)
        loss, loss_cache = cross_entropy_forward(logits, targets)
        grads = gpt_backward(cross_entropy_backward(loss_cache), cache, self.config)
        return loss + cache[-1], grads  # cache[-1]: the experts' load-balancing loss, 0.0 without sparse experts

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
        xp = array_module(self.params["wte"])

        def new_rows(shape):  # N(0, 0.02) drawn on the host, then put where the parameters are
            return xp.asarray((rng.standard_normal(shape) * 0.02).astype(dtype))

        self.params["wte"] = xp.concatenate([self.params["wte"], new_rows((extra, C))])
        if not self.config.weight_tying:
            self.params["lm_head.w"] = xp.concatenate([self.params["lm_head.w"], new_rows((C, extra))], axis=1)
        self.params["lm_head.b"] = xp.concatenate([self.params["lm_head.b"], xp.zeros(extra, dtype)])
        self.config = dataclasses.replace(self.config, vocab_size=new_vocab_size)


def check_params(params, config):
    """Refuse a parameter dict whose names, shapes or dtypes do not match the config, before any compute."""
    expected = param_shapes(config)
    missing, unknown = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or unknown:
        raise BabyError(f"parameters do not match the config: missing {missing[:3]}, unknown {unknown[:3]}")
    for name, shape in expected.items():
        array = params[name]
        if getattr(array, "shape", None) != shape or getattr(array, "dtype", None) != np.dtype(config.dtype):
            raise BabyError(f"parameter {name!r} should be {config.dtype} {shape}, got "
                            f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}")


def num_params(config):
    """The exact parameter count, written out part by part (F = 4C; for experts Fe = moe_expansion * C):

        embeddings      V*C + n_ctx*C
        per block       4C (two LayerNorms) + C*3H + 3H (Q, K, V)
          mha           + H*C + C (output projection)
          moh           + C*NH + NH (gate) + hs*C + C (projection from one head's width)
          mlp           + C*F + F + F*C + C
          moe           + C*NE + NE (gate) + NE * (C*Fe + Fe + Fe*C + C)
        final           2C (ln_f) + C*V (head, absent when tied to wte) + V (head bias)
    """
    V, C, H, NH, L = config.vocab_size, config.n_emb, config.head_size, config.n_heads, config.n_layers
    per_block = 4 * C + C * 3 * H + 3 * H
    if config.c_attention == "mha":
        per_block += H * C + C
    else:
        per_block += C * NH + NH + (H // NH) * C + C
    if config.c_network == "mlp":
        per_block += 2 * C * 4 * C + 4 * C + C
    else:
        NE, Fe = config.n_experts, config.moe_expansion * C
        per_block += C * NE + NE + NE * (2 * C * Fe + Fe + C)
    head = (0 if config.weight_tying else C * V) + V
    return V * C + config.n_ctx * C + L * per_block + 2 * C + head


def flops_per_token(config):
    """Training FLOPs per token: 6 per weight of every matmul a token goes through (2 forward, 4 backward),
    plus attention's T-dependent term.

        matmul weights   N = L (3CH + mixer + network) + CV
          mha            HC                    moh   C*NH (gate) + hs*C, plus H: the gated head sum costs 2H
          mlp            2CF                   moe   C*NE (gate) + 2 C Fe per expert that runs (all NE when
                                                     dense, moe_top_k when sparse)
        attention        per layer and token, q @ k^T and att @ v each cost 2 T H forward, so 4 T H, times 3
                         for forward + backward: 12 L T H, with T = n_ctx (the full T x T is computed)
        total            F = 6 N + 12 L T H
    Element-wise work (LayerNorm, GELU, softmax, AdamW) and the embedding lookups are not counted.
    """
    V, C, H, NH, L = config.vocab_size, config.n_emb, config.head_size, config.n_heads, config.n_layers
    per_block = 3 * C * H
    if config.c_attention == "mha":
        per_block += H * C
    else:
        per_block += C * NH + (H // NH) * C + H  # the gated head sum costs 2H forward, like H matmul weights
    if config.c_network == "mlp":
        per_block += 2 * C * 4 * C
    else:
        running = config.moe_top_k or config.n_experts
        per_block += C * config.n_experts + running * 2 * C * config.moe_expansion * C
    matmul_weights = L * per_block + C * V
    return 6 * matmul_weights + 12 * L * config.n_ctx * H
