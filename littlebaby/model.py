"""The GPT: its config, parameter init, ``gpt_forward`` / ``gpt_backward``, parameter count and FLOPs.

Parameters (a plain dict of arrays, weights stored (in, out)):

    wte (V, C)  token embedding            wpe (n_ctx, C)  position embedding
    blocks.{i}.ln_1.w, ln_1.b (C,)         blocks.{i}.attn.w_qkv (C, 3H), attn.b_qkv (3H,)
    blocks.{i}.attn.w_proj (H, C), .b (C,) blocks.{i}.ln_2.w, ln_2.b (C,)
    blocks.{i}.mlp.w_fc (C, F), b_fc (F,)  blocks.{i}.mlp.w_proj (F, C), b_proj (C,)
    ln_f.w, ln_f.b (C,)                    lm_head.w (C, V), lm_head.b (V,)
The switches change this list (``param_shapes`` gives each variant's): mixture of heads adds attn.w_gate
(C, NH) and attn.b_gate (NH,) and projects from hs; experts replace mlp.* with moe.* stacked per expert;
weight tying drops lm_head.w; ``qkv_bias = False`` drops attn.b_qkv and ``gate_bias = False`` the gates' b_gate
(the layout of the original notebook, see docs/IMPORT.md); ``lm_head_bias = False`` drops lm_head.b
(GPT-2's head: tied, no bias).

Activations cached by one training forward (what the backward keeps alive), per layer:
    ln_1, ln_2: xhat (B, T, C) and rstd (B, T, 1);   attn: input (B, T, C), qkv (B, T, 3H),
    softmax output (B, NH, T, T) in causal blocks of queries (75% of it at T = 64 to 95, 66.7% at 96 to
    127, 62.5% from 128; all of it below 64: see nn.attention.query_blocks), dropout mask (B, NH, T, T) bool,
    head outputs (B, T, H);
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
from littlebaby import seeds
from littlebaby.config import option
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
    """The model's shape, its architecture switches, and the training settings the seed keeps with the model.
    Each field is an option (see littlebaby.config): a keyword of littlebaby.train, a JSON key, a flag of
    `baby train`. The defaults are the model `baby train` trains. Building a Config validates it."""
    WHAT = "model config"
    FINETUNE_SETS = False      # a finetune keeps the parent's model, but for the fields marked finetune=True

    vocab_size: int = option(65, "V: number of distinct tokens", within="[1, inf)", set_by="the tokenizer")
    n_ctx: int = option(64, "the context length: how many tokens the model sees at once", within="[1, inf)")
    n_emb: int = option(128, "C: width of the residual stream", within="[1, inf)")
    head_size: int = option(128, "H: total width of Q, K, V across all heads; may differ from n_emb",
                            within="[1, inf)")
    n_heads: int = option(4, "NH: attention heads; head_size must divide by it", within="[1, inf)")
    n_layers: int = option(4, "L: transformer blocks", within="[1, inf)")
    dropout: float = option(0.1, "probability of zeroing an activation in training", within="[0, 1)",
                            finetune=True)
    batch_size: int = option(16, "B: sequences per optimizer step", within="[1, inf)", finetune=True)
    lr: float = option(2e-3, "peak learning rate of AdamW", within="(0, inf)", finetune=True)
    dtype: Literal["float32", "float64"] = option("float32", "float32 to train, float64 for gradient checks")
    c_sequence: Literal["pre", "post"] = option("pre", "LayerNorm before each sublayer, or after each residual "
                                                "add", group="switches")
    c_attention: Literal["mha", "moh"] = option("mha", "multi-head attention, or mixture of heads: a gated sum "
                                                "of the heads", group="switches")
    c_network: Literal["mlp", "moe"] = option("mlp", "one MLP, or a mixture of MLP experts", group="switches")
    n_experts: int = option(4, "NE: experts per block with c_network moe", within="[1, inf)", group="switches")
    moe_top_k: int = option(0, "0: a dense soft gate, every expert runs; K: each token runs its K best experts",
                            within="[0, inf)", group="switches", metavar="K")
    moe_expansion: int = option(4, "an expert's hidden width, in multiples of n_emb", within="[1, inf)",
                                group="switches")
    moe_aux_weight: float = option(0.01, "weight of the load-balancing loss, with sparse routing only",
                                   within="[0, inf)", group="switches")
    weight_tying: bool = option(False, "the LM head reuses the token embedding: lm_head.w is wte transposed",
                                group="switches")
    qkv_bias: bool = option(True, "Q, K, V have a bias attn.b_qkv (off: none, as in the original notebook)",
                            group="switches")
    gate_bias: bool = option(True, "the gates of mixture of heads and of experts have a bias (off: none)",
                             group="switches")
    lm_head_bias: bool = option(True, "the LM head adds a learned bias lm_head.b (V,); GPT-2's head has none",
                                group="switches")

    def validate(self):
        """Types and intervals (littlebaby.config), then the checks that tie fields together."""
        super().validate()
        if self.head_size % self.n_heads:
            raise ConfigError(f"head_size ({self.head_size}) must be divisible by n_heads ({self.n_heads}): "
                              f"each head gets head_size / n_heads channels")
        if self.moe_top_k > self.n_experts:
            raise ConfigError(f"moe_top_k ({self.moe_top_k}) must be between 0 (dense) and n_experts "
                              f"({self.n_experts})")


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
    for name in switched_off_biases(config):
        block.pop(name, None)  # the gates' biases are in the list whether or not the variant has a gate
    for i in range(config.n_layers):
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    shapes.update({"ln_f.w": (C,), "ln_f.b": (C,)})
    if not config.weight_tying:
        shapes["lm_head.w"] = (C, V)
    if config.lm_head_bias:
        shapes["lm_head.b"] = (V,)
    return shapes


def switched_off_biases(config):
    """The block biases the config leaves out (short names): ``qkv_bias = False`` drops attn.b_qkv,
    ``gate_bias = False`` the gates' attn.b_gate and moe.b_gate. The original notebook has neither."""
    return (() if config.qkv_bias else ("attn.b_qkv",)) + (() if config.gate_bias else ("attn.b_gate", "moe.b_gate"))


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
    """The parameters of block i under their short names (``ln_1.w``): no copies, the same arrays.

    A bias the config leaves out (``switched_off_biases``) is given as zeros: ``x @ w + 0`` is ``x @ w`` exactly,
    so the layers need no second path, and its gradient, which the block's backward still returns, is dropped by
    ``gpt_backward`` (gradients keep exactly the keys of the parameters).
    """
    names = ("ln_1.w", "ln_1.b", "ln_2.w", "ln_2.b") + MIXER_PARAMS[config.c_attention] + \
        NETWORK_PARAMS[config.c_network]
    absent = [name for name in switched_off_biases(config) if name in names]
    p = {name: params[f"blocks.{i}.{name}"] for name in names if name not in absent}
    if absent:
        xp, dtype = array_module(params["wte"]), params["wte"].dtype
        width = {"attn.b_qkv": 3 * config.head_size, "attn.b_gate": config.n_heads, "moe.b_gate": config.n_experts}
        p.update({name: xp.zeros(width[name], dtype) for name in absent})  # (3H,), (NH,) or (NE,)
    return p


