"""Each compiled kernel against its NumPy twin, and worker processes against threads, on the shapes of a
worker's share of S, M and L: what each of the default path's tricks buys.

    python benchmarks/bench_kernels.py                  # kernels at S, M and L shapes, workers, in-step: ~6 min
    python benchmarks/bench_kernels.py --skip-workers

Kernels: CPU time of the calling thread (``time.thread_time``, BLAS limited to one thread, which is how every
worker runs), the best of ``--repeats`` calls, forward and backward of one layer at the shape one of two
workers computes. Workers: the wall time of half a batch alone, then of both halves at once in two threads of
one process and in two processes (this one and a forked copy): with perfect scaling, the same time as one half.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import CONFIGS  # noqa: E402
from littlebaby import kernels  # noqa: E402
from littlebaby.model import GPT, Config  # noqa: E402
from littlebaby.nn.backend import COMPILED_TWINS  # noqa: E402
from littlebaby.nn import attention, gelu, layernorm  # noqa: E402
from littlebaby.nn.dropout import dropout_mask  # noqa: E402
from littlebaby.optim import AdamW  # noqa: E402
from littlebaby.report import cpu_description  # noqa: E402
from littlebaby.workers import Workers  # noqa: E402


def best_ms(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        function()
        times.append(time.thread_time() - start)
    return min(times) * 1e3


def layer_cases(name):
    """(label, function) pairs: one layer forward + backward at a worker's share of config ``name``."""
    shape = CONFIGS[name]
    B, T, C, NH = shape["batch_size"] // 2, shape["n_ctx"], shape["n_emb"], shape["n_heads"]
    hs, p = shape["head_size"] // NH, shape["dropout"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, C), dtype=np.float32)            # (B, T, C)
    h = rng.standard_normal((B, T, 4 * C), dtype=np.float32)        # (B, T, F)
    w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
    qkv = rng.standard_normal((B, T, 3, NH, hs), dtype=np.float32)  # (B, T, 3, NH, hs)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)                          # each (B, NH, T, hs)
    keep = dropout_mask((B, NH, T, T), p, np.random.default_rng(1)) if p else None
    y = np.empty((B, T, NH, hs), np.float32).transpose(0, 2, 1, 3)  # (B, NH, T, hs) a view
    grads = [np.empty_like(q) for _ in range(3)]
    params = {f"w{i}": rng.standard_normal((C, 4 * C), dtype=np.float32) for i in range(8)}
    param_grads = {name: rng.standard_normal(a.shape, dtype=np.float32) for name, a in params.items()}
    opt = AdamW(params)                 # gradients apart from the weights: aliased arrays defeat vectorizing

    def gelu_both():
        out, cache = gelu.gelu_forward(h)
        gelu.gelu_backward(out, cache)

    def layernorm_both():
        out, cache = layernorm.layernorm_forward(x, w, b)
        layernorm.layernorm_backward(out, cache)

    def attention_both():
        _, cache = attention.causal_attention_forward(q, k, v, keep, p, y)
        attention.causal_attention_backward(y, cache, *grads)

    return [(f"GELU (B, T, F) = {h.shape}", gelu_both), (f"LayerNorm (B, T, C) = {x.shape}", layernorm_both),
            (f"attention heads (B, NH, T, hs) = {q.shape}" + (f", dropout {p}" if p else ""), attention_both),
            (f"AdamW, {sum(a.size for a in params.values()):,} parameters", lambda: opt.step(params, param_grads))]


def bench_layers(names, repeats):
    rows = ["| config | layer, at one worker's share | NumPy ms | kernels ms | kernels save |", "|---|---|---|---|---|"]
    with threadpool_limits(limits=1, user_api="blas"):
        for name in names:
            for label, function in layer_cases(name):
                times = {}
                for choice in ("numpy", "numba"):
                    with kernels.using(choice):
                        times[choice] = best_ms(function, repeats)
                rows.append(f"| {name} | {label} | {times['numpy']:.2f} | {times['numba']:.2f} | "
                            f"{1 - times['numba'] / times['numpy']:.0%} |")
    return "\n".join(rows)


