"""Train-step speed of littlebaby on a GPU (``--device cuda``, CuPy) on the issue's L shape, against our CPU.

    python benchmarks/bench_gpu.py                     # L on the GPU, 10 timed steps
    python benchmarks/bench_gpu.py --cpu-steps 2       # also time L on this machine's CPU, in the same run
    python benchmarks/bench_gpu.py --device cpu --configs S --steps 3   # the same script on NumPy (a dry run)

The step is what ``baby train --device cuda`` runs: ``GPT.loss_and_grads`` (dropout masks drawn on the host and
copied over) and AdamW, with the GPU synchronised before the clock is read. The ratio compares GPU tokens/s with
``--cpu-tokens-per-s``, by default our 2-core CPU figure for L from docs/PERFORMANCE.md, and, with
``--cpu-steps``, with this machine's own CPU measured in the same run.
"""

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import CONFIGS, VOCAB  # noqa: E402
from littlebaby import device  # noqa: E402
from littlebaby.model import GPT, Config, flops_per_token  # noqa: E402
from littlebaby.optim import AdamW  # noqa: E402

CPU_L_TOKENS_PER_S = 2037   # docs/PERFORMANCE.md: bench_train.py, L as `baby train` runs it on the 2-core Zen 4


def step_seconds(xp, cfg, steps, warmup, seed=0):
    """Median seconds of a train step (forward + backward + AdamW) with the arrays in module xp."""
    gpt = GPT(cfg, seed=seed).move_to(xp)
    opt = AdamW(gpt.params)
    rng = np.random.default_rng(seed)
    sync = xp.cuda.Stream.null.synchronize if xp is not np else (lambda: None)
    times = []
    for i in range(warmup + steps):
        idx = rng.integers(0, VOCAB, (cfg.batch_size, cfg.n_ctx))
        targets = rng.integers(0, VOCAB, (cfg.batch_size, cfg.n_ctx))
        sync()
        start = time.perf_counter()
        _, grads = gpt.loss_and_grads(idx, targets)
        opt.step(gpt.params, grads)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="L", help="comma-separated subset of S, M, L (default L)")
    parser.add_argument("--device", default="cuda", choices=device.DEVICES)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--cpu-steps", type=int, default=0, help="also time this many steps on the CPU")
    parser.add_argument("--cpu-tokens-per-s", type=float, default=CPU_L_TOKENS_PER_S,
                        help="the CPU figure to compare with (default: L on the 2-core machine)")
    args = parser.parse_args(argv)
    xp = device.array_module_for(args.device)
    print(f"device: {device.describe(xp)}")
    print("| config | device s/step | tok/s | GFLOP/s | vs --cpu-tokens-per-s | this CPU tok/s | vs this CPU |")
    print("|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        shape = CONFIGS[name]
        cfg = Config(vocab_size=VOCAB, **shape)
        tokens = cfg.batch_size * cfg.n_ctx
        seconds = step_seconds(xp, cfg, args.steps, args.warmup)
        tok_s = tokens / seconds
        cpu = ("", "")
        if args.cpu_steps:
            cpu_tok_s = tokens / step_seconds(np, cfg, args.cpu_steps, 1)
            cpu = (f"{cpu_tok_s:,.0f}", f"{tok_s / cpu_tok_s:.1f}x")
        print(f"| {name} | {seconds:.4f} | {tok_s:,.0f} | {tok_s * flops_per_token(cfg) / 1e9:,.0f} | "
              f"{tok_s / args.cpu_tokens_per_s:.1f}x | {cpu[0]} | {cpu[1]} |")


if __name__ == "__main__":
    main()
