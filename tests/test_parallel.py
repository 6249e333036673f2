"""Data parallelism over MPI: two ranks end where one process ends, and only rank 0 writes."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from littlebaby import checkpoint
from littlebaby.parallel import MPIWorld, SingleProcess, world

TINY = ["--n-ctx", "8", "--n-emb", "16", "--head-size", "16", "--n-heads", "2", "--n-layers", "2",
        "--batch-size", "5", "--lr", "0.01", "--dropout", "0", "--steps", "6", "--seed", "3", "--quiet"]
TEXT = "".join(f"ANNE:\nI have {n} roses, and you have none.\n\nBEN:\nThen give me one.\n\n" for n in range(40))


def test_a_single_process_computes_the_whole_batch():
    one = world()
    assert isinstance(one, SingleProcess) and one.share(7) == slice(0, 7)
    grads = {"w": np.ones(3)}
    assert one.reduce(2.5, grads, 7) == (2.5, grads)
    assert one.any(True) and not one.any(False) and one.broadcast("guid") == "guid"


class FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


def test_shares_cover_the_batch_as_evenly_as_integers_allow():
    for size, batch in [(2, 5), (3, 12), (4, 7)]:
        shares = [MPIWorld(FakeComm(rank, size)).share(batch) for rank in range(size)]
        rows = [r for s in shares for r in range(s.start, s.stop)]
        assert rows == list(range(batch))
        assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1


def mpi_available():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return shutil.which("mpiexec") is not None


@pytest.mark.skipif(not mpi_available(), reason="needs the mpi extra: pip install -e '.[mpi]'")
def test_two_ranks_end_within_float_tolerance_of_one(tmp_path):
    data = tmp_path / "tiny.txt"
    data.write_text(TEXT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    train = [sys.executable, "-m", "littlebaby", "train", "--data", str(data), *TINY]
    subprocess.run(train + ["--out", str(tmp_path / "one")], check=True, env=env, timeout=120)
    subprocess.run(["mpiexec", "-n", "2", *train, "--out", str(tmp_path / "two")], check=True, env=env,
                   timeout=120)
    (one,) = (tmp_path / "one" / "models").glob("model_*.safetensors")
    (two,) = (tmp_path / "two" / "models").glob("model_*.safetensors")  # rank 1 wrote no run of its own
    a, b = load_file(one), load_file(two)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)
    moved = sum(float(np.abs(a[n]).sum()) for n in a)
    assert moved > 0


MPI_RESUME = """
import os, signal, sys
from littlebaby import api
data, out = sys.argv[1], sys.argv[2]
options = dict(n_ctx=8, n_emb=16, head_size=16, n_heads=2, n_layers=1, batch_size=4, lr=0.01, dropout=0.3, steps=6,
               eval_every=2, seed=3, completion_tokens=0)


def stop_at_step_3(step):
    if step == 3:
        os.kill(os.getpid(), signal.SIGINT)   # every rank asks; all stop after the same step


api.train(data=data, out=out + "/whole", quiet=True, **options)
part = api.train(data=data, out=out + "/part", quiet=True, on_step=stop_at_step_3, **options)
api.train(resume=part.guid, out=out + "/part", quiet=True)
"""


@pytest.mark.skipif(not mpi_available(), reason="needs the mpi extra: pip install -e '.[mpi]'")
def test_each_rank_drops_its_own_units_and_a_resume_goes_on_with_every_rank_s_stream(tmp_path):
    """With dropout on and equal shares (2 rows each), the two ranks' dropout streams must differ (drawn from
    one stream, the ranks would drop the same units of their rows); and a 2-rank run stopped at step 3 and
    resumed must end bitwise where the uninterrupted 2-rank run ends, so each rank's stream was saved and
    restored."""
    data = tmp_path / "tiny.txt"
    data.write_text(TEXT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    subprocess.run(["mpiexec", "-n", "2", sys.executable, "-c", MPI_RESUME, str(data), str(tmp_path)], check=True,
                   env=env, timeout=180)
    (whole,) = (tmp_path / "whole" / "models").glob("model_*.safetensors")
    (part,) = (tmp_path / "part" / "models").glob("model_*.safetensors")
    a, b = load_file(whole), load_file(part)
    assert a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)
    (saved,) = (tmp_path / "whole" / "runs").glob("checkpoint_*.safetensors")
    states = checkpoint.load_checkpoint(saved)["dropout_rngs"]
    assert len(states) == 2 and states[0] != states[1]


def test_gather_of_one_process_is_its_value():
    assert world().gather({"a": 1}) == [{"a": 1}]


def test_workers_flag_is_removed_from_what_the_ranks_run():
    from littlebaby.cli import without_workers
    assert without_workers(["train", "--workers", "2", "--steps", "3"]) == ["train", "--steps", "3"]
    assert without_workers(["train", "--workers=4", "--quiet"]) == ["train", "--quiet"]


@pytest.mark.skipif(not mpi_available(), reason="needs the mpi extra: pip install -e '.[mpi]'")
def test_baby_train_workers_runs_mpi_ranks(tmp_path):
    data = tmp_path / "tiny.txt"
    data.write_text(TEXT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    train = [sys.executable, "-m", "littlebaby", "train", "--data", str(data), *TINY]
    subprocess.run(train + ["--out", str(tmp_path / "mpi"), "--workers", "2"], check=True, env=env, timeout=120)
    subprocess.run(train + ["--out", str(tmp_path / "one")], check=True, env=env, timeout=120)
    (one,) = (tmp_path / "one" / "models").glob("model_*.safetensors")
    (two,) = (tmp_path / "mpi" / "models").glob("model_*.safetensors")
    a, b = load_file(one), load_file(two)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)
    (report,) = (tmp_path / "mpi" / "outputs").glob("report_*.json")
    environment = json.loads(report.read_text(encoding="utf-8"))["environment"]
    assert environment["mpi_ranks"] == 2 and environment["thread_env"]["OPENBLAS_NUM_THREADS"] == "1"


# --- the benchmark's MPI ranks (benchmarks/mpi_ranks.py), which bench_train.py times against PyTorch -----------

def benchmark_ranks(cfg, batches):
    import pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
    from mpi_ranks import MPIRanks
    return MPIRanks(cfg, batches, n_ranks=2, adamw=dict(lr=1e-2, weight_decay=0.1))


def tiny_job(dtype):
    from littlebaby.model import Config
    cfg = Config(vocab_size=11, n_ctx=8, n_emb=16, head_size=16, n_heads=4, n_layers=2, dropout=0.0,
                 batch_size=5, dtype=dtype)   # 5 rows: the ranks get 2 and 3
    rng = np.random.default_rng(4)
    return cfg, [(rng.integers(0, 11, (5, 8)), rng.integers(0, 11, (5, 8))) for _ in range(3)]


@pytest.mark.skipif(not mpi_available(), reason="needs the mpi extra: pip install -e '.[mpi]'")
def test_benchmark_ranks_train_as_one_process_does():
    """Each step's loss (the whole batch's, after the Allreduce) is one process's loss on the same batch, and
    stays so over several AdamW updates: the ranks sum their shares' gradients and update alike."""
    from littlebaby.model import GPT
    from littlebaby.optim import AdamW
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
