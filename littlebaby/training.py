"""The training loop: one path for train, finetune and resume, and the configs that steer it.

Each step: sample a batch of random windows, forward + backward (``gpt.loss_and_grads``), clip the global
gradient norm, set the learning rate from the warmup + cosine schedule, AdamW step. Every ``eval_every``
steps the loss is measured on fixed train and validation batches and ``save`` is called.

The loop knows nothing of runs or files: it advances a ``TrainingState`` and calls back. Its caller
(littlebaby.lifecycle) makes the state, saves checkpoints and artifacts, and holds the ``StopRequest``: Ctrl-C or
SIGTERM asks the loop to stop, it finishes the step and returns, and the caller saves everything. A resumed run
restores weights, AdamW moments, the step and both RNG states, so it ends bitwise identical to a run that was
never interrupted.
"""

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from typing import Literal

import numpy as np
from tqdm import tqdm

from littlebaby import ages, kernels, parallel, seeds
from littlebaby import config as configlib
from littlebaby.config import option
from littlebaby.data import TokenData, fixed_batches, sample_batch, steps_per_epoch
from littlebaby.errors import BabyError, ConfigError
from littlebaby.model import GPT
from littlebaby.optim import AdamW, clip_grad_norm, lr_schedule
from littlebaby.workers import Workers

HOW_TO_RUN = ("device", "threads", "kernels")   # the options a resume may change: they do not change what is trained
DEFAULT_STEPS = 4000     # the budget when none is given: one epoch of the built-in corpus for the default Config


@dataclasses.dataclass
class TrainConfig(configlib.TypedConfig):
    """How to train, beyond the model's shape. At most one of the "budget" options is given. Each field is an
    option (see littlebaby.config)."""
    WHAT = "training config"

    age: str | None = option(None, "a preset of context, depth, width and steps: 3m, 6m, 12m, 24m or 48m "
                             "(littlebaby.ages); options given with it win over the preset, and the run's config "
                             "records which", group="age", metavar="AGE", finetune=False)
    epochs: float | None = option(None, "passes over the training split (random windows)", within="(0, inf)",
                                  group="budget", metavar="E")
    steps: int | None = option(None, "optimizer steps", within="[1, inf)", group="budget", metavar="S")
    max_time: float | None = option(None, "minutes of wall clock, steps estimated from timed steps; stops "
                                    "gracefully (complete and resumable)", within="(0, inf)", group="budget",
                                    metavar="MINUTES")
    eval_every: int | None = option(None, "steps between evals", within="[1, inf)", unset="about 10 evals per run",
                                    metavar="S")
    eval_batches: int = option(8, "fixed batches per split in each eval", within="[1, inf)")
    warmup_steps: int | None = option(None, "steps of linear warmup", within="[0, inf)",
                                      unset="5% of the steps, at most 200", metavar="S")
    min_lr: float | None = option(None, "the learning rate at the end of the cosine", within="[0, inf)",
                                  unset="lr / 10")
    weight_decay: float = option(0.1, "AdamW's decoupled decay of weight matrices", within="[0, inf)")
    grad_clip: float = option(1.0, "global gradient-norm clip", within="(0, inf)")
    beta1: float = option(0.9, "AdamW's first-moment decay", within="[0, 1)")
    beta2: float = option(0.99, "AdamW's second-moment decay", within="[0, 1)")
    seed: int = option(0, "init, dropout, batches and the completion all derive from it", within="[0, inf)")
    tokenizer: Literal["char", "bpe", "gpt2"] = option("char", "char: one token per character; bpe: byte-level "
                                                       "BPE; gpt2: GPT-2's, that of a run from baby import-hf "
                                                       "(not trained here)", finetune=False)
    vocab_size: int | None = option(None, "the vocabulary bpe learns", within="[1, inf)", unset="512 with bpe",
                                    finetune=False)
    completion_tokens: int = option(500, "tokens sampled into completion_G.txt after training; 0: none",
                                    within="[0, inf)")
    quality_tokens: int = option(5000, "tokens sampled (beside the completion) for the quality figures' real "
                                 "words and speaker lines; 0: those two figures are n/a", within="[0, inf)")
    device: Literal["cpu", "cuda"] = option("cpu", "where the arrays live: cpu (NumPy) or cuda (CuPy on an "
                                            "NVIDIA GPU; needs the cuda extra)")
    threads: int | None = option(None, "cores to train on: worker processes, each product on cores / workers "
                                 "BLAS threads (littlebaby.workers)", within="[1, inf)",
                                 unset="every core, or OMP_NUM_THREADS when set")
    kernels: Literal["auto", "numpy", "numba"] = option("auto", "numba: compiled kernels beside the NumPy layers "
                                                        "(littlebaby.kernels); numpy: the layers as written; auto: "
                                                        "numba when it compiles")

    def validate(self):
        """Types and intervals (littlebaby.config), then the checks that tie fields together."""
        super().validate()
        if self.age is not None:
            ages.check_age(self.age)
        budgets = [f.name for f in configlib.options(type(self))
                   if f.metadata["group"] == "budget" and getattr(self, f.name) is not None]
        if len(budgets) > 1:
            raise ConfigError(f"give one training budget, not {' and '.join(f'`{b}`' for b in budgets)}")
        if self.vocab_size is not None and self.tokenizer != "bpe":
            raise ConfigError("`vocab_size` is for `tokenizer='bpe'`; a char vocabulary is the text's characters")


