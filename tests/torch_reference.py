"""An independent PyTorch twin of the NumPy GPT, for the parity tests and the speed benchmarks.

It is written from the architecture spec, not from ``littlebaby/model.py``, so that agreement between the two
means something: here autograd supplies every gradient, there each one is written by hand. Weights are stored
(in, out) like ours, so a linear is ``x @ w + b`` and our parameter dict loads as it is, under the same names.

Dimensions: B batch, T time (<= n_ctx), C n_emb, H head_size, NH n_heads, hs = H // NH, V vocab_size,
NE n_experts, F an MLP's hidden width (4C for the MLP, moe_expansion * C for an expert), N = B * T tokens.

The architecture switches (``littlebaby.model.Config``'s names; the defaults give the core GPT):
- ``c_sequence``: "pre" normalises each sublayer's input, ``x + drop(f(ln(x)))``; "post" normalises after each
  residual add, ``ln(x + drop(f(x)))``. The final ``ln_f`` runs in both.
- ``c_attention``: "mha" concatenates the heads and projects (H -> C); "moh" (mixture of heads) weights each
  token's heads by a softmax gate ``softmax(h @ w_gate + b_gate)`` over NH, sums them to width hs and projects
  (hs -> C).
- ``c_network``: "mlp", or "moe": NE MLP experts and a softmax gate over them. Dense (``moe_top_k = 0``): every
  expert's output weighted by its gate probability. Sparse (``moe_top_k = k``): each token keeps its k largest
  gate logits and weights those experts by the softmax of the kept logits; the others get weight 0. Sparse
  routing adds ``moe_aux_weight * NE * sum_e f_e * P_e`` to the training loss, with f_e the fraction of the N*k
  routed slots that chose expert e (a constant: no gradient flows through the choice) and P_e the mean gate
  probability of e over the N tokens.
- ``weight_tying``: the head is ``x @ wte.T + lm_head.b`` and there is no ``lm_head.w``.
- ``qkv_bias`` off: Q, K and V are ``h @ w_qkv`` with no ``b_qkv``; ``gate_bias`` off: the gates of mixture of
  heads and of experts are ``h @ w_gate`` with no ``b_gate``. Both off is the original notebook's layout.
- ``lm_head_bias``: False drops ``lm_head.b``, the head is ``x @ head`` (GPT-2's head, with weight tying).

Dropout follows our convention exactly so that the two models can share masks: for each block, in order, a
mask for the attention weights (B, NH, T, T), one after the attention (B, T, C) and one after the MLP or the
experts (B, T, C), each ``keep = rng.random(shape, dtype=np.float32) >= p`` drawn from a NumPy Generator and
applied as ``x * keep / (1 - p)``. Without a mask generator the model runs in eval mode (no dropout) and the
forward pass is plain torch ops, fit for timing.

PyTorch is a test dependency only: nothing under ``littlebaby/`` imports this file.
"""

import dataclasses
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
    """The fields of ``littlebaby.model.Config`` this reference reads (any object carrying them will do).

    The architecture switches are optional: an object without them describes the core GPT (see ``Variant``).
    """

    vocab_size: int
    n_ctx: int
    n_emb: int
    head_size: int
    n_heads: int
    n_layers: int
    dropout: float
    dtype: str


@dataclasses.dataclass(frozen=True)
class Variant:
    """The architecture switches, named as in ``littlebaby.model.Config``; the defaults are the core GPT."""

    c_sequence: str = "pre"        # "pre" or "post": LayerNorm before each sublayer or after each residual add
    c_attention: str = "mha"       # "mha" or "moh": concatenated heads, or a gated sum of heads
    c_network: str = "mlp"         # "mlp" or "moe": one MLP, or a mixture of MLP experts
    n_experts: int = 4             # NE
    moe_top_k: int = 0             # 0: dense gate; k: each token runs its k highest-gated experts
    moe_expansion: int = 4         # an expert's hidden width is moe_expansion * C
    moe_aux_weight: float = 0.01   # weight of the load-balancing loss (sparse routing only)
    weight_tying: bool = False     # the head reuses wte (transposed)
    qkv_bias: bool = True          # Q, K, V have the bias b_qkv
    gate_bias: bool = True         # the gates (mixture of heads, of experts) have the bias b_gate
    lm_head_bias: bool = True      # the head adds lm_head.b

    @classmethod
    def of(cls, cfg) -> "Variant":
        """The switches ``cfg`` carries, the core GPT's for any it lacks; refuses values the spec does not name."""
        variant = cls(**{f.name: getattr(cfg, f.name, f.default) for f in dataclasses.fields(cls)})
        choices = {"c_sequence": ("pre", "post"), "c_attention": ("mha", "moh"), "c_network": ("mlp", "moe")}
        for key, allowed in choices.items():
            if getattr(variant, key) not in allowed:
                raise ValueError(f"{key} {getattr(variant, key)!r} is not one of {allowed}")
        if not 0 <= variant.moe_top_k <= variant.n_experts:
            raise ValueError(f"moe_top_k {variant.moe_top_k} is not in [0, n_experts = {variant.n_experts}]")
        return variant


