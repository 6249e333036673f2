"""littlebaby's train step as ``baby train --workers K`` runs it, K MPI ranks of one BLAS thread each, driven
one step at a time from bench_train.py so that it takes turns with PyTorch and the in-process variants.

    with MPIRanks(cfg, batches, n_ranks=2, adamw=dict(lr=1e-3)) as ranks:
        loss = ranks.step(0)          # one full train step on batches[0]; every rank has finished when it returns
        peak_mb = ranks.warm_up(3)    # untimed steps -> the sum of the ranks' peak RSS

Each rank builds the same model (``GPT(cfg, seed)``) and AdamW, loads the same global batches, and per step does
what the training loop does (littlebaby/training.py): forward and backward on its share of the batch, one Allreduce
of the flat gradient buffer (``MPIWorld.reduce`` in littlebaby/parallel.py), the AdamW update on every rank.
Like bench_train.py's other contestants it does not clip gradients.

Parking. While another contestant runs, a rank must not take a core: MPICH busy-polls inside blocking calls
(Barrier, Bcast and Recv all spin), so a rank waiting in MPI for its next step would burn one. Instead each rank
waits for its next command by reading its own named pipe (``go.<rank>``): a read on an empty FIFO sleeps in the
kernel. It answers on one shared pipe (``done``; a short line per write, which the kernel never interleaves), and
the driver waits for the answers in ``select``, which sleeps too. The only MPI call is the Allreduce in a step.

Commands, one line each: ``step <b>`` (train on batches[b]; answer the whole batch's loss), ``reset`` (reset the
peak RSS), ``peak`` (answer it in MB), ``parked`` (answer the CPU and wall seconds spent waiting for commands so
far), ``quit``. Every answer is ``<rank> <value>``; at start each rank answers ``ready <pid> <BLAS threads>``.

    mpiexec -n K python benchmarks/mpi_ranks.py WORKDIR     # what MPIRanks starts; WORKDIR holds the job
"""

import errno
import importlib.util
import json
import os
import pathlib
import select
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from littlebaby import parallel  # noqa: E402
from littlebaby.model import GPT, Config  # noqa: E402
from littlebaby.optim import AdamW  # noqa: E402
from bench_data_parallel import BlasThreads  # noqa: E402
from peak_rss import peak_rss_mb, reset_peak_rss  # noqa: E402

# set in the ranks' environment by mpiexec, so it holds before NumPy loads; each rank checks it took effect
ONE_BLAS_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def mpi_available():
    return shutil.which("mpiexec") is not None and importlib.util.find_spec("mpi4py") is not None


# --- the driver, in bench_train.py's process -------------------------------------------------------------------

