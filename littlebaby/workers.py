"""Data parallelism over worker processes on one machine: every core trains on its share of each batch.

A train step splits the batch's rows into one share per worker. This process is worker 0; workers 1 .. W-1
are copies of it made with ``fork`` when training starts. Every worker runs the model's forward and backward on
its rows (``GPT.loss_and_grads``), drawing dropout masks from its own generator, and the share-weighted sum of
their losses and gradients is the whole batch's: the loss is a mean over positions, so a share of n of B rows
weighs n / B. Then this process alone clips, takes the AdamW step and logs.

What is shared, and how. The parameters are moved into one block of shared memory before the fork, so the
workers read the weights this process updates in place, and nothing is copied per step. Each worker writes its
weighted gradients into its own shared buffer; the batch's token ids go through one more. The commands ("step
on rows a..b", "the eval loss of rows a..b", "your generator's state") and their answers are one line of JSON
on a pipe each way; nothing is ever pickled.

Why processes, not threads: NumPy releases the GIL inside its loops and BLAS, but a train step is several
hundred NumPy calls, and between them a thread needs the GIL back. Measured on a 2-core machine, two threads
ran two half-batches in 1.3-2x the time of one; two processes run them in the time of one. BLAS would start
threads of its own inside every product, so each worker's products use cores // W threads (one, when every
core has a worker): threads never outnumber cores.

A worker that dies (killed, out of memory) makes the next step raise a BabyError naming it; when this process
dies, the workers read the end of their pipe and exit. Ctrl-C reaches the whole process group: the workers
ignore it and this process stops the run as always (littlebaby.train.StopRequest). Where ``fork`` does not
exist (Windows), or the arrays live on a GPU, training runs in this process alone.
"""

import json
import math
import mmap
import os
import signal
import sys
import warnings

import numpy as np

from littlebaby.errors import BabyError