def expected_param_shapes(cfg: ModelShape) -> dict[str, tuple[int, ...]]:
    """Every parameter name of the spec with its shape, in forward order."""
    V, C, H, NH = cfg.vocab_size, cfg.n_emb, cfg.head_size, cfg.n_heads
    variant = Variant.of(cfg)
    block = {"ln_1.w": (C,), "ln_1.b": (C,), "attn.w_qkv": (C, 3 * H), "attn.b_qkv": (3 * H,)}
    if variant.c_attention == "mha":
        block.update({"attn.w_proj": (H, C), "attn.b_proj": (C,)})
    else:
        block.update({"attn.w_gate": (C, NH), "attn.b_gate": (NH,), "attn.w_proj": (H // NH, C),
                      "attn.b_proj": (C,)})
    block.update({"ln_2.w": (C,), "ln_2.b": (C,)})
    if variant.c_network == "mlp":
        block.update({"mlp.w_fc": (C, 4 * C), "mlp.b_fc": (4 * C,), "mlp.w_proj": (4 * C, C), "mlp.b_proj": (C,)})
    else:
        NE, Fe = variant.n_experts, variant.moe_expansion * C
        block.update({"moe.w_gate": (C, NE), "moe.b_gate": (NE,), "moe.w_fc": (NE, C, Fe), "moe.b_fc": (NE, Fe),
                      "moe.w_proj": (NE, Fe, C), "moe.b_proj": (NE, C)})
    if not variant.qkv_bias:
        del block["attn.b_qkv"]
    if not variant.gate_bias:
        block = {name: shape for name, shape in block.items() if name not in ("attn.b_gate", "moe.b_gate")}
    shapes = {"wte": (V, C), "wpe": (cfg.n_ctx, C)}
    for i in range(cfg.n_layers):
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    shapes.update({"ln_f.w": (C,), "ln_f.b": (C,)})
    if not variant.weight_tying:
        shapes["lm_head.w"] = (C, V)
    if variant.lm_head_bias:
        shapes["lm_head.b"] = (V,)
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


def attention_heads(h: Tensor, w_qkv: Tensor, b_qkv: Tensor | None, n_heads: int, drop: Dropout) -> Tensor:
    """(B, T, C) -> (B, NH, T, hs): each head's causal attention output, before the heads are combined.
    ``b_qkv`` None: Q, K and V have no bias."""
    B, T, _ = h.shape
    H = w_qkv.shape[1] // 3
    hs = H // n_heads
    qkv = h @ w_qkv if b_qkv is None else h @ w_qkv + b_qkv  # (B, T, 3H)
    q, k, v = qkv.split(H, dim=-1)  # 3 x (B, T, H)
    q = q.view(B, T, n_heads, hs).transpose(1, 2)  # (B, NH, T, hs)
    k = k.view(B, T, n_heads, hs).transpose(1, 2)  # (B, NH, T, hs)
    v = v.view(B, T, n_heads, hs).transpose(1, 2)  # (B, NH, T, hs)
    att = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, NH, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(diagonal=1)  # (T, T) True above the diagonal
    att = att.masked_fill(future, float("-inf")).softmax(dim=-1)  # (B, NH, T, T)
    att = drop(att)  # (B, NH, T, T)
    return att @ v  # (B, NH, T, hs)


def causal_self_attention(h: Tensor, p: dict[str, Tensor], n_heads: int, drop: Dropout) -> Tensor:
    """(B, T, C) -> (B, T, C); ``p`` holds this block's ``w_qkv, b_qkv, w_proj, b_proj`` (b_qkv may be absent)."""
    B, T, _ = h.shape
    y = attention_heads(h, p["w_qkv"], p.get("b_qkv"), n_heads, drop)  # (B, NH, T, hs)
    y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, H) heads side by side
    return y @ p["w_proj"] + p["b_proj"]  # (B, T, C)


