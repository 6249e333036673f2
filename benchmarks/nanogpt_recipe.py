"""nanoGPT's model and training recipe in PyTorch, written for bench_learning.py: the reference for how much a
model learns per step, with nanoGPT's own defaults where they differ from littlebaby's.

The model as nanoGPT's ``model.py`` builds it with ``bias=False`` (its train.py default): token and position
embeddings, pre-norm blocks of causal self-attention and a 4x MLP with the exact (erf) GELU, LayerNorm without
a shift, no biases in any linear layer, a final LayerNorm, and an LM head tied to the token embedding. Init
N(0, 0.02) for every weight, the two residual projections of each block N(0, 0.02 / sqrt(2 L)). The recipe as
its ``config/train_shakespeare_char.py`` sets it: AdamW betas (0.9, 0.99), eps 1e-8, weight decay 0.1 on every
tensor of two or more dimensions (embeddings included) and none on the LayerNorm gains, linear warmup for 100
steps then cosine decay to lr / 10 at the last step, gradient norm clipped at 1.0, random windows of the
training split each step.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, n_emb, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(n_emb, 3 * n_emb, bias=False)
        self.proj = nn.Linear(n_emb, n_emb, bias=False)

    def forward(self, x):                                           # x (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)                       # each (B, T, C)
        q, k, v = (a.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for a in (q, k, v))  # (B, NH, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, NH, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))        # (B, T, C)


class Block(nn.Module):
    def __init__(self, n_emb, n_heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_emb, bias=False)
        self.attn = SelfAttention(n_emb, n_heads)
        self.ln_2 = nn.LayerNorm(n_emb, bias=False)
        self.fc = nn.Linear(n_emb, 4 * n_emb, bias=False)
        self.proj = nn.Linear(4 * n_emb, n_emb, bias=False)

    def forward(self, x):                                           # x (B, T, C)
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    def __init__(self, vocab_size, n_ctx, n_emb, n_heads, n_layers):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_emb)
        self.wpe = nn.Embedding(n_ctx, n_emb)
        self.blocks = nn.ModuleList(Block(n_emb, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(n_emb, bias=False)
        self.head = nn.Linear(n_emb, vocab_size, bias=False)
        self.head.weight = self.wte.weight                          # tied
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith("proj.weight") else 0.02
                torch.nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx, targets):                                # idx, targets (B, T)
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))               # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))                            # (B, T, V)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def optimizer(model, lr, weight_decay=0.1, betas=(0.9, 0.99)):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=betas, eps=1e-8)


def learning_rate(step, steps, lr, warmup=100):
    """nanoGPT's get_lr with lr_decay_iters = steps and min_lr = lr / 10."""
    min_lr = lr / 10
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > steps:
        return min_lr
    ratio = (step - warmup) / (steps - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)