class MPIRanks:
    """K parked MPI ranks holding one littlebaby model each; ``step(b)`` trains them all on ``batches[b]``."""

    def __init__(self, cfg, batches, n_ranks, adamw, seed=0, start_timeout_s=120.0):
        self.n_ranks, self.n_batches = n_ranks, len(batches)
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-mpi-ranks-")
        work = pathlib.Path(self.tmp.name)
        (work / "job.json").write_text(json.dumps({"config": cfg.to_dict(), "adamw": adamw, "seed": seed}),
                                       encoding="utf-8")
        np.save(work / "batches.npy", np.stack([np.stack(pair) for pair in batches]))   # (n, 2, B, T)
        for name in ["done"] + [f"go.{rank}" for rank in range(n_ranks)]:
            os.mkfifo(work / name)
        # our own writer on "done" as well, so that a read there never sees end-of-file before the ranks open it
        self.answers = os.open(work / "done", os.O_RDONLY | os.O_NONBLOCK)
        self.keep_open = os.open(work / "done", os.O_WRONLY)
        self.unread = b""
        self.log_path = work / "ranks.log"
        self.log = open(self.log_path, "wb")
        env = {key: value for key, value in os.environ.items() if key not in parallel.LAUNCHER_SIZE_VARIABLES}
        self.proc = subprocess.Popen([shutil.which("mpiexec"), "-n", str(n_ranks), sys.executable, __file__,
                                      str(work)], stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env={**env, **ONE_BLAS_THREAD})
        try:
            deadline = time.monotonic() + start_timeout_s
            self.commands = [self._open_command_pipe(work / f"go.{rank}", deadline) for rank in range(n_ranks)]
            ready = [answer.split() for answer in self._gather()]   # [["ready", pid, threads], ...]
        except BaseException:
            self.close()
            raise
        self.pids = [int(pid) for _, pid, _ in ready]
        if any(threads != "1" for _, _, threads in ready):
            self.close()
            raise RuntimeError(f"MPI ranks should run one BLAS thread each, they report {ready}")

    def _open_command_pipe(self, path, deadline):
        """A FIFO opens for writing (without waiting) only once its rank has opened it for reading."""
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                os.set_blocking(fd, True)
                return fd
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
            self._check_running()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the MPI ranks did not start; their output is in {self.log_path}")
            time.sleep(0.05)

    def _check_running(self):
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"the MPI ranks exited with status {self.proc.returncode}: " + " | ".join(tail))

    def _gather(self):
        """One answer from every rank, in rank order; waits asleep in select."""
        answers = {}
        while len(answers) < self.n_ranks:
            readable, _, _ = select.select([self.answers], [], [], 1.0)
            if not readable:
                self._check_running()
                continue
            *lines, self.unread = (self.unread + os.read(self.answers, 4096)).split(b"\n")
            for line in lines:
                rank, answer = line.decode("utf-8").split(" ", 1)
                answers[int(rank)] = answer
        return [answers[rank] for rank in range(self.n_ranks)]

    def ask(self, command):
        for fd in self.commands:
            os.write(fd, f"{command}\n".encode("utf-8"))
        return self._gather()

    def step(self, b):
        """One train step of every rank on batches[b] -> the loss of the whole batch."""
        return float(self.ask(f"step {b}")[0])

    def warm_up(self, steps):
        """Untimed steps -> the sum of the ranks' peak RSS (MB) over them, each rank's peak reset first."""
        self.ask("reset")
        for i in range(steps):
            self.step(i % self.n_batches)
        return sum(float(mb) for mb in self.ask("peak"))

    def parked(self):
        """-> (CPU seconds, wall seconds) the ranks spent waiting for commands so far, summed over ranks."""
        cpu_wall = [answer.split() for answer in self.ask("parked")]
        return sum(float(cpu) for cpu, _ in cpu_wall), sum(float(wall) for _, wall in cpu_wall)

    def close(self):
        for fd in getattr(self, "commands", []):
            try:
                os.write(fd, b"quit\n")
            except OSError:
                pass  # that rank is gone already
            os.close(fd)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.answers, self.keep_open):
            os.close(fd)
        self.log.close()
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- a rank, under mpiexec --------------------------------------------------------------------------------------

def serve(work):
    """Build this rank's model and optimizer, say ready, then answer commands until ``quit``."""
    world = parallel.world()
    job = json.loads((work / "job.json").read_text(encoding="utf-8"))
    cfg = Config.from_dict(job["config"])
    gpt = GPT(cfg, seed=job["seed"])
    opt = AdamW(gpt.params, **job["adamw"])
    batches = np.load(work / "batches.npy")                              # (n, 2, B, T)
    rows = world.share(cfg.batch_size)                                   # this rank's rows of every batch

    def train_step(b):
        idx, targets = batches[b]                                        # (B, T), (B, T)
        loss, grads = gpt.loss_and_grads(idx[rows], targets[rows])
        loss, grads = world.reduce(loss, grads, cfg.batch_size)         # one Allreduce: the whole batch's
        opt.step(gpt.params, grads)
        return loss

    blas = BlasThreads()
    parked_cpu = parked_wall = 0.0
    with open(work / f"go.{world.rank}", encoding="utf-8") as commands, \
            open(work / "done", "w", encoding="utf-8") as answers:
        def answer(value):
            answers.write(f"{world.rank} {value}\n")
            answers.flush()

        answer(f"ready {os.getpid()} {blas.get() if blas.found else 'unknown'}")
        cpu, wall = time.process_time(), time.perf_counter()
        for line in commands:   # parked: blocked in read() on an empty pipe, asleep
            parked_cpu += time.process_time() - cpu
            parked_wall += time.perf_counter() - wall
            verb, *args = line.split()
            if verb == "quit":
                return
            if verb == "step":
                answer(repr(train_step(int(args[0]))))
            elif verb == "reset":
                reset_peak_rss()
                answer("ok")
            elif verb == "peak":
                answer(peak_rss_mb())
            elif verb == "parked":
                answer(f"{parked_cpu} {parked_wall}")
            else:
                raise ValueError(f"unknown command {line!r}")
            cpu, wall = time.process_time(), time.perf_counter()


if __name__ == "__main__":
    serve(pathlib.Path(sys.argv[1]))