def mixture_of_heads(h: Tensor, p: dict[str, Tensor], n_heads: int, drop: Dropout) -> Tensor:
    """(B, T, C) -> (B, T, C); ``p`` holds ``w_qkv, b_qkv, w_gate, b_gate, w_proj (hs, C), b_proj`` (either bias
    may be absent)."""
    y = attention_heads(h, p["w_qkv"], p.get("b_qkv"), n_heads, drop)  # (B, NH, T, hs)
    gate_logits = h @ p["w_gate"] if "b_gate" not in p else h @ p["w_gate"] + p["b_gate"]  # (B, T, NH)
    gate = torch.softmax(gate_logits, dim=-1)  # (B, T, NH) a distribution over the heads
    mixed = torch.einsum("btn,bntd->btd", gate, y)  # (B, T, hs) sum over heads of gate * head output
    return mixed @ p["w_proj"] + p["b_proj"]  # (B, T, C)


def mlp(h: Tensor, p: dict[str, Tensor]) -> Tensor:
    """(..., C) -> (..., C); ``p`` holds ``w_fc, b_fc, w_proj, b_proj``."""
    u = F.gelu(h @ p["w_fc"] + p["b_fc"], approximate="tanh")  # (..., F)
    return u @ p["w_proj"] + p["b_proj"]  # (..., C)


def expert_weights(gate_logits: Tensor, top_k: int) -> Tensor:
    """(N, NE) -> (N, NE): how much of each expert each token gets. Dense: the softmax over all experts.
    Sparse: the softmax over the token's top_k logits, scattered into zeros."""
    if top_k == 0:
        return torch.softmax(gate_logits, dim=-1)  # (N, NE)
    kept, chosen = gate_logits.topk(top_k, dim=-1)  # (N, k) each
    return torch.zeros_like(gate_logits).scatter(-1, chosen, torch.softmax(kept, dim=-1))  # (N, NE)


def load_balancing_loss(gate_logits: Tensor, top_k: int, aux_weight: float) -> Tensor:
    """aux_weight * NE * sum_e f_e * P_e, a scalar; f_e is counted from the routing, outside the graph."""
    N, NE = gate_logits.shape
    chosen = gate_logits.detach().topk(top_k, dim=-1).indices  # (N, k)
    f = torch.bincount(chosen.reshape(-1), minlength=NE).to(gate_logits.dtype) / (N * top_k)  # (NE,) constant
    P = torch.softmax(gate_logits, dim=-1).mean(dim=0)  # (NE,)
    return aux_weight * NE * (f * P).sum()


def mixture_of_experts(h: Tensor, p: dict[str, Tensor], top_k: int, aux_weight: float) -> tuple[Tensor, Tensor]:
    """(B, T, C) -> out (B, T, C), aux loss (a scalar, 0 when dense).

    Every expert runs on every token here and the unchosen ones are multiplied by a weight of exactly 0: the
    same function as running only the chosen experts, computed another way than the NumPy model does it.
    """
    B, T, C = h.shape
    x = h.reshape(B * T, C)  # (N, C)
    gate_logits = x @ p["w_gate"] if "b_gate" not in p else x @ p["w_gate"] + p["b_gate"]  # (N, NE)
    weights = expert_weights(gate_logits, top_k)  # (N, NE)
    # all experts at once: (N, C) @ (NE, C, F) broadcasts to (NE, N, F); the biases get a token axis
    experts = {"w_fc": p["w_fc"], "b_fc": p["b_fc"][:, None, :],
               "w_proj": p["w_proj"], "b_proj": p["b_proj"][:, None, :]}
    outputs = mlp(x, experts)  # (NE, N, C)
    out = torch.einsum("ne,enc->nc", weights, outputs)  # (N, C)
    aux = load_balancing_loss(gate_logits, top_k, aux_weight) if top_k else gate_logits.new_zeros(())
    return out.reshape(B, T, C), aux


