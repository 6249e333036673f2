"""How much a model learns per step: littlebaby's `baby train` against nanoGPT's recipe in PyTorch, same settings.

    python benchmarks/bench_learning.py                     # M shapes, lr 1e-3, 2000 steps, seeds 0 and 1: ~8 min
    python benchmarks/bench_learning.py --steps 400 --seeds 0 --variants default   # a quick look

Both train on Tiny Shakespeare (``--data``), characters as tokens, the first 90% of the text for training and
the last 10% for validation, at the issue's M shapes (context 64, width 128, 4 layers, 4 heads, batch 12),
learning rate 1e-3, dropout 0. littlebaby runs through ``littlebaby.train`` (what `baby train` runs) with
``eval_every`` steps between evals; nanoGPT's recipe is benchmarks/nanogpt_recipe.py. Both are evaluated on the
same validation windows (``littlebaby.data.fixed_batches`` with the run's seed), so the losses compare like with
like. Variants of littlebaby change one default at a time toward nanoGPT's, to find which default matters:
``tied`` (the LM head reuses the token embedding), ``nobias`` (no LM-head bias, no Q/K/V bias).

The table: mean validation loss over the seeds at each eval step, and ours minus nanoGPT's (negative: ours is
lower, better).
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import littlebaby  # noqa: E402
from littlebaby.data import fixed_batches  # noqa: E402
from littlebaby.report import cpu_description  # noqa: E402

SHAPE = dict(n_ctx=64, n_emb=128, head_size=128, n_heads=4, n_layers=4, batch_size=12, dropout=0.0)
VARIANTS = {"default": {}, "tied": dict(weight_tying=True), "nobias": dict(lm_head_bias=False, qkv_bias=False)}


def ours(data, steps, lr, seed, eval_every, eval_batches, options):
    """{step: val loss} of a littlebaby run with these settings."""
    with tempfile.TemporaryDirectory() as out:
        run = littlebaby.train(data=str(data), out=out, quiet=True, steps=steps, lr=lr, seed=seed,
                               eval_every=eval_every, eval_batches=eval_batches, completion_tokens=0,
                               **SHAPE, **options)
        return {e["step"]: e["val_loss"] for e in run.report["evals"]}


def nanogpt(data, steps, lr, seed, eval_every, eval_batches):
    """{step: val loss} of nanoGPT's recipe, evaluated on littlebaby's validation windows for ``seed``."""
    import torch
    from nanogpt_recipe import NanoGPT, learning_rate, optimizer

    text = pathlib.Path(data).read_text(encoding="utf-8")
    chars = sorted(set(text))
    ids = np.searchsorted(np.array([ord(c) for c in chars]), np.array([ord(c) for c in text]))
    n = int(0.9 * len(ids))
    train, val = ids[:n], ids[n:]
    B, T = SHAPE["batch_size"], SHAPE["n_ctx"]
    windows = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in fixed_batches(val, B, T, eval_batches, seed)]
    torch.manual_seed(seed)
    model = NanoGPT(len(chars), T, SHAPE["n_emb"], SHAPE["n_heads"], SHAPE["n_layers"])
    opt = optimizer(model, lr)
    train_t = torch.from_numpy(train)

    def val_loss():
        model.eval()
        with torch.no_grad():
            loss = statistics.mean(model(x, y).item() for x, y in windows)
        model.train()
        return loss

    losses = {0: val_loss()}
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        starts = torch.randint(len(train_t) - T, (B,))
        x = torch.stack([train_t[s:s + T] for s in starts])
        y = torch.stack([train_t[s + 1:s + 1 + T] for s in starts])
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            losses[step + 1] = val_loss()
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-batches", type=int, default=40, help="validation batches of 12 windows per eval")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--variants", default="default,tied", help=f"littlebaby variants: {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    print(f"CPU: {cpu_description()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; M shapes, lr {args.lr}, "
          f"{args.steps} steps, dropout 0, {args.eval_batches} x {SHAPE['batch_size']} validation windows\n", flush=True)
    results = {}
    for seed in seeds:
        started = time.perf_counter()
        results.setdefault("nanoGPT", []).append(nanogpt(args.data, args.steps, args.lr, seed, args.eval_every,
                                                         args.eval_batches))
        for variant in variants:
            results.setdefault(variant, []).append(ours(args.data, args.steps, args.lr, seed, args.eval_every,
                                                        args.eval_batches, VARIANTS[variant]))
        print(f"  seed {seed}: done in {time.perf_counter() - started:.0f} s", flush=True)
    steps = sorted(set.intersection(*(set(r) for runs in results.values() for r in runs)) - {0})
    reference = {s: statistics.mean(r[s] for r in results["nanoGPT"]) for s in steps}
    print("\n| who | " + " | ".join(f"val loss at {s}" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for who, runs in results.items():
        cells = []
        for s in steps:
            mean = statistics.mean(r[s] for r in runs)
            per_seed = ", ".join(f"{r[s]:.4f}" for r in runs)
            cells.append(f"{mean:.4f} ({per_seed})" if who == "nanoGPT" else
                         f"{mean:.4f} ({mean - reference[s]:+.4f})")
        print(f"| {'littlebaby ' + who if who != 'nanoGPT' else 'nanoGPT recipe'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
