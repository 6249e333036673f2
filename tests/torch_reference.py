"""An independent PyTorch twin of the NumPy GPT, for the parity tests and the speed benchmarks.

It is written from the architecture spec, not from ``littlebaby/model.py``, so that agreement between the two
means something: here autograd supplies every gradient, there each one is written by hand. Weights are stored
(in, out) like ours, so a linear is ``x @ w + b`` and our parameter dict loads as it is, under the same names.

Dimensions: B batch, T time (<= n_ctx), C n_emb, H head_size, NH n_heads, hs = H // NH, V vocab_size.

Dropout follows our convention exactly so that the two models can share masks: for each block, in order, a
mask for the attention weights (B, NH, T, T), one after the attention projection (B, T, C) and one after the
MLP (B, T, C), each ``keep = rng.random(shape, dtype=np.float32) >= p`` drawn from a NumPy Generator and
applied as ``x * keep / (1 - p)``. Without a mask generator the model runs in eval mode (no dropout) and the
forward pass is plain torch ops, fit for timing.

PyTorch is a test dependency only: nothing under ``littlebaby/`` imports this file.
"""

import math
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

LAYERNORM_EPS = 1e-5
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

Tensor = torch.Tensor
Dropout = Callable[[Tensor], Tensor]


class ModelShape(Protocol):
    """The fields of ``littlebaby.model.Config`` this reference reads (any object carrying them will do)."""

    vocab_size: int
    n_ctx: int
    n_emb: int
    head_size: int
    n_heads: int
    n_layers: int
    dropout: float
    dtype: str


def expected_param_shapes(cfg: ModelShape) -> dict[str, tuple[int, ...]]:
    """Every parameter name of the spec with its shape, in forward order."""
    V, C, H = cfg.vocab_size, cfg.n_emb, cfg.head_size
    shapes = {"wte": (V, C), "wpe": (cfg.n_ctx, C)}
    for i in range(cfg.n_layers):
        block = {
            "ln_1.w": (C,), "ln_1.b": (C,),
            "attn.w_qkv": (C, 3 * H), "attn.b_qkv": (3 * H,),
            "attn.w_proj": (H, C), "attn.b_proj": (C,),
            "ln_2.w": (C,), "ln_2.b": (C,),
            "mlp.w_fc": (C, 4 * C), "mlp.b_fc": (4 * C,),
            "mlp.w_proj": (4 * C, C), "mlp.b_proj": (C,),
        }
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    shapes.update({"ln_f.w": (C,), "ln_f.b": (C,), "lm_head.w": (C, V), "lm_head.b": (V,)})
    return shapes


def no_dropout(x: Tensor) -> Tensor:
    return x


def shared_mask_dropout(p: float, mask_rng: np.random.Generator) -> Dropout:
    """Inverted dropout whose masks come from ``mask_rng`` in call order, exactly as the NumPy model draws them."""

    def drop(x: Tensor) -> Tensor:
        keep = mask_rng.random(tuple(x.shape), dtype=np.float32) >= p  # same shape as x, bool
        return x * torch.from_numpy(keep) / (1 - p)

    return drop


def layer_norm(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """(B, T, C) -> (B, T, C), biased variance, eps 1e-5."""
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=LAYERNORM_EPS)


def causal_self_attention(h: Tensor, p: dict[str, Tensor], n_heads: int, drop: Dropout) -> Tensor:
    """(B, T, C) -> (B, T, C); ``p`` holds this block's ``w_qkv, b_qkv, w_proj, b_proj``."""
    B, T, _ = h.shape
    H = p["w_proj"].shape[0]
    hs = H // n_heads
    qkv = h @ p["w_qkv"] + p["b_qkv"]  # (B, T, 3H)
    q, k, v = qkv.split(H, dim=-1)  # 3 x (B, T, H)
    q = q.view(B, T, n_heads, hs).transpose(1, 2)  # (B, NH, T, hs)
    k = k.view(B, T, n_heads, hs).transpose(1, 2)  # (B, NH, T, hs)
    v = v.view(B, T, n_heads, hs).transpose(1, 2)  # (B, NH, T, hs)
    att = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, NH, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(diagonal=1)  # (T, T) True above the diagonal
    att = att.masked_fill(future, float("-inf")).softmax(dim=-1)  # (B, NH, T, T)
    att = drop(att)  # (B, NH, T, T)
    y = att @ v  # (B, NH, T, hs)
    y = y.transpose(1, 2).reshape(B, T, H)  # (B, T, H) heads side by side
    return y @ p["w_proj"] + p["b_proj"]  # (B, T, C)