def sublayer(p: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The block parameters under ``prefix`` ("attn.", "mlp.", "moe."), keyed without it."""
    return {name.removeprefix(prefix): t for name, t in p.items() if name.startswith(prefix)}


def mixer(h: Tensor, p: dict[str, Tensor], n_heads: int, drop: Dropout, variant: Variant) -> Tensor:
    """(B, T, C) -> (B, T, C): the attention the variant names; ``p`` holds the whole block's parameters."""
    attend = causal_self_attention if variant.c_attention == "mha" else mixture_of_heads
    return attend(h, sublayer(p, "attn."), n_heads, drop)


def network(h: Tensor, p: dict[str, Tensor], variant: Variant) -> tuple[Tensor, Tensor]:
    """(B, T, C) -> (B, T, C) and the aux loss (a scalar, 0 unless sparse experts): the MLP or the experts."""
    if variant.c_network == "mlp":
        return mlp(h, sublayer(p, "mlp.")), h.new_zeros(())
    return mixture_of_experts(h, sublayer(p, "moe."), variant.moe_top_k, variant.moe_aux_weight)


def variant_block(x: Tensor, p: dict[str, Tensor], n_heads: int, drop: Dropout,
                  variant: Variant) -> tuple[Tensor, Tensor]:
    """One transformer block of any variant: (B, T, C) -> (B, T, C), and its aux loss (a scalar).

    ``p`` is keyed without the ``blocks.i.`` prefix. The three ``drop`` calls happen in the order the spec
    fixes: attention weights, attention output, MLP (or experts) output.
    """
    if variant.c_sequence == "pre":  # x + drop(f(ln(x)))
        x = x + drop(mixer(layer_norm(x, p["ln_1.w"], p["ln_1.b"]), p, n_heads, drop, variant))  # (B, T, C)
        m, aux = network(layer_norm(x, p["ln_2.w"], p["ln_2.b"]), p, variant)  # (B, T, C)
        return x + drop(m), aux  # (B, T, C)
    # post: ln(x + drop(f(x)))
    x = layer_norm(x + drop(mixer(x, p, n_heads, drop, variant)), p["ln_1.w"], p["ln_1.b"])  # (B, T, C)
    m, aux = network(x, p, variant)  # (B, T, C)
    return layer_norm(x + drop(m), p["ln_2.w"], p["ln_2.b"]), aux  # (B, T, C)


def block(x: Tensor, p: dict[str, Tensor], n_heads: int, drop: Dropout) -> Tensor:
    """One core block (pre-norm, multi-head attention, MLP), (B, T, C) -> (B, T, C), as the benchmark runs it."""
    return variant_block(x, p, n_heads, drop, Variant())[0]


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
        self.variant = Variant.of(cfg)
        self.dtype = TORCH_DTYPES[cfg.dtype]
        self.params = {name: torch.tensor(np.asarray(params[name]), dtype=self.dtype, requires_grad=True)
                       for name in expected}

    def block_params(self, i: int) -> dict[str, Tensor]:
        prefix = f"blocks.{i}."
        return {name.removeprefix(prefix): t for name, t in self.params.items() if name.startswith(prefix)}

    def forward_with_aux(self, idx, mask_rng: np.random.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Token ids (B, T) -> logits (B, T, V) and the blocks' summed aux loss (a scalar, 0 unless sparse
        experts). Dropout only when ``mask_rng`` is given and p > 0."""
        idx = torch.as_tensor(idx, dtype=torch.long)  # (B, T)
        T = idx.shape[1]
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds n_ctx {self.cfg.n_ctx}")
        p = self.cfg.dropout
        drop = shared_mask_dropout(p, mask_rng) if (mask_rng is not None and p > 0) else no_dropout
        x = self.params["wte"][idx] + self.params["wpe"][:T]  # (B, T, C)
        aux = x.new_zeros(())
        for i in range(self.cfg.n_layers):
            x, block_aux = variant_block(x, self.block_params(i), self.cfg.n_heads, drop, self.variant)  # (B, T, C)
            aux = aux + block_aux
        x = layer_norm(x, self.params["ln_f.w"], self.params["ln_f.b"])  # (B, T, C)
        head = self.params["wte"].T if self.variant.weight_tying else self.params["lm_head.w"]  # (C, V)
        logits = x @ head  # (B, T, V)
        return (logits + self.params["lm_head.b"] if self.variant.lm_head_bias else logits), aux

    def forward(self, idx, mask_rng: np.random.Generator | None = None) -> Tensor:
        """Token ids (B, T) -> logits (B, T, V). Dropout only when ``mask_rng`` is given and p > 0."""
        return self.forward_with_aux(idx, mask_rng)[0]

    def loss(self, idx, targets, mask_rng: np.random.Generator | None = None, with_aux: bool = True) -> Tensor:
        """The training loss, a scalar tensor still attached to the graph: the mean cross-entropy over all B*T
        positions plus, with sparse experts and ``with_aux``, the load-balancing loss."""
        logits, aux = self.forward_with_aux(idx, mask_rng)  # (B, T, V), ()
        targets = torch.as_tensor(targets, dtype=torch.long)  # (B, T)
        cross_entropy = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return cross_entropy + aux if with_aux else cross_entropy

    def loss_and_grads(self, idx, targets, mask_rng: np.random.Generator | None = None
                       ) -> tuple[float, dict[str, np.ndarray]]:
        """The training loss and the gradient of every parameter, as NumPy arrays keyed like ``self.params``."""
        loss = self.loss(idx, targets, mask_rng)
        grads = torch.autograd.grad(loss, list(self.params.values()))
        return loss.item(), {name: g.numpy() for name, g in zip(self.params, grads)}

    def numpy_params(self) -> dict[str, np.ndarray]:
        return {name: t.detach().numpy().copy() for name, t in self.params.items()}
