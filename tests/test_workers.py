"""Worker processes (littlebaby/workers.py): W processes computing shares of a batch give the batch's loss
and gradients, with each worker's own dropout masks, and fail clearly when a worker dies."""

import os
import signal

import numpy as np
import pytest

from littlebaby.errors import BabyError
from littlebaby.model import GPT, Config
from littlebaby.optim import AdamW
from littlebaby.workers import CAN_FORK, Workers, plan_threads, shares

needs_fork = pytest.mark.skipif(not CAN_FORK, reason="worker processes need fork (Linux)")
CONFIG = dict(vocab_size=13, n_ctx=12, n_emb=16, head_size=16, n_heads=2, n_layers=2, batch_size=5)


def batch(seed=0, rows=5):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 13, (rows, 12)), rng.integers(0, 13, (rows, 12))


def test_plan_threads_never_oversubscribes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for threads in (1, 2, 3, 8):
        for rows in (1, 2, 5, 64):
            workers, blas = plan_threads(rows, threads)
            assert 1 <= workers <= rows and workers * blas <= max(threads, 1)
            assert workers == (min(threads, rows) if CAN_FORK else 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert plan_threads(64) == ((3, 1) if CAN_FORK else (1, 3))
    with pytest.raises(BabyError, match="threads must be at least 1"):
        plan_threads(4, 0)


def test_shares_cover_the_rows_in_order():
    assert shares(10, 3) == [slice(0, 3), slice(3, 7), slice(7, 10)]
    for rows in range(1, 20):
        for n in range(1, rows + 1):
            parts = shares(rows, n)
            assert parts[0].start == 0 and parts[-1].stop == rows and all(p.stop > p.start for p in parts)
            assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))


@needs_fork
@pytest.mark.parametrize("n_workers", [2, 3])
def test_workers_give_the_whole_batch_loss_and_gradients(n_workers):
    """No dropout: the shares' weighted sum is the full batch's mean, to float64 rounding, step after step
    (the workers read the weights this process updates)."""
    config = Config(**CONFIG, dropout=0.0, dtype="float64")
    single, shared = GPT(config, seed=1), GPT(config, seed=1)
    opt_single, opt_shared = AdamW(single.params, lr=1e-2), AdamW(shared.params, lr=1e-2)
    rngs = [np.random.default_rng(w) for w in range(n_workers)]
    with Workers(shared, n_workers, rngs, batch_rows=5) as workers:
        assert len(workers.children) == n_workers - 1
        for step in range(3):
            idx, targets = batch(step)
            loss, grads = single.loss_and_grads(idx, targets)
            loss_w, grads_w = workers.loss_and_grads(idx, targets)
            assert abs(loss_w - loss) < 1e-12 * abs(loss)
            for name in grads:
                assert np.allclose(grads_w[name], grads[name], rtol=0, atol=1e-12), name
            assert abs(workers.loss(idx, targets) - single.loss(idx, targets)) < 1e-12
            opt_single.step(single.params, grads)
            opt_shared.step(shared.params, grads_w)


@needs_fork
def test_each_worker_draws_its_own_dropout_masks():
    """With dropout, worker w's share is computed with generator w: exactly the weighted sum of the shares
    computed one by one with copies of those generators, and the generators move on as if so."""
    config = Config(**CONFIG, dropout=0.3, dtype="float64")
    gpt, reference = GPT(config, seed=2), GPT(config, seed=2)
    rngs = [np.random.default_rng([7, w]) for w in range(2)]
    copies = [np.random.default_rng([7, w]) for w in range(2)]
    idx, targets = batch(3)
    with Workers(gpt, 2, rngs, batch_rows=5) as workers:
        loss, grads = workers.loss_and_grads(idx, targets)
        states = workers.rng_states()
    expected_loss, expected = 0.0, {}
    for part, rng in zip(shares(5, 2), copies):
        part_loss, part_grads = reference.loss_and_grads(idx[part], targets[part], rng)
        weight = (part.stop - part.start) / 5
        expected_loss += part_loss * weight
        for name, g in part_grads.items():
            expected[name] = expected.get(name, 0) + g * weight
    assert loss == pytest.approx(expected_loss, rel=1e-14)
    assert all(np.allclose(grads[name], expected[name], rtol=0, atol=1e-14) for name in grads)
    assert states == [rng.bit_generator.state for rng in copies]
    assert copies[0].bit_generator.state != copies[1].bit_generator.state


@needs_fork
def test_rng_states_can_be_restored_in_running_workers():
    config = Config(**CONFIG, dropout=0.3, dtype="float64")
    gpt = GPT(config, seed=2)
    idx, targets = batch(4)
    with Workers(gpt, 2, [np.random.default_rng(w) for w in range(2)], batch_rows=5) as workers:
        saved = workers.rng_states()
        first, _ = workers.loss_and_grads(idx, targets)
        workers.set_rng_states(saved)
        again, _ = workers.loss_and_grads(idx, targets)
    assert first == again


@needs_fork
def test_a_killed_worker_is_a_clear_error():
    gpt = GPT(Config(**CONFIG, dropout=0.0), seed=0)
    idx, targets = batch()
    with Workers(gpt, 2, [np.random.default_rng(w) for w in range(2)], batch_rows=5) as workers:
        os.kill(workers.children[0][0], signal.SIGKILL)
        os.waitpid(workers.children[0][0], 0)
        workers.children[0] = (os.getpid(), *workers.children[0][1:])   # reaped: close() must not wait for it
        with pytest.raises(BabyError, match="worker process .* stopped unexpectedly"):
            workers.loss_and_grads(idx, targets)
        workers.children = []


@needs_fork
def test_a_worker_error_reaches_the_caller():
    """An error inside a worker's step is raised here (bad targets only the worker's rows see)."""
    gpt = GPT(Config(**CONFIG, dropout=0.0), seed=0)
    idx, targets = batch()
    targets[4, 0] = 99                                                # out of the vocabulary, in worker 1's rows
    with Workers(gpt, 2, [np.random.default_rng(w) for w in range(2)], batch_rows=5) as workers:
        with pytest.raises(BabyError, match="targets holds token ids outside"):
            workers.loss_and_grads(idx, targets)


@needs_fork
def test_a_refused_fork_is_a_clear_error_and_leaves_no_worker(monkeypatch):
    gpt = GPT(Config(**CONFIG, dropout=0.0), seed=0)
    started = []
    real_fork = os.fork

    def fork_once():   # the first worker starts, the second is refused
        if started:
            raise OSError(12, "Cannot allocate memory")
        started.append(real_fork())
        return started[-1]

    monkeypatch.setattr(os, "fork", fork_once)
    workers = Workers(gpt, 3, [np.random.default_rng(w) for w in range(3)], batch_rows=5)
    with pytest.raises(BabyError, match="cannot start worker process 2 of 2 .*Cannot allocate memory.*threads=1"):
        workers.__enter__()
    assert workers.children == [] and started and started[0] > 0
    with pytest.raises(ChildProcessError):   # the worker that did start was stopped and reaped
        os.waitpid(started[0], os.WNOHANG)
