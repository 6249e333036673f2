"""The training loop: one path for train, finetune and resume.

Each step: sample a batch of random windows, forward + backward (``gpt.loss_and_grads``), clip the global
gradient norm, set the learning rate from the warmup + cosine schedule, AdamW step. Every ``eval_every``
steps the loss is measured on fixed train and validation batches and a checkpoint is written.

Ctrl-C or SIGTERM asks the loop to stop: it finishes the step, writes the checkpoint and the artifacts so far,
and prints how to resume. A resumed run restores weights, AdamW moments, the step and both RNG states, so it
ends bitwise identical to a run that was never interrupted.
"""

import dataclasses
import math
import signal
import sys
import threading
import time
from typing import Literal

import numpy as np
from tqdm import tqdm

from littlebaby import checkpoint, parallel, report
from littlebaby import config as configlib
from littlebaby.data import fixed_batches, sample_batch, steps_per_epoch
from littlebaby.errors import BabyError, ConfigError
from littlebaby.generate import sample_text
from littlebaby.optim import clip_grad_norm, lr_schedule
from littlebaby.runs import atomic_write_text, remove_stale_temps

DEFAULT_STEPS = 4000     # the budget when none of epochs / steps / max_time is given (see api.DEFAULT_MODEL)


@dataclasses.dataclass
class TrainConfig(configlib.TypedConfig):
    """How to train, beyond the model's shape. At most one of epochs / steps / max_time is the budget."""
    WHAT = "training config"

    epochs: float | None = None          # budget in passes over the training split (random windows)
    steps: int | None = None             # budget in optimizer steps
    max_time: float | None = None        # budget in minutes of wall clock; steps estimated from timed steps
    eval_every: int | None = None        # steps between evals; None: about 10 evals per run
    eval_batches: int = 8                # fixed batches per split in each eval
    warmup_steps: int | None = None      # linear warmup; None: 5% of the steps, at most 200
    min_lr: float | None = None          # the cosine schedule's floor; None: lr / 10
    weight_decay: float = 0.1            # AdamW decoupled decay of weight matrices
    grad_clip: float = 1.0               # global gradient-norm clip
    beta1: float = 0.9                   # AdamW first-moment decay
    beta2: float = 0.99                  # AdamW second-moment decay
    seed: int = 0                        # init, dropout, batches and the completion all derive from it
    tokenizer: Literal["char", "bpe", "gpt2"] = "char"  # char: per character; bpe: byte-level BPE; gpt2: imported
    vocab_size: int | None = None        # bpe only: the vocabulary to learn (default 512)
    completion_tokens: int = 500         # tokens sampled into completion_G.txt after training
    device: Literal["cpu", "cuda"] = "cpu"   # where the arrays live: cpu (NumPy) or cuda (CuPy on a GPU)

    def __post_init__(self):
        self.validate()

    def validate(self):
        configlib.check_types(self, "training config")
        budgets = [k for k in ("epochs", "steps", "max_time") if getattr(self, k) is not None]
        if len(budgets) > 1:
            raise ConfigError(f"give one training budget, not {' and '.join(budgets)}: "
                              "--epochs E, --steps S or --max-time MINUTES")
        for key in ("epochs", "steps", "max_time", "eval_every", "eval_batches", "warmup_steps",
                    "vocab_size", "completion_tokens"):
            value = getattr(self, key)
            if value is not None and (value < 0 if key in ("warmup_steps", "completion_tokens") else value <= 0):
                raise ConfigError(f"training config key {key!r} must be positive, got {value}")
        if self.vocab_size is not None and self.tokenizer != "bpe":
            raise ConfigError("vocab_size is for --tokenizer bpe; a char vocabulary is the text's characters")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("beta1 and beta2 must be in [0, 1)")




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


def time_steps(gpt, data, batch_size, n_ctx, n=3) -> float:
    """Seconds per training step, measured on a copy of the model so no state of the run changes."""
    probe = type(gpt).from_params(gpt.config, {k: v.copy() for k, v in gpt.params.items()})
    rng = np.random.default_rng(12345)
    x, y = sample_batch(data.train, batch_size, n_ctx, rng)                 # (B, T), (B, T)
    probe.loss_and_grads(x, y)  # warm up caches and BLAS threads
    start = time.perf_counter()
    for _ in range(n):
        probe.loss_and_grads(x, y)
    return (time.perf_counter() - start) / n * 1.15   # + optimizer and bookkeeping


def new_history() -> dict:
    """Per-step series and evals; saved in the checkpoint so a resumed run's report covers all steps."""
    return {"loss": [], "grad_norm": [], "lr": [], "step_time": [], "evals": [], "train_seconds": 0.0}


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


def evaluate(gpt, batches) -> float:
    """Mean eval-mode loss over fixed batches."""
    return float(np.mean([gpt.loss(x, y) for x, y in batches]))


