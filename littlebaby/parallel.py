"""Data parallelism over MPI: ``mpiexec -n K baby train ...``.

Every rank draws the same global batch (the data RNG is seeded alike on all ranks), takes its share of the rows,
and computes the loss and gradients of that share. One Allreduce on a single flat float buffer then sums the
share-weighted gradients and the losses, so every rank ends the step with the gradient of the whole batch and applies the same AdamW update: the weights stay identical everywhere without
ever being sent. Only rank 0 prints progress and writes files.

With one process (no mpiexec) ``world()`` is a ``SingleProcess`` that does nothing, so the training loop has one
path. mpi4py is imported only when the program was started by an MPI launcher.
"""

import json
import os

import numpy as np

from littlebaby.errors import BabyError
from littlebaby.nn.backend import array_module, to_host

LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")
LAUNCHER_LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_LOCAL_RANK")
LAUNCHER_LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_LOCAL_SIZE")


class SingleProcess:
    """The world of one process: the whole batch is its share and there is nothing to reduce."""
    rank, size, is_root = 0, 1, True

    def share(self, batch_size):
        """The rows of the global batch this rank computes."""
        return slice(0, batch_size)

    def reduce(self, loss, grads, batch_size):
        """-> (loss, grads) of the whole batch from this rank's share: here, unchanged."""
        return loss, grads

    def any(self, flag):
        """True on every rank when it is True on any: a stop request (Ctrl-C, a time budget) ends all ranks
        at the same step."""
        return bool(flag)

    def broadcast(self, value):
        """Rank 0's value (anything JSON can carry) on every rank: a GUID, a timing."""
        return value

    def gather(self, value):
        """Every rank's value (anything JSON can carry), in rank order, on rank 0; None on the others."""
        return [value]

    def barrier(self):
        """Wait until every rank gets here (rank 0 has written what the others read)."""


class MPIWorld(SingleProcess):
    """K ranks of one MPI job, each computing a share of every batch."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size, self.is_root = comm.Get_rank(), comm.Get_size(), comm.Get_rank() == 0
        self.buffer = None  # the flat (n_params + 1,) float64 buffer (gradients, loss), made on the first step

    def share(self, batch_size):
        if batch_size < self.size:
            raise BabyError(f"batch_size {batch_size} is smaller than the {self.size} MPI ranks: each rank needs "
                            f"at least one sequence; raise `batch_size` or use fewer ranks")
        bounds = np.linspace(0, batch_size, self.size + 1).round().astype(int)  # as even as integers allow
        return slice(bounds[self.rank], bounds[self.rank + 1])

    def reduce(self, loss, grads, batch_size):
        from mpi4py import MPI
        rows = self.share(batch_size)
        weight = (rows.stop - rows.start) / batch_size   # a mean over the share -> its part of the global mean
        sizes = [g.size for g in grads.values()]
        if self.buffer is None:
            self.buffer = np.empty(sum(sizes) + 1, dtype=np.float64)  # float64: the sum is exact enough for K ranks
        np.concatenate([to_host(g).reshape(-1) for g in grads.values()], out=self.buffer[:-1])  # GPU: via the host
        self.buffer[:-1] *= weight
        self.buffer[-1] = loss * weight
        self.comm.Allreduce(MPI.IN_PLACE, self.buffer, op=MPI.SUM)
        offset, xp = 0, array_module(*grads.values())
        for g, size in zip(grads.values(), sizes):
            g.reshape(-1)[...] = xp.asarray(self.buffer[offset:offset + size])
            offset += size
        return float(self.buffer[-1]), grads

    def any(self, flag):
        from mpi4py import MPI
        flags = np.array([1 if flag else 0], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
        return bool(flags[0])

    def broadcast(self, value):
        # as JSON bytes in NumPy buffers (never mpi4py's pickled objects): length first, then the bytes
        data = np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8) if self.is_root else None
        length = np.array([0 if data is None else data.size], dtype=np.int64)
        self.comm.Bcast(length, root=0)
        data = data.copy() if self.is_root else np.empty(int(length[0]), dtype=np.uint8)
        self.comm.Bcast(data, root=0)
        return json.loads(data.tobytes().decode("utf-8"))

    def gather(self, value):
        # as JSON bytes, like broadcast: each rank's length to rank 0, then the bytes of all
        data = np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)
        lengths = np.zeros(self.size, dtype=np.int64)
        self.comm.Gather(np.array([data.size], dtype=np.int64), lengths, root=0)
        received = np.empty(int(lengths.sum()), dtype=np.uint8) if self.is_root else None
        self.comm.Gatherv(data, [received, lengths.tolist()] if self.is_root else None, root=0)
        if not self.is_root:
            return None
        ends = np.cumsum(lengths).tolist()
        return [json.loads(received[end - n:end].tobytes().decode("utf-8")) for n, end in zip(lengths.tolist(), ends)]

    def barrier(self):
        self.comm.Barrier()


def launched_by_mpi() -> bool:
    return any(int(os.environ.get(name, "1") or "1") > 1 for name in LAUNCHER_SIZE_VARIABLES)


def local_size() -> int:
    """How many ranks of this MPI job run on this machine (the launcher says it); 1 outside MPI. The cores of
    the machine are shared among them (littlebaby.workers.plan_threads)."""
    for name in LAUNCHER_LOCAL_SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit() and int(os.environ[name]) > 0:
            return int(os.environ[name])
    return 1


def local_rank() -> int:
    """This process's rank among the ranks on its own machine (MPICH, Open MPI and PMIx launchers say it); 0
    outside MPI. With one GPU per rank, it picks the GPU."""
    for name in LAUNCHER_LOCAL_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def world():
    """The MPI world when started by ``mpiexec -n K`` with K > 1, else a single process."""
    if not launched_by_mpi():
        return SingleProcess()
    try:
        from mpi4py import MPI
    except ImportError:
        raise BabyError("started by mpiexec but mpi4py is not installed: pip install -e \".[mpi]\"") from None
    return MPIWorld(MPI.COMM_WORLD) if MPI.COMM_WORLD.Get_size() > 1 else SingleProcess()