CAN_FORK = hasattr(os, "fork") and sys.platform != "darwin"   # macOS: fork and its system BLAS do not mix


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def plan_threads(batch_rows, threads=None, processes_here=1) -> tuple[int, int]:
    """(workers, BLAS threads per product) for a share of ``batch_rows`` rows.

    ``threads``: the cores to use, as a user asked (``--threads``); None takes ``OMP_NUM_THREADS`` when it is
    set, else every core this process may use, divided among the ``processes_here`` MPI ranks on this machine.
    There are never more workers than rows, nor workers x BLAS threads more than that number of cores.

    >>> plan_threads(16, threads=2), plan_threads(16, threads=8), plan_threads(3, threads=8)
    ((2, 1), (8, 1), (3, 2))
    """
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else max(1, available_cores() // processes_here)
    if threads < 1:
        raise BabyError(f"threads must be at least 1, got {threads}")
    workers = max(1, min(threads, batch_rows)) if CAN_FORK else 1
    return workers, max(1, threads // workers)


def shares(rows, n) -> list[slice]:
    """``rows`` rows in n contiguous shares as even as integers allow: shares(10, 3) -> [0:3], [3:7], [7:10]."""
    bounds = [round(rows * i / n) for i in range(n + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def shared_arrays(shapes, dtype) -> dict:
    """name -> a zeroed array of ``shapes[name]``, all in one block of memory that forked processes share."""
    itemsize = np.dtype(dtype).itemsize
    total = sum(math.prod(shape) for shape in shapes.values())
    block = mmap.mmap(-1, max(1, total * itemsize))                 # anonymous and MAP_SHARED: kept across fork
    flat = np.frombuffer(block, dtype=dtype, count=total)           # (total,)
    arrays, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        arrays[name] = flat[offset:offset + size].reshape(shape)    # a view into the block
        offset += size
    return arrays


class Workers:
    """Worker 0 (this process) and W - 1 forked worker processes training one model on shares of each batch.

        with Workers(gpt, n_workers, rngs, batch_rows) as workers:
            loss, grads = workers.loss_and_grads(idx, targets)   # the whole batch's, as gpt.loss_and_grads
            val = workers.loss(idx, targets)                      # evaluation mode
    ``rngs``: one dropout generator per worker; rngs[0] is this process's and stays in use here.
    """

    def __init__(self, gpt, n_workers, rngs, batch_rows, blas_threads=None):
        self.gpt, self.n, self.rngs, self.blas_threads = gpt, n_workers, list(rngs), blas_threads
        self.batch_rows = batch_rows
        self.children = []          # per worker process: its pid, command pipe, reply pipe, gradient buffers
        self._limit = None

    def describe(self) -> str:
        """How a step runs, for the line a run prints: "2 worker processes x 1 BLAS thread"."""
        blas = f" x {self.blas_threads} BLAS thread{'s' if self.blas_threads != 1 else ''}" if self.blas_threads else ""
        return (f"{self.n} worker processes" if self.n > 1 else "1 process") + blas

    # --- starting and stopping ------------------------------------------------------------------------------

    def __enter__(self):
        if self.blas_threads is not None:
            from threadpoolctl import threadpool_limits
            self._limit = threadpool_limits(limits=self.blas_threads, user_api="blas")  # forked workers inherit it
        if self.n > 1:
            try:
                self._start_children()
            except BaseException:   # a fork refused (out of memory, too many processes): stop the ones started
                self.close()
                raise
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop the worker processes and give BLAS back its threads; the parameters stay in shared memory."""
        for pid, commands, replies, _ in self.children:
            try:
                commands.write(b'{"op": "stop"}\n')
                commands.flush()
            except OSError:   # the worker is gone already
                pass
            commands.close()
            replies.close()
            os.waitpid(pid, 0)
        self.children = []
        if self._limit is not None:
            self._limit.restore_original_limits()
            self._limit = None

    def _start_children(self):
        params = self.gpt.params
        dtype = next(iter(params.values())).dtype
        shapes = {name: p.shape for name, p in params.items()}
        for name, array in shared_arrays(shapes, dtype).items():    # the weights every worker reads
            array[...] = params[name]
            params[name] = array
        self.batch = shared_arrays({"batch": (2, self.batch_rows, self.gpt.config.n_ctx)}, np.int64)["batch"]
        for w in range(1, self.n):
            grads = shared_arrays({**shapes, "loss": (1,)}, dtype)  # this worker's weighted gradients and loss
            command_read, command_write = os.pipe()
            reply_read, reply_write = os.pipe()
            with warnings.catch_warnings():  # Python 3.12+ warns of forking a process with threads (BLAS's):
                warnings.simplefilter("ignore", DeprecationWarning)  # the child only computes, holding no lock
                try:
                    pid = os.fork()
                except OSError as e:   # out of memory or of processes
                    raise BabyError(f"cannot start worker process {w} of {self.n - 1} ({e}); train on fewer "
                                    f"cores with `threads=1`") from None
            if pid == 0:                                            # the worker process
                os.close(command_write)
                os.close(reply_read)
                for _, commands, replies, _ in self.children:      # the earlier workers' pipes are not its own
                    commands.close()
                    replies.close()
                self._serve(w, os.fdopen(command_read, "rb"), os.fdopen(reply_write, "wb"), grads)
                os._exit(0)
            os.close(command_read)
            os.close(reply_write)
            self.children.append((pid, os.fdopen(command_write, "wb"), os.fdopen(reply_read, "rb"), grads))

    def _serve(self, w, commands, replies, grads_out):
        """A worker process's loop: one command per line until "stop" or the end of the pipe."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)                # Ctrl-C is for the main process to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        rng = self.rngs[w]
        for line in commands:
            message = json.loads(line)
            op = message["op"]
            try:
                if op == "stop":
                    break
                if op == "rng":
                    reply = {"state": rng.bit_generator.state}
                elif op == "set_rng":
                    rng.bit_generator.state = message["state"]
                    reply = {}
                else:
                    a, b, B = message["rows"]
                    idx, targets = self.batch[0, a:b], self.batch[1, a:b]   # its share: rows a .. b-1
                    if op == "step":
                        loss, grads = self.gpt.loss_and_grads(idx, targets, rng)
                        for name, g in grads.items():
                            np.multiply(g, (b - a) / B, out=grads_out[name])
                        reply = {"loss": float(loss) * (b - a) / B}
                    else:   # "loss"
                        reply = {"loss": float(self.gpt.loss(idx, targets)) * (b - a) / B}
            except Exception as e:  # sent back: the main process raises it as the step's error
                reply = {"error": f"{type(e).__name__}: {e}", "baby": isinstance(e, BabyError)}
            replies.write(json.dumps(reply).encode("utf-8") + b"\n")
            replies.flush()

    # --- talking to the workers -----------------------------------------------------------------------------

    def _send(self, child, message):
        pid, commands, _, _ = child
        try:
            commands.write(json.dumps(message).encode("utf-8") + b"\n")
            commands.flush()
        except OSError:
            raise self._lost(pid) from None

    def _receive(self, child):
        pid, _, replies, _ = child
        line = replies.readline()
        if not line:
            raise self._lost(pid)
        reply = json.loads(line)
        if "error" in reply:
            error = reply["error"]
            raise BabyError(error.split(": ", 1)[1]) if reply.get("baby") else RuntimeError(f"worker process: {error}")
        return reply

    def _lost(self, pid):
        return BabyError(f"worker process {pid} stopped unexpectedly (killed, or out of memory?); the run can "
                         f"be resumed from its last checkpoint")

    def _scatter(self, op, idx, targets):
        """Send op for their rows to the workers; -> the rows worker 0 (this process) computes."""
        B = idx.shape[0]
        parts = shares(B, self.n)
        if self.children:
            self.batch[0, :B], self.batch[1, :B] = idx, targets
            for child, part in zip(self.children, parts[1:]):
                self._send(child, {"op": op, "rows": [part.start, part.stop, B]})
        return parts[0]

    def loss_and_grads(self, idx, targets):
        """idx, targets (B, T) -> (loss, grads) of the whole batch, as ``gpt.loss_and_grads`` on it."""
        if not self.children:
            return self.gpt.loss_and_grads(idx, targets, self.rngs[0])
        B = idx.shape[0]
        mine = self._scatter("step", idx, targets)
        loss, grads = self.gpt.loss_and_grads(idx[mine], targets[mine], self.rngs[0])
        weight = (mine.stop - mine.start) / B
        loss *= weight
        for g in grads.values():
            g *= weight
        for child in self.children:   # in worker order, so the sum is the same at every step of every run
            loss += self._receive(child)["loss"]
            for name, g in grads.items():
                g += child[3][name]
        return loss, grads

    def loss(self, idx, targets) -> float:
        """Evaluation-mode mean loss of the whole batch (no dropout), share by share; a batch of fewer rows than
        workers (the last of a pass over a text) in this process alone, so that no share is empty."""
        if not self.children or idx.shape[0] < self.n:
            return float(self.gpt.loss(idx, targets))
        B = idx.shape[0]
        mine = self._scatter("loss", idx, targets)
        loss = float(self.gpt.loss(idx[mine], targets[mine])) * (mine.stop - mine.start) / B
        return loss + sum(self._receive(child)["loss"] for child in self.children)

    def rng_states(self) -> list:
        """Every worker's dropout generator state, worker 0 first (JSON, for the checkpoint)."""
        states = [self.rngs[0].bit_generator.state]
        for child in self.children:
            self._send(child, {"op": "rng"})
            states.append(self._receive(child)["state"])
        return states

    def set_rng_states(self, states):
        """Restore the generators from ``rng_states()`` of a run with as many workers (before or after the
        workers start)."""
        for rng, state in zip(self.rngs, states):
            rng.bit_generator.state = state
        for child, state in zip(self.children, states[1:]):
            self._send(child, {"op": "set_rng", "state": state})
            self._receive(child)
