"""Data parallelism on one machine with threads: each worker thread runs forward and backward on its slice of
the batch, and the gradients are averaged, weighted by slice size. The prototype of data parallelism in
``littlebaby``; the package trains with worker processes instead (``littlebaby/workers.py`` says why, and
``benchmarks/bench_kernels.py`` times threads against processes), and this benchmark keeps the threads to compare.

Why threads, not processes: NumPy releases the GIL inside ufunc loops and BLAS calls, which is where a train
step spends its time, so two threads run two halves of the batch on two cores without copying parameters or
gradients between processes. Why it helps on 2 cores: NumPy's element-wise work (softmax, LayerNorm, GELU,
dropout, AdamW) runs on one core only, so in a single-threaded step the second core idles during all of it;
BLAS uses both cores, but on small matrices its two threads mostly synchronise. Each worker asks OpenBLAS for
one thread per call while the workers run, so the two workers do not oversubscribe the cores.

    python benchmarks/bench_data_parallel.py --configs S,M --steps 10
"""

import argparse
import contextlib
import ctypes
import glob
import os
import pathlib
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from littlebaby.model import GPT, Config  # noqa: E402
from littlebaby.optim import AdamW  # noqa: E402


class BlasThreads:
    """Read and set the thread count of the OpenBLAS that NumPy loaded (a process-wide setting), where found."""

    def __init__(self):
        self.get = self.set = None
        pattern = os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "libscipy_openblas*")
        for path in glob.glob(pattern):
            lib = ctypes.CDLL(path)
            self.get = getattr(lib, "scipy_openblas_get_num_threads64_", None)
            self.set = getattr(lib, "scipy_openblas_set_num_threads64_", None)
            if self.get is not None and self.set is not None:
                self.set.argtypes = [ctypes.c_int]
                break

    @property
    def found(self):
        return self.get is not None and self.set is not None

    @contextlib.contextmanager
    def limited_to(self, n):
        """Within the block, BLAS calls use at most n threads each; the old count comes back after."""
        if not self.found:
            yield
            return
        previous = self.get()
        self.set(n)
        try:
            yield
        finally:
            self.set(previous)


class DataParallel:
    """``loss_and_grads`` over the batch split across ``n_workers`` threads; worker i draws its dropout masks
    from its own generator, spawned from ``seed``, so a run is reproducible for a given worker count."""

    def __init__(self, gpt, n_workers=2, seed=0):
        self.gpt, self.n_workers = gpt, n_workers
        self.rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_workers)]
        self.blas = BlasThreads()
        self.pool = ThreadPoolExecutor(n_workers)

    def loss_and_grads(self, idx, targets):
        """idx, targets (B, T) -> (mean loss, grads keyed like params), as ``GPT.loss_and_grads`` on the batch.

        While the workers run, BLAS is limited to one thread per call, so two workers fill two cores instead
        of each asking for both; the previous setting is restored before returning.
        """
        B = idx.shape[0]
        slices = [s for s in np.array_split(np.arange(B), self.n_workers) if s.size]
        with self.blas.limited_to(1):
            futures = [self.pool.submit(self.gpt.loss_and_grads, idx[s], targets[s], rng)
                       for s, rng in zip(slices, self.rngs)]
            results = [f.result() for f in futures]
        weights = [s.size / B for s in slices]  # each worker's loss is a mean over its own B_i T positions
        loss = sum(w * r[0] for w, r in zip(weights, results))
        grads = results[0][1]
        for name, g in grads.items():
            g *= weights[0]
            for w, (_, other) in zip(weights[1:], results[1:]):
                g += w * other[name]
        return loss, grads

    def close(self):
        self.pool.shutdown()


CONFIGS = {
    "S": dict(n_ctx=64, n_emb=128, head_size=128, n_heads=16, n_layers=4, batch_size=16, dropout=0.1),
    "M": dict(n_ctx=64, n_emb=128, head_size=128, n_heads=4, n_layers=4, batch_size=12, dropout=0.0),
    "L": dict(n_ctx=256, n_emb=384, head_size=384, n_heads=6, n_layers=6, batch_size=64, dropout=0.2),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description="one thread vs data-parallel threads, littlebaby train steps")
    parser.add_argument("--configs", default="S,M")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    for name in args.configs.split(","):
        cfg = Config(vocab_size=65, **CONFIGS[name])
        gpt = GPT(cfg, seed=0)
        opt = AdamW(gpt.params)
        parallel = DataParallel(gpt, args.workers)
        rng = np.random.default_rng(0)
        shape = (cfg.batch_size, cfg.n_ctx)
        idx, targets = rng.integers(0, 65, shape), rng.integers(0, 65, shape)
        times = {"single": [], "parallel": []}
        for i in range(args.steps + 1):
            for kind, step in (("single", gpt.loss_and_grads), ("parallel", parallel.loss_and_grads)):
                time.sleep(0.2)
                start = time.perf_counter()
                _, grads = step(idx, targets)
                opt.step(gpt.params, grads)
                if i:
                    times[kind].append(time.perf_counter() - start)
        parallel.close()
        single, par = statistics.median(times["single"]), statistics.median(times["parallel"])
        print(f"{name}: single {single * 1e3:.1f} ms, {args.workers} workers {par * 1e3:.1f} ms, "
              f"{single / par:.2f}x")


if __name__ == "__main__":
    main()
