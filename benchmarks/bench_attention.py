"""Causal attention in blocks of queries against one block, at the L shape, as one-thread CPU time.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_attention.py             # about 3 minutes
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_attention.py --steps 3   # a quick look

"blocks" is ``littlebaby.nn.attention`` as it is (``query_blocks``: up to 4 blocks of queries, each multiplying
only the keys it may see); "one block" sets ``MAX_QUERY_BLOCKS = 1``, the plain path that computes all T x T
scores. Two timings, the two modes taking turns so that a burst of load on the shared machine lands on both:
the attention heads alone (``heads_forward`` + ``heads_backward`` with dropout, L's shape and batch 64), and a
whole train step (``GPT.loss_and_grads``) of a config, L at batch 16 by default. Times are medians of
``time.thread_time``, the CPU time of this thread, which other jobs on the machine disturb far less than wall
time; run with a one-thread BLAS so that it is all the work.
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

from littlebaby.model import GPT, Config  # noqa: E402
from littlebaby.nn import attention  # noqa: E402
from bench_train import CONFIGS  # noqa: E402

MODES = {"one block": 1, "blocks": attention.MAX_QUERY_BLOCKS}  # name -> MAX_QUERY_BLOCKS


def heads_call(B, cfg, rng):
    """A function running heads_forward + heads_backward on fixed random inputs of the config's shape."""
    T, C, H, NH = cfg.n_ctx, cfg.n_emb, cfg.head_size, cfg.n_heads
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


def interleaved_ms(call, steps):
    """Median CPU milliseconds of call() in each mode, the modes taking turns, after one untimed call each."""
    times = {name: [] for name in MODES}
    for i in range(steps + 1):
        for name, max_blocks in MODES.items():
            attention.MAX_QUERY_BLOCKS = max_blocks
            start = time.thread_time()
            call()
            if i:
                times[name].append(1e3 * (time.thread_time() - start))
    attention.MAX_QUERY_BLOCKS = MODES["blocks"]
    return {name: statistics.median(t) for name, t in times.items()}


def report(what, ms):
    one, blocks = ms["one block"], ms["blocks"]
    print(f"{what}: one block {one:,.1f} ms, blocks {blocks:,.1f} ms ({100 * (1 - blocks / one):.1f}% less)",
          flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=9, help="timed calls per mode (default 9)")
    parser.add_argument("--config", default="L", choices=list(CONFIGS), help="config of the step (default L)")
    parser.add_argument("--batch", type=int, default=16, help="batch of the train step (default 16)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    # the step first: after the heads' large arrays, glibc's allocator keeps more memory mapped and the smaller
    # configs' steps no longer pay the page faults that they pay in a fresh process, as in training
    cfg = Config(vocab_size=65, dtype="float32", **dict(CONFIGS[args.config], batch_size=args.batch))
    report(f"{args.config} train step, batch {args.batch}", interleaved_ms(step_call(cfg, rng), args.steps))
    L = Config(vocab_size=65, dtype="float32", **CONFIGS["L"])
    heads = heads_call(L.batch_size, L, rng)
    report(f"heads forward + backward, L shape (B {L.batch_size}, T {L.n_ctx}, NH {L.n_heads}, "
           f"hs {L.head_size // L.n_heads}, dropout {L.dropout})", interleaved_ms(heads, args.steps))

if __name__ == "__main__":
    main()
