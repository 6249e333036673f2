"""The benchmarks' own machinery measures what it claims: the MPI ranks bench_train.py times train as one process
does and sleep between steps, and the threads of bench_data_parallel.py give the full batch's gradients.

These tests live beside the benchmarks they check (pytest collects benchmarks/ too), so the tests of the package
never reach in here.
"""

import os
import shutil
import time

import numpy as np
import pytest

from bench_data_parallel import DataParallel
from littlebaby.model import GPT, Config
from littlebaby.optim import AdamW
from mpi_ranks import MPIRanks


def mpi_available():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return shutil.which("mpiexec") is not None


def tiny_job(dtype):
    cfg = Config(vocab_size=11, n_ctx=8, n_emb=16, head_size=16, n_heads=4, n_layers=2, dropout=0.0,
                 batch_size=5, dtype=dtype)   # 5 rows: the ranks get 2 and 3
    rng = np.random.default_rng(4)
    return cfg, [(rng.integers(0, 11, (5, 8)), rng.integers(0, 11, (5, 8))) for _ in range(3)]


def benchmark_ranks(cfg, batches):
    return MPIRanks(cfg, batches, n_ranks=2, adamw=dict(lr=1e-2, weight_decay=0.1))


@pytest.mark.skipif(not mpi_available(), reason="needs the mpi extra: pip install -e '.[mpi]'")
def test_benchmark_ranks_train_as_one_process_does():
    """Each step's loss (the whole batch's, after the Allreduce) is one process's loss on the same batch, and
    stays so over several AdamW updates: the ranks sum their shares' gradients and update alike."""
    cfg, batches = tiny_job("float64")
    gpt = GPT(cfg, seed=0)
    opt = AdamW(gpt.params, lr=1e-2, weight_decay=0.1)
    expected = []
    for idx, targets in batches:
        loss, grads = gpt.loss_and_grads(idx, targets)
        opt.step(gpt.params, grads)
        expected.append(loss)
    with benchmark_ranks(cfg, batches) as ranks:
        got = [ranks.step(b) for b in range(len(batches))]
    assert got == pytest.approx(expected, rel=1e-12)
    assert len(set(got)) == len(got)  # the model moved between steps


@pytest.mark.skipif(not mpi_available() or not os.path.exists("/proc/self/stat"),
                    reason="needs the mpi extra and Linux's /proc")
def test_parked_benchmark_ranks_take_no_cpu():
    """Between steps the ranks sleep on a pipe; a rank waiting inside MPI (Barrier, Recv) would spin a core."""
    def cpu_seconds(pid):   # utime + stime, fields 14 and 15 of /proc/<pid>/stat
        fields = open(f"/proc/{pid}/stat", encoding="utf-8").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    cfg, batches = tiny_job("float32")
    with benchmark_ranks(cfg, batches) as ranks:
        assert ranks.warm_up(2) > 0
        before = [cpu_seconds(pid) for pid in ranks.pids]
        time.sleep(1.0)
        after = [cpu_seconds(pid) for pid in ranks.pids]
        parked_cpu, parked_wall = ranks.parked()
    assert max(a - b for a, b in zip(after, before)) < 0.1
    assert parked_wall > 2 * 1.0 and parked_cpu < 0.1   # the ranks' own count, over both ranks


def test_data_parallel_threads_give_the_full_batch_gradients():
    """Without dropout, the slice-weighted average of the workers' gradients is the full batch's gradient,
    also for a batch that does not split evenly (to 1e-12, float64 rounding of the weighted sum)."""
    cfg, ((idx, targets), *_) = tiny_job("float64")
    gpt = GPT(cfg, seed=3)
    loss, grads = gpt.loss_and_grads(idx, targets)
    parallel = DataParallel(gpt, n_workers=2)
    try:
        parallel_loss, parallel_grads = parallel.loss_and_grads(idx, targets)
    finally:
        parallel.close()
    assert parallel_loss == pytest.approx(loss, rel=1e-12)
    for name, g in grads.items():
        assert np.max(np.abs(parallel_grads[name] - g)) <= 1e-12 * np.max(np.abs(g)), name


def test_the_in_step_kernel_comparison_runs_each_variant_and_puts_the_kernels_back(monkeypatch):
    import bench_kernels
    from littlebaby import kernels
    from littlebaby.nn.backend import COMPILED_TWINS
    monkeypatch.setitem(bench_kernels.CONFIGS, "tiny", dict(n_ctx=8, n_emb=16, head_size=16, n_heads=4,
                                                            n_layers=2, batch_size=4, dropout=0.1))
    seen = []
    real_step = GPT.loss_and_grads
    monkeypatch.setattr(GPT, "loss_and_grads", lambda self, *a: seen.append(frozenset(COMPILED_TWINS)) or
                        real_step(self, *a))
    with kernels.using("numba"):
        before = dict(COMPILED_TWINS)
        row = bench_kernels.bench_step_without("tiny", steps=1)
        assert COMPILED_TWINS == before
    cells = row.strip("|").split("|")
    assert len(cells) == 3 + len(bench_kernels.KERNEL_GROUPS)
    every = frozenset(before)
    expected = {every, frozenset()} | {every - set(layers) for layers in bench_kernels.KERNEL_GROUPS.values()}
    assert set(seen) == expected and len(seen) == 2 * len(expected)   # each variant: one untimed, one timed step


def test_ages_writes_its_table_between_the_readme_markers_only():
    import ages
    text = f"# T\nbefore\n{ages.AGES_START}\nold table\n{ages.AGES_END}\nafter\n"
    written = ages.write_between_markers(text, "| new |")
    assert written == f"# T\nbefore\n{ages.AGES_START}\n| new |\n{ages.AGES_END}\nafter\n"
    assert ages.write_between_markers(written, "| new |") == written          # run twice: the same README
    readme = (ages.ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(ages.AGES_START) == 1 and readme.count(ages.AGES_END) == 1
    assert ages.one_line("ROMEO:\nWhat | light\n\n  through yonder window breaks, my love, my dear, my own\n") == \
        "ROMEO: / What \\| light / through yonder window breaks, my ..."
