"""A PyTorch training loop in nanoGPT's style, as a command, for bench_train.py's end-to-end row.

    python benchmarks/torch_loop.py --data tinyshakespeare.txt --config M --steps 140

What nanoGPT's train.py does each iteration for a char-level run on the CPU, written here for the reference
model of tests/torch_reference.py (the same architecture and shapes as littlebaby's): draw B random windows
from the training ids (``torch.randint`` starts, ``torch.stack`` of the slices), set the learning rate from the
warmup + cosine schedule, forward, cross-entropy, ``zero_grad(set_to_none=True)``, backward,
``clip_grad_norm_(1.0)``, AdamW step, and every 10 iterations ``loss.item()`` for the log line. No evaluation.
Timing is left to the caller: the whole process, so that start-up counts as it does for ``baby train``.
"""

import argparse
import math
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_train import ADAMW, CONFIGS, WEIGHT_DECAY  # noqa: E402
from torch_reference import TorchGPT, block, layer_norm  # noqa: E402

from littlebaby.model import GPT, Config  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a UTF-8 text file")
    parser.add_argument("--config", default="M", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=140)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    text = pathlib.Path(args.data).read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = np.array([lookup[c] for c in text], dtype=np.int64)
    train = torch.from_numpy(ids[: int(0.9 * len(ids))])            # (n_train,)
    cfg = Config(vocab_size=len(chars), lr=ADAMW["lr"], dtype="float32", **CONFIGS[args.config])
    B, T, p = cfg.batch_size, cfg.n_ctx, cfg.dropout
    ref = TorchGPT(cfg, GPT(cfg, seed=args.seed).params)
    params = list(ref.params.values())
    opt = torch.optim.AdamW([{"params": [t for t in params if t.ndim >= 2], "weight_decay": WEIGHT_DECAY},
                             {"params": [t for t in params if t.ndim < 2], "weight_decay": 0.0}],
                            lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"])
    warmup, lr, min_lr = min(200, args.steps // 20), ADAMW["lr"], ADAMW["lr"] / 10

    def drop(x):
        return F.dropout(x, p, training=True) if p > 0 else x

    for it in range(args.steps):
        starts = torch.randint(len(train) - T, (B,))
        x = torch.stack([train[i:i + T] for i in starts])           # (B, T)
        y = torch.stack([train[i + 1:i + 1 + T] for i in starts])   # (B, T)
        ratio = (it - warmup) / max(1, args.steps - warmup)
        rate = lr * (it + 1) / (warmup + 1) if it < warmup else min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (lr - min_lr)
        for group in opt.param_groups:
            group["lr"] = rate
        h = ref.params["wte"][x] + ref.params["wpe"][:T]             # (B, T, C)
        for i in range(cfg.n_layers):
            h = block(h, ref.block_params(i), cfg.n_heads, drop)     # (B, T, C)
        h = layer_norm(h, ref.params["ln_f.w"], ref.params["ln_f.b"])  # (B, T, C)
        logits = h @ ref.params["lm_head.w"] + ref.params["lm_head.b"]  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if it % 10 == 0:
            print(f"iter {it}: loss {loss.item():.4f}", flush=True)


if __name__ == "__main__":
    main()