def run_training(state, quiet=False, time_budget_s=None, on_step=None) -> dict:
    """Train ``state`` (a littlebaby.api.RunState) to its planned steps or until asked to stop.

    time_budget_s: stop gracefully when the next step would end past this many seconds.
    on_step(step): called after every step (tests use it to send signals).
    Returns the report (also written to outputs/report_G.json).
    """
    gpt, opt, data, tc, hist = state.gpt, state.optimizer, state.data, state.train_config, state.history
    plan = state.plan
    cfg = gpt.config
    B, T = cfg.batch_size, cfg.n_ctx
    world = parallel.world()          # one process, or the ranks of ``mpiexec -n K``: see littlebaby/parallel.py
    rows = world.share(B)             # the rows of every batch this rank computes
    quiet = quiet or not world.is_root
    save = save_checkpoint if world.is_root else (lambda state: None)   # rank 0 writes, the others only train
    train_evals = fixed_batches(data.train, B, T, tc.eval_batches, tc.seed)
    val_evals = fixed_batches(data.val, B, T, tc.eval_batches, tc.seed)

    def eval_now():
        train_loss, val_loss = evaluate(gpt, train_evals), evaluate(gpt, val_evals)
        hist["evals"].append({"step": opt.step_count, "train_loss": train_loss, "val_loss": val_loss,
                              "val_bpc": val_loss / math.log(2) * state.tokens_per_char})
        return hist["evals"][-1]

    check_history(hist, state.paths.checkpoint)
    if world.is_root:
        remove_stale_temps(state.paths.out, state.paths.guid)    # what a killed earlier session left half-written
    with StopRequest(announce=world.is_root) as stop:   # from here to the last artifact, a signal only asks the loop to stop
        if not hist["evals"]:
            eval_now()
            save(state)   # step 0 on disk at once: the run is resumable from its first second
        session_start, session_steps = time.perf_counter(), 0
        progress = Progress(total=plan.steps, initial=opt.step_count, quiet=quiet, tokens_per_step=B * T)
        while opt.step_count < plan.steps and not world.any(stop.reason is not None):
            step_start = time.perf_counter()
            x, y = sample_batch(data.train, B, T, state.data_rng)          # (B, T), (B, T) the same on every rank
            loss, grads = gpt.loss_and_grads(x[rows], y[rows])
            loss, grads = world.reduce(loss, grads, B)                       # the whole batch's, on every rank
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
                save(state)
            progress.update(loss, hist["evals"][-1]["val_loss"], step_time)
            if on_step is not None:
                on_step(step)
            elapsed = time.perf_counter() - session_start
            if time_budget_s is not None and elapsed + elapsed / session_steps > time_budget_s:
                stop.reason = stop.reason or "time budget reached"
        stop.reason = stop.reason or ("interrupted" if opt.step_count < plan.steps else None)  # another rank's
        progress.close()   # still inside StopRequest: a signal now waits until the artifacts are written
        hist["train_seconds"] += time.perf_counter() - session_start
        status = "complete" if opt.step_count >= plan.steps else stop.reason
        if not world.is_root:
            return {"status": status, "steps": opt.step_count}
        save_checkpoint(state)
        return finish(state, status, quiet)


def check_history(hist, path) -> None:
    """A resumed history must have every series the loop appends to and evals that name their losses."""
    series_ok = all(isinstance(hist.get(key), list) and all(isinstance(v, (int, float)) for v in hist[key])
                    for key in ("loss", "grad_norm", "lr", "step_time"))
    evals_ok = isinstance(hist.get("evals"), list) and all(
        isinstance(e, dict) and all(isinstance(e.get(k), (int, float)) for k in ("step", "train_loss", "val_loss"))
        for e in hist["evals"])
    if not (series_ok and evals_ok and isinstance(hist.get("train_seconds"), (int, float))):
        raise BabyError(f"the training history in {path} is damaged; the run cannot be resumed, train it again")


def diverged(state, what, step) -> BabyError:
    """The error for a NaN / inf: nothing more is saved, so the checkpoint on disk is the last good one."""
    saved = state.history["evals"][-1]["step"] if state.history["evals"] else 0
    return BabyError(f"training diverged at step {step} ({what}); stopped without saving, so the checkpoint of "
                     f"step {saved} in {state.paths.checkpoint} is the last good state. Train again with a lower "
                     f"--lr (now {state.gpt.config.lr}), a smaller --grad-clip (now {state.train_config.grad_clip}) "
                     f"or more --warmup-steps")


def save_checkpoint(state):
    checkpoint.save_checkpoint(state.paths.checkpoint, state.gpt.params, state.optimizer.state_dict(),
                               state.data_rng.bit_generator.state, state.gpt.rng.bit_generator.state,
                               state.history)


def finish(state, status, quiet) -> dict:
    """Write the model, report, loss curve and (when complete) the completion; say where they are."""
    paths = state.paths
    checkpoint.save_model(paths.model, state.gpt.params, state.gpt.config.to_dict(), state.record.guid)
    summary = report.build_report(state, status)
    report.save_report(summary, paths.report_json, paths.report_png)
    if status == "complete" and state.train_config.completion_tokens:
        rng = np.random.default_rng([state.train_config.seed, 4])
        text = sample_text(state.gpt, state.tokenizer, "", state.train_config.completion_tokens, rng=rng)
        atomic_write_text(paths.completion, text)
    if not quiet:
        print(report.summary_lines(summary, paths, state.out_flag), file=sys.stderr)
    return summary