def mlp(h: Tensor, p: dict[str, Tensor]) -> Tensor:
    """(B, T, C) -> (B, T, C); ``p`` holds this block's ``w_fc, b_fc, w_proj, b_proj``."""
    u = F.gelu(h @ p["w_fc"] + p["b_fc"], approximate="tanh")  # (B, T, 4C)
    return u @ p["w_proj"] + p["b_proj"]  # (B, T, C)


def block(x: Tensor, p: dict[str, Tensor], n_heads: int, drop: Dropout) -> Tensor:
    """One pre-norm transformer block, (B, T, C) -> (B, T, C); ``p`` is keyed without the ``blocks.i.`` prefix.

    The three ``drop`` calls happen in the order the spec fixes: attention weights, attention output, MLP output.
    """
    attn = {name.removeprefix("attn."): t for name, t in p.items() if name.startswith("attn.")}
    ffn = {name.removeprefix("mlp."): t for name, t in p.items() if name.startswith("mlp.")}
    x = x + drop(causal_self_attention(layer_norm(x, p["ln_1.w"], p["ln_1.b"]), attn, n_heads, drop))  # (B, T, C)
    x = x + drop(mlp(layer_norm(x, p["ln_2.w"], p["ln_2.b"]), ffn))  # (B, T, C)
    return x


class TorchGPT:
    """The reference model: a dict of leaf tensors named like ours, and the forward pass of the spec.

    >>> ref = TorchGPT(cfg, gpt.params)                 # copies our NumPy parameters
    >>> logits = ref.forward(idx)                       # eval mode, a torch tensor (B, T, V)
    >>> loss, grads = ref.loss_and_grads(idx, targets, mask_rng=np.random.default_rng(3))
    """

    def __init__(self, cfg: ModelShape, params: dict[str, np.ndarray]):
        expected = expected_param_shapes(cfg)
        got = {name: tuple(np.shape(a)) for name, a in params.items()}
        if got != expected:
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            wrong = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
            raise ValueError(f"parameters do not match the spec: missing {missing}, unexpected {extra}, "
                             f"wrong shape {[(n, got[n], expected[n]) for n in wrong]}")
        if cfg.dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype {cfg.dtype!r} is not one of {sorted(TORCH_DTYPES)}")
        self.cfg = cfg
        self.dtype = TORCH_DTYPES[cfg.dtype]
        self.params = {name: torch.tensor(np.asarray(params[name]), dtype=self.dtype, requires_grad=True)
                       for name in expected}

    def block_params(self, i: int) -> dict[str, Tensor]:
        prefix = f"blocks.{i}."
        return {name.removeprefix(prefix): t for name, t in self.params.items() if name.startswith(prefix)}

    def forward(self, idx, mask_rng: np.random.Generator | None = None) -> Tensor:
        """Token ids (B, T) -> logits (B, T, V). Dropout only when ``mask_rng`` is given and p > 0."""
        idx = torch.as_tensor(idx, dtype=torch.long)  # (B, T)
        T = idx.shape[1]
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds n_ctx {self.cfg.n_ctx}")
        p = self.cfg.dropout
        drop = shared_mask_dropout(p, mask_rng) if (mask_rng is not None and p > 0) else no_dropout
        x = self.params["wte"][idx] + self.params["wpe"][:T]  # (B, T, C)
        for i in range(self.cfg.n_layers):
            x = block(x, self.block_params(i), self.cfg.n_heads, drop)  # (B, T, C)
        x = layer_norm(x, self.params["ln_f.w"], self.params["ln_f.b"])  # (B, T, C)
        return x @ self.params["lm_head.w"] + self.params["lm_head.b"]  # (B, T, V)

    def loss(self, idx, targets, mask_rng: np.random.Generator | None = None) -> Tensor:
        """Mean cross-entropy over all B*T positions, a scalar tensor still attached to the graph."""
        logits = self.forward(idx, mask_rng)  # (B, T, V)
        targets = torch.as_tensor(targets, dtype=torch.long)  # (B, T)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def loss_and_grads(self, idx, targets, mask_rng: np.random.Generator | None = None
                       ) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and the gradient of every parameter, as NumPy arrays keyed like ``self.params``."""
        loss = self.loss(idx, targets, mask_rng)
        grads = torch.autograd.grad(loss, list(self.params.values()))
        return loss.item(), {name: g.numpy() for name, g in zip(self.params, grads)}

    def numpy_params(self) -> dict[str, np.ndarray]:
        return {name: t.detach().numpy().copy() for name, t in self.params.items()}