def bench_workers(name, steps):
    """Wall ms of one half-batch forward + backward alone, of two halves in two threads, in two processes."""
    cfg = Config(vocab_size=65, dtype="float32", **CONFIGS[name])
    gpt = GPT(cfg, seed=0)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 65, (cfg.batch_size, cfg.n_ctx)), rng.integers(0, 65, (cfg.batch_size, cfg.n_ctx))
    half = cfg.batch_size // 2
    rngs = [np.random.default_rng(w) for w in range(2)]

    def one_half(w=0):
        gpt.loss_and_grads(idx[w * half:(w + 1) * half], targets[w * half:(w + 1) * half], rngs[w])

    def timed(function):
        function()
        times = []
        for _ in range(steps):
            time.sleep(0.2)
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    with kernels.using("auto"), threadpool_limits(limits=1, user_api="blas"):
        alone = timed(one_half)
        with ThreadPoolExecutor(2) as pool:
            threads = timed(lambda: list(pool.map(one_half, [0, 1])))
        with Workers(gpt, 2, rngs, 2 * half) as workers:
            processes = timed(lambda: workers.loss_and_grads(idx[:2 * half], targets[:2 * half]))
    return (f"| {name} | {alone:.1f} | {threads:.1f} ({threads / alone:.2f}x) | {processes:.1f} "
            f"({processes / alone:.2f}x) |")


KERNEL_GROUPS = {"GELU": ("gelu_forward", "gelu_backward"),
                 "LayerNorm": ("layernorm_forward", "layernorm_backward"),
                 "attention softmax": ("causal_softmax_forward", "causal_softmax_backward"),
                 "AdamW": ("adamw_update",)}


def bench_step_without(name, steps):
    """A worker's share of a train step (half the batch's forward + backward, then AdamW), every kernel in
    use, against the same step with one kernel group at a time back on NumPy: median ms, the variants taking
    turns. A layer timed alone (the first table) can mislead: its arrays then meet the allocator and caches
    in another state than inside a step."""
    cfg = Config(vocab_size=65, dtype="float32", **CONFIGS[name])
    gpt = GPT(cfg, seed=0)
    opt = AdamW(gpt.params)
    rng = np.random.default_rng(0)
    half = cfg.batch_size // 2
    idx, targets = rng.integers(0, 65, (half, cfg.n_ctx)), rng.integers(0, 65, (half, cfg.n_ctx))

    def share_of_step():
        loss, grads = gpt.loss_and_grads(idx, targets, rng)
        opt.step(gpt.params, grads, 1e-6)

    with kernels.using("numba"), threadpool_limits(limits=1, user_api="blas"):
        every = dict(COMPILED_TWINS)
        variants = {"all kernels": every, "numpy layers": {}}
        variants.update({f"{group} on NumPy": {k: v for k, v in every.items() if k not in layers}
                         for group, layers in KERNEL_GROUPS.items()})
        times = {label: [] for label in variants}
        for step in range(steps):
            order = list(variants.items())
            for label, twins in order[step % len(order):] + order[:step % len(order)]:
                COMPILED_TWINS.clear()
                COMPILED_TWINS.update(twins)
                share_of_step()                                     # once untimed: this variant's caches
                start = time.perf_counter()
                share_of_step()
                times[label].append(time.perf_counter() - start)
        COMPILED_TWINS.clear()
        COMPILED_TWINS.update(every)
    base = statistics.median(times["all kernels"])
    cells = [f"{base * 1e3:.1f}"] + [f"{statistics.median(t) * 1e3:.1f} ({statistics.median(t) / base - 1:+.0%})"
                                      for label, t in times.items() if label != "all kernels"]
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="S,M,L")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of the workers comparison")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--step-rounds", type=int, default=12, help="rounds of the in-step comparison (L: a quarter)")
    args = parser.parse_args(argv)
    names = [n.strip().upper() for n in args.configs.split(",") if n.strip()]
    print(f"CPU: {cpu_description()}, {os.cpu_count()} CPUs; numpy {np.__version__}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(bench_layers(names, args.repeats))
    if not args.skip_workers:
        print("\nhalf a batch's forward + backward, wall ms (median), one BLAS thread each, kernels in use:\n")
        print("| config | one half alone | both halves, 2 threads | both halves, 2 processes |\n|---|---|---|---|")
        for name in names:
            if name != "L":
                print(bench_workers(name, args.steps), flush=True)
    print("\na worker's share of a train step (half the batch, forward + backward + AdamW), median ms, one BLAS "
          "thread;\nthen with every layer on NumPy, and with one kernel at a time on NumPy (the cost of doing without it):\n")
    print("| config | all kernels | numpy layers | " + " | ".join(f"{g} on NumPy" for g in KERNEL_GROUPS) + " |")
    print("|" + "---|" * (3 + len(KERNEL_GROUPS)))
    for name in names:
        print(bench_step_without(name, args.step_rounds if name != "L" else max(2, args.step_rounds // 4)),
              flush=True)


if __name__ == "__main__":
    main()