def head_weight(params, config):
    """lm_head.w (C, V), or the token embedding transposed (a view) when the weights are tied."""
    return params["wte"].T if config.weight_tying else params["lm_head.w"]


def head_bias(params, config):
    """lm_head.b (V,), or zeros (V,) when the head has no bias: the head stays one linear layer, whose bias
    gradient gpt_backward then drops."""
    if config.lm_head_bias:
        return params["lm_head.b"]
    wte = params["wte"]
    return array_module(wte).zeros(config.vocab_size, dtype=wte.dtype)      # (V,)


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
    logits, head_cache = linear_forward(x, head_weight(params, config), head_bias(params, config))  # (B, T, V)
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
    dx, dhead_w, dhead_b = linear_backward(dlogits, head_cache)                      # (B, T, C)
    if config.lm_head_bias:
        grads["lm_head.b"] = dhead_b
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
        self.config = config
        self.rng = seeds.dropout_rng(seed)
        self.params = init_params(config, seeds.init_rng(seed)) if params is None else params
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
        if self.config.lm_head_bias:
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
        per block       4C (two LayerNorms) + C*3H + 3H (Q, K, V; the 3H bias absent when qkv_bias is off)
          mha           + H*C + C (output projection)
          moh           + C*NH + NH (gate; NH absent when gate_bias is off) + hs*C + C (projection from one head)
          mlp           + C*F + F + F*C + C
          moe           + C*NE + NE (gate; NE absent when gate_bias is off) + NE * (C*Fe + Fe + Fe*C + C)
        final           2C (ln_f) + C*V (head, absent when tied to wte) + V (head bias, absent without one)
    """
    V, C, H, NH, L = config.vocab_size, config.n_emb, config.head_size, config.n_heads, config.n_layers
    per_block = 4 * C + C * 3 * H + (3 * H if config.qkv_bias else 0)
    if config.c_attention == "mha":
        per_block += H * C + C
    else:
        per_block += C * NH + (NH if config.gate_bias else 0) + (H // NH) * C + C
    if config.c_network == "mlp":
        per_block += 2 * C * 4 * C + 4 * C + C
    else:
        NE, Fe = config.n_experts, config.moe_expansion * C
        per_block += C * NE + (NE if config.gate_bias else 0) + NE * (2 * C * Fe + Fe + C)
    head = (0 if config.weight_tying else C * V) + (V if config.lm_head_bias else 0)
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
