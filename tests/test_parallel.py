"""Data parallelism over MPI: two ranks end where one process ends, and only rank 0 writes."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import TEXT, TINY_RUN, flags
from littlebaby import checkpoint
from littlebaby.model import GPT, Config
from littlebaby.parallel import MPIWorld, SingleProcess, world

# two blocks and an odd batch (the ranks get 2 and 3 rows); no dropout, so 1 and 2 ranks compute the same
TINY = flags(dict(TINY_RUN, n_layers=2, batch_size=5, dropout=0.0, steps=6, seed=3)) + ["--quiet"]


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
    init = GPT(Config(vocab_size=len(set(TEXT)), n_ctx=8, n_emb=16, head_size=16, n_heads=2, n_layers=2,
                      batch_size=5, dropout=0.0), seed=3).params      # where both runs started (--seed 3)
    moved = {name: float(np.abs(a[name] - init[name]).max()) for name in a if a[name].ndim == 2}
    assert min(moved.values()) > 100 * 1e-5, moved    # trained far beyond the tolerance the runs agree to


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
