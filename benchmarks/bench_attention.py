"""Causal attention in blocks of queries against one block, as one-thread CPU time.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_attention.py                    # L: about 4 minutes
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_attention.py --config S --calls 15

"blocks" is ``littlebaby.nn.attention`` as it is (``query_blocks``: up to 4 blocks of queries, each multiplying
only the keys it may see); "one block" sets ``MAX_QUERY_BLOCKS = 1``, the plain path that computes all T x T
scores. Two timings: a whole train step (``GPT.loss_and_grads``) of a config, L at batch 16 by default, and the
attention heads alone (``heads_forward`` + ``heads_backward`` with dropout) at that config's shape and its full
batch. Times are medians of ``time.thread_time``, the CPU time of this thread, which other jobs on the machine
disturb far less than wall time; run with a one-thread BLAS so that it is all the work.

Each mode runs in its own process, the two taking turns for several rounds so that a burst of load on the shared
machine lands on both. In one process the modes would share the allocator's state: after the other mode's
arrays, glibc maps and unmaps the one block's larger arrays differently, and it pays page faults that it does
not pay alone (measured: 10% apart on an L step in one process, 4% in separate ones).
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from littlebaby.model import GPT, Config  # noqa: E402
from littlebaby.nn import attention  # noqa: E402
from bench_train import CONFIGS  # noqa: E402

MODES = {"one block": 1, "blocks": attention.MAX_QUERY_BLOCKS}  # name -> MAX_QUERY_BLOCKS


def heads_call(cfg, rng):
    """A function running heads_forward + heads_backward on fixed random inputs of the config's shape."""
    B, T, C, H, NH = cfg.batch_size, cfg.n_ctx, cfg.n_emb, cfg.head_size, cfg.n_heads
    x = rng.standard_normal((B, T, C), dtype=np.float32)                # (B, T, C)
    w_qkv = rng.standard_normal((C, 3 * H), dtype=np.float32) / np.float32(np.sqrt(C))  # (C, 3H)
    b_qkv = np.zeros(3 * H, dtype=np.float32)                            # (3H,)
    dy = rng.standard_normal((B, T, NH, H // NH), dtype=np.float32)      # (B, T, NH, hs)

    def call():
        _, cache = attention.heads_forward(x, w_qkv, b_qkv, NH, cfg.dropout, np.random.default_rng(0))
        attention.heads_backward(dy, cache)
    return call


def step_call(cfg, rng):
    """A function running one train step (loss and gradients) of a model of the config."""
    gpt = GPT(cfg, seed=0)
    idx, targets = (rng.integers(0, cfg.vocab_size, (cfg.batch_size, cfg.n_ctx)) for _ in range(2))  # (B, T)
    return lambda: gpt.loss_and_grads(idx, targets, rng=np.random.default_rng(0))


def child(args):
    """In this process: one mode, one untimed call, then ``calls`` timed ones; prints their CPU ms as JSON."""
    attention.MAX_QUERY_BLOCKS = MODES[args.mode]
    cfg = Config(vocab_size=65, dtype="float32", **CONFIGS[args.config])
    rng = np.random.default_rng(0)
    if args.what == "step":
        call = step_call(Config(**{**cfg.to_dict(), "batch_size": args.batch}), rng)
    else:
        call = heads_call(cfg, rng)
    call()
    times = []
    for _ in range(args.calls):
        start = time.thread_time()
        call()
        times.append(1e3 * (time.thread_time() - start))
    print(json.dumps(times))


def interleaved_ms(args, what):
    """Median CPU milliseconds of each mode, each round running every mode in a fresh process."""
    times = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            command = [sys.executable, __file__, "--child", "--mode", mode, "--what", what, "--config", args.config,
                       "--batch", str(args.batch), "--calls", str(args.calls)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            times[mode] += json.loads(out.splitlines()[-1])
    return {mode: statistics.median(t) for mode, t in times.items()}


def report(what, ms, n):
    one, blocks = ms["one block"], ms["blocks"]
    print(f"{what}: one block {one:,.1f} ms, blocks {blocks:,.1f} ms ({100 * (1 - blocks / one):.1f}% less; "
          f"medians of {n} calls each)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="L", choices=list(CONFIGS), help="config (default L)")
    parser.add_argument("--batch", type=int, help="batch of the train step (default: 16 for L, whose 64 takes "
                                                   "about 12 s a step; the config's own for S and M)")
    parser.add_argument("--rounds", type=int, default=4, help="processes per mode, taking turns (default 4)")
    parser.add_argument("--calls", type=int, default=4, help="timed calls per process (default 4)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--what", choices=["step", "heads"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cfg = Config(vocab_size=65, **CONFIGS[args.config])
    args.batch = args.batch or (16 if args.config == "L" else cfg.batch_size)
    if args.child:
        return child(args)
    n = args.rounds * args.calls
    report(f"{args.config} train step, batch {args.batch}", interleaved_ms(args, "step"), n)
    report(f"heads forward + backward at {args.config}'s shape (B {cfg.batch_size}, T {cfg.n_ctx}, "
           f"NH {cfg.n_heads}, hs {cfg.head_size // cfg.n_heads}, dropout {cfg.dropout})",
           interleaved_ms(args, "heads"), n)


if __name__ == "__main__":
    main()