@dataclasses.dataclass
class Plan(configlib.TypedConfig):
    """The concrete schedule worked out from a TrainConfig at the start; a resume reuses it unchanged."""
    WHAT = "training plan"

    steps: int                 # optimizer steps in the whole run
    eval_every: int            # steps between evals
    warmup_steps: int          # linear warmup steps
    min_lr: float              # learning rate at the end of the cosine
    steps_per_epoch: int       # len(train tokens) / (batch_size * n_ctx), rounded up


def make_plan(tc: TrainConfig, lr, n_train, batch_size, n_ctx, seconds_per_step=None) -> Plan:
    """Steps from the budget (epochs, steps, or minutes at the measured seconds_per_step), and the defaults
    that depend on them."""
    per_epoch = steps_per_epoch(n_train, batch_size, n_ctx)
    if tc.steps is not None:
        steps = tc.steps
    elif tc.epochs is not None:
        steps = max(1, round(tc.epochs * per_epoch))
    elif tc.max_time is not None:
        steps = max(1, int(tc.max_time * 60 / seconds_per_step))
    else:
        steps = DEFAULT_STEPS
    return Plan(steps=steps, eval_every=tc.eval_every or max(1, steps // 10),
                warmup_steps=min(200, steps // 20) if tc.warmup_steps is None else tc.warmup_steps,
                min_lr=lr / 10 if tc.min_lr is None else tc.min_lr, steps_per_epoch=per_epoch)


@contextlib.contextmanager
def running(gpt, tc, threads, rngs, batch_rows):
    """How a run computes: its kernels (``tc.kernels``) and its worker processes (``threads``: workers and BLAS
    threads per product, ``rngs`` one dropout generator each, batches of up to ``batch_rows`` rows). The kernels
    are chosen first, so the forked workers inherit them. Yields (workers, (kernel set, note))."""
    with kernels.using(tc.kernels, gpt.config.dtype) as in_use, \
            Workers(gpt, threads[0], rngs, batch_rows, threads[1]) as workers:
        yield workers, in_use


def time_steps(gpt, data, batch_size, n_ctx, tc, threads, n=3) -> float:
    """Seconds per training step as the run will take them (its kernels and workers), measured on a copy of
    the model so no state of the run changes."""
    probe = type(gpt).from_params(gpt.config, {k: v.copy() for k, v in gpt.params.items()})
    x, y = sample_batch(data.train, batch_size, n_ctx, np.random.default_rng(seeds.TIMING_SEED))  # (B, T) each
    rows = x[parallel.world().share(batch_size)].shape[0]
    rngs = [np.random.default_rng(seeds.TIMING_SEED) for _ in range(threads[0])]
    with running(probe, tc, threads, rngs, rows) as (workers, _):
        workers.loss_and_grads(x[:rows], y[:rows])  # warm up caches and BLAS threads
        start = time.perf_counter()
        for _ in range(n):
            workers.loss_and_grads(x[:rows], y[:rows])
        return (time.perf_counter() - start) / n * 1.15   # + optimizer and bookkeeping


def new_history() -> dict:
    """Per-step series and evals; saved in the checkpoint so a resumed run's report covers all steps."""
    return {"loss": [], "grad_norm": [], "lr": [], "step_time": [], "evals": [], "train_seconds": 0.0}


def history_ok(hist) -> bool:
    """Whether a history (read back from a checkpoint) has every series the loop appends to and evals that name
    their losses."""
    series_ok = all(isinstance(hist.get(key), list) and all(isinstance(v, (int, float)) for v in hist[key])
                    for key in ("loss", "grad_norm", "lr", "step_time"))
    evals_ok = isinstance(hist.get("evals"), list) and all(
        isinstance(e, dict) and all(isinstance(e.get(k), (int, float)) for k in ("step", "train_loss", "val_loss"))
        for e in hist["evals"])
    return series_ok and evals_ok and isinstance(hist.get("train_seconds"), (int, float))


@dataclasses.dataclass
class TrainingState:
    """Everything the loop reads and advances; what a checkpoint saves of it is enough to go on."""
    gpt: GPT                      # the model; its ``rng`` draws the dropout masks
    optimizer: AdamW              # the moments and the step count
    data: TokenData               # the encoded corpus and its train / validation split
    data_rng: np.random.Generator  # draws each step's batch
    config: TrainConfig
    plan: Plan
    history: dict                 # new_history()'s series, extended every step
    tokens_per_char: float        # to turn nats per token into bits per character
    threads: tuple = (1, None)    # worker processes and BLAS threads per product: workers.plan_threads
    dropout_rngs: list = dataclasses.field(default_factory=list)  # worker w's dropout generator; [0] is gpt.rng


class StopRequest:
    """Set by SIGINT / SIGTERM: the loop finishes its step and saves. A second Ctrl-C aborts at once."""

    def __init__(self, announce=True):
        self.reason = None
        self.announce = announce   # under MPI every rank gets the signal; only rank 0 says so
        self._previous = {}

    def _handle(self, signum, frame):
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = "interrupted"
        if self.announce:
            print("\nstopping after this step and saving (Ctrl-C again to abort without saving)", file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Progress:
    """A tqdm bar (loss, val loss, tokens/s, ETA) on a terminal; one line per eval when stderr is a pipe or
    a file, so logs stay readable; nothing at all when quiet."""

    def __init__(self, total, initial, quiet, tokens_per_step):
        self.total, self.tokens_per_step, self.recent = total, tokens_per_step, []
        self.plain = not quiet and not sys.stderr.isatty()
        self.bar = None
        if not quiet and not self.plain:
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def tokens_per_s(self):
        return self.tokens_per_step * len(self.recent) / max(sum(self.recent), 1e-9)

    def update(self, loss, val_loss, step_time):
        self.recent = (self.recent + [step_time])[-20:]   # a moving window: the rate now, not since start
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_loss:.3f}",
                                 tok_s=f"{self.tokens_per_s():,.0f}", refresh=False)
            self.bar.update(1)

    def log_eval(self, step, evaluation):
        if self.plain:
            rate = f", {self.tokens_per_s():,.0f} tokens/s" if self.recent else ""
            print(f"step {step}/{self.total}: train loss {evaluation['train_loss']:.4f}, "
                  f"val loss {evaluation['val_loss']:.4f}{rate}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def evaluate(workers, batches) -> float:
    """Mean eval-mode loss over fixed batches, each split among the workers."""
    return float(np.mean([workers.loss(x, y) for x, y in batches]))


def run_training(state: TrainingState, stop, save, quiet=False, time_budget_s=None, on_step=None) -> str:
    """Train ``state`` to its planned steps, or until ``stop.reason`` is set (a StopRequest); return the status:
    "complete", "interrupted" or "time budget reached".

    save(): called after each eval (the first, at step 0, when the history has none) to write a checkpoint.
    time_budget_s: stop gracefully when the next step would end past this many seconds.
    on_step(step): called after every step (tests use it to send signals).
    """
    gpt, opt, data, tc, hist = state.gpt, state.optimizer, state.data, state.config, state.history
    plan = state.plan
    cfg = gpt.config
    B, T = cfg.batch_size, cfg.n_ctx
    world = parallel.world()          # one process, or the ranks of ``mpiexec -n K``: see littlebaby/parallel.py
    rows = world.share(B)             # the rows of every batch this rank computes
    train_evals = fixed_batches(data.train, B, T, tc.eval_batches, tc.seed)
    val_evals = fixed_batches(data.val, B, T, tc.eval_batches, tc.seed)
    n_workers, blas_threads = state.threads
    rngs = state.dropout_rngs or [gpt.rng]
    with running(gpt, tc, state.threads, rngs, B) as (workers, (kernel_set, note)):
        if not quiet:
            cores = n_workers * (blas_threads or 1)
            print(f"training on {cores} core{'s' * (cores != 1)}: {workers.describe()}, {kernel_set} kernels"
                  + (f" ({note})" if note else ""), file=sys.stderr, flush=True)

        def eval_now():
            train_loss, val_loss = evaluate(workers, train_evals), evaluate(workers, val_evals)
            hist["evals"].append({"step": opt.step_count, "train_loss": train_loss, "val_loss": val_loss,
                                  "val_bpc": val_loss / math.log(2) * state.tokens_per_char})
            return hist["evals"][-1]

        def save_now():
            for rng, saved in zip(rngs, workers.rng_states()):   # the workers' streams, as far as they got
                rng.bit_generator.state = saved
            save()

        if not hist["evals"]:
            eval_now()
            save_now()   # step 0 on disk at once: the run is resumable from its first second
        session_start, session_steps = time.perf_counter(), 0
        progress = Progress(total=plan.steps, initial=opt.step_count, quiet=quiet, tokens_per_step=B * T)
        while opt.step_count < plan.steps and not world.any(stop.reason is not None):
            step_start = time.perf_counter()
            x, y = sample_batch(data.train, B, T, state.data_rng)          # (B, T), (B, T) the same on every rank
            loss, grads = workers.loss_and_grads(x[rows], y[rows])         # this rank's rows, shared by its workers
            loss, grads = world.reduce(loss, grads, B)                     # the whole batch's, on every rank
            norm = clip_grad_norm(grads, tc.grad_clip)
            if not (math.isfinite(loss) and math.isfinite(norm)):   # checked before the step: params stay good
                raise diverged(state, f"loss {loss}, gradient norm {norm}", opt.step_count + 1)
            lr = lr_schedule(opt.step_count, plan.steps, cfg.lr, plan.warmup_steps, plan.min_lr)
            opt.step(gpt.params, grads, lr)
            step_time = time.perf_counter() - step_start
            for key, value in (("loss", loss), ("grad_norm", norm), ("lr", lr), ("step_time", step_time)):
                hist[key].append(float(value))
            session_steps += 1
            step = opt.step_count
            if step % plan.eval_every == 0 or step == plan.steps:
                evaluation = eval_now()
                if not math.isfinite(evaluation["train_loss"] + evaluation["val_loss"]):
                    hist["evals"].pop()
                    raise diverged(state, f"eval loss {evaluation['val_loss']}", step)
                progress.log_eval(step, evaluation)
                save_now()
            progress.update(loss, hist["evals"][-1]["val_loss"], step_time)
            if on_step is not None:
                on_step(step)
            elapsed = time.perf_counter() - session_start
            if time_budget_s is not None and elapsed + elapsed / session_steps > time_budget_s:
                stop.reason = stop.reason or "time budget reached"
        for rng, saved in zip(rngs, workers.rng_states()):   # the caller's last checkpoint reads them
            rng.bit_generator.state = saved
    stop.reason = stop.reason or ("interrupted" if opt.step_count < plan.steps else None)  # another rank's
    progress.close()
    hist["train_seconds"] += time.perf_counter() - session_start
    return "complete" if opt.step_count >= plan.steps else stop.reason


def diverged(state, what, step) -> BabyError:
    """The error for a NaN / inf: nothing more is saved, so the checkpoint on disk is the last good one."""
    saved = state.history["evals"][-1]["step"] if state.history["evals"] else 0
    return BabyError(f"training diverged at step {step} ({what}); stopped without saving, so the checkpoint of "
                     f"step {saved} is the last good state. Train again with a lower `lr` (now "
                     f"{state.gpt.config.lr}), a smaller `grad_clip` (now {state.config.grad_clip}) or more "
                     f"`warmup_steps`")
