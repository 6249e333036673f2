"""A run's life on disk: start it (train or finetune), resume it, save it. Below the API, above the loop.

    train_run     a new model on new text                      both end in start_run: encode the data, plan
    finetune_run  a run's model on new text, as G_finetuned    the schedule, write the record and tokenizer
    resume_run    a stopped run, from its checkpoint           then train_and_save, as start_run does
    load_run      a run's record, model and tokenizer: the one loader of finetune, generate and info

``train_and_save`` is the one place that runs the loop (littlebaby.training) and writes a run's files: the
checkpoint at every eval and at the end, then the model, the report, the loss curve and the completion.
Under MPI every rank runs all of this; rank 0 alone writes files, the others read what it wrote.
"""

import dataclasses
import pathlib
import sys

import numpy as np

from littlebaby import (__version__, ages, builtin, checkpoint, corpus, device, kernels, parallel, report, seeds,
                        workers)
from littlebaby.data import TokenData, encode_to_file, read_text
from littlebaby.errors import BabyError
from littlebaby.files import atomic_write_json, atomic_write_text, read_json
from littlebaby.sampling import sample_text
from littlebaby.model import GPT, Config
from littlebaby.optim import AdamW
from littlebaby.runs import (FINETUNE_SUFFIX, RunPaths, RunRecord, load_record, make_out_dirs, new_guid,
                             remove_stale_temps, resolve_run, utc_now)
from littlebaby.tokenizers import load_tokenizer, train_tokenizer
from littlebaby.training import (Plan, StopRequest, TrainConfig, TrainingState, history_ok, make_plan,
                                 new_history, run_training, running, time_steps)


@dataclasses.dataclass
class Run:
    """A run on disk: its record, its model and tokenizer."""
    guid: str
    paths: RunPaths
    record: RunRecord
    gpt: GPT
    tokenizer: object
    builtin: bool = False         # the pretrained baby inside the package (littlebaby.builtin): read, never written

    @property
    def report(self) -> dict:
        return read_json(self.paths.report_json, "report")

    def output_paths(self, out) -> RunPaths:
        """Where new files of this run go (generations): beside its own, or under ``out`` for the built-in."""
        return RunPaths(pathlib.Path(out), self.guid) if self.builtin else self.paths


@dataclasses.dataclass
class RunState:
    """A run being trained: where its files go, its record and tokenizer, and what the loop advances."""
    paths: RunPaths
    record: RunRecord
    tokenizer: object
    training: TrainingState

    def run(self) -> Run:
        return Run(self.record.guid, self.paths, self.record, self.training.gpt, self.tokenizer)


def load_run(run: str, out=".") -> Run:
    """The run named by a GUID, a unique prefix, ``last``, or ``pretrained`` (the baby that ships inside the
    package, littlebaby.builtin), with its weights and tokenizer."""
    if run == builtin.NAME:
        with builtin.shipped_files():   # missing or damaged: one line saying so and what to do
            return dataclasses.replace(load_run(builtin.guid(), builtin.folder()), builtin=True)
    guid = resolve_run(run, out)
    paths = RunPaths(pathlib.Path(out), guid)
    record = load_record(out, guid)
    params, model_config = checkpoint.load_model(paths.model)
    config = Config.from_dict(model_config, f"model config in {paths.model}")
    gpt = GPT.from_params(config, {k: np.array(v) for k, v in params.items()}, seed=record.seed)
    tokenizer = load_tokenizer(paths.tokenizer)
    if tokenizer.vocab_size != config.vocab_size:
        raise BabyError(f"{paths.tokenizer} has {tokenizer.vocab_size} tokens but the model expects "
                        f"{config.vocab_size}; the run's files are from different runs")
    return Run(guid, paths, record, gpt, tokenizer)


def train_run(model_config: Config, tc: TrainConfig, data=None, out=".", quiet=False, on_step=None,
              command=None) -> Run:
    """Train a new model of ``model_config`` (its vocab_size is set here, by the tokenizer) on ``data``."""
    kernels.check(tc.kernels, model_config.dtype)   # numba asked for and unusable, a missing CuPy or GPU:
    xp = device.array_module_for(tc.device)         # said before any work
    source, text_path = data_source(data)
    tokenizer = train_tokenizer(tc.tokenizer, read_text(text_path), tc.vocab_size)
    model_config.vocab_size = tokenizer.vocab_size   # the one field no option sets (a positive int: no new check)
    gpt = GPT(model_config, seed=tc.seed).move_to(xp)
    guid = parallel.world().broadcast(new_guid())   # under MPI every rank trains the run rank 0 named
    return start_run("train", None, guid, out, gpt, tokenizer, tc, source, text_path, quiet, on_step, command)


def finetune_run(parent: Run, model_options: dict, tc: TrainConfig, data=None, out=".", overwrite=False,
                 quiet=False, on_step=None, command=None) -> Run:
    """Train ``parent``'s model further on ``data``, as the run ``<guid>_finetuned``, with ``model_options`` (the
    fields a finetune may set) over the parent's config. A char vocabulary grows by the new text's characters:
    old ids keep their meaning, the new rows start random."""
    guid = parent.guid + FINETUNE_SUFFIX
    if RunPaths(pathlib.Path(out), guid).config.exists() and not overwrite:
        raise BabyError(f"run {guid} already exists in {pathlib.Path(out).resolve()}; "
                        f"pass `overwrite=True` to replace it")
    kernels.check(tc.kernels, parent.gpt.config.dtype)   # before any work
    xp = device.array_module_for(tc.device)
    source, text_path = data_source(data)
    tokenizer = parent.tokenizer
    if tokenizer.kind == "char":
        tokenizer = tokenizer.extend(read_text(text_path))
    gpt = parent.gpt
    if tokenizer.vocab_size > gpt.config.vocab_size:
        gpt.grow_vocab(tokenizer.vocab_size, seeds.stream(tc.seed, seeds.Stream.NEW_TOKEN_ROWS))
    model_config = Config.from_dict({**gpt.config.to_dict(), **model_options})
    gpt = GPT.from_params(model_config, gpt.params, seed=tc.seed).move_to(xp)
    return start_run("finetune", parent.guid, guid, out, gpt, tokenizer, tc, source, text_path, quiet, on_step,
                     command)


def start_run(kind, parent, guid, out, gpt, tokenizer, tc, source, text_path, quiet, on_step, command=None) -> Run:
    """Encode the data, plan the schedule, write the run's record (with the command line that asked for it, and
    its age: the preset and what overrode it) and tokenizer, and train."""
    paths = RunPaths(pathlib.Path(out), guid)
    threads = plan_threads(gpt.config, tc)
    dropout = dropout_rngs(tc.seed, threads[0])   # each worker's own stream; one process keeps gpt's
    gpt.rng = dropout[0]
    if parallel.world().is_root:
        make_out_dirs(out)
    data = open_tokens(paths, tokenizer, text_path, encode=True)
    n_tokens, cfg = data.tokens.size, gpt.config
    data.check_fits(cfg.n_ctx)
    seconds_per_step = (time_steps(gpt, data, cfg.batch_size, cfg.n_ctx, tc, threads)
                        if tc.max_time is not None else None)
    seconds_per_step = parallel.world().broadcast(seconds_per_step)   # one plan for all ranks
    plan = make_plan(tc, cfg.lr, data.n_train, cfg.batch_size, cfg.n_ctx, seconds_per_step)
    n_chars = len(read_text(text_path))
    record = RunRecord(
        version=__version__, guid=guid, kind=kind, parent=parent, created=utc_now(), seed=tc.seed,
        model=cfg.to_dict(), training=tc.to_dict(), plan=plan.to_dict(),
        tokenizer={"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
        data={"source": source, "path": str(pathlib.Path(text_path).resolve()), "chars": n_chars,
              "tokens": n_tokens, "train_tokens": data.n_train, "val_tokens": n_tokens - data.n_train,
              "token_dtype": str(data.tokens.dtype)},
        command=command, age=ages.age_record(tc.age, {**cfg.to_dict(), **tc.to_dict()}) if tc.age else None)
    if parallel.world().is_root and not quiet and record.age and record.age["overridden"]:
        print(ages.override_note(record.age), file=sys.stderr)
    if parallel.world().is_root:
        tokenizer.save(paths.tokenizer)
        atomic_write_json(paths.config, record.to_dict())
    training = TrainingState(gpt, new_optimizer(gpt, tc), data, seeds.stream(tc.seed, seeds.Stream.TRAIN_BATCHES),
                             tc, plan, new_history(), n_tokens / n_chars, threads, dropout)
    state = RunState(paths, record, tokenizer, training)
    train_and_save(state, quiet, on_step, time_budget_s=tc.max_time * 60 if tc.max_time is not None else None)
    return state.run()


def resume_run(run, out=".", how=None, quiet=False, on_step=None) -> Run:
    """Continue a stopped run from its checkpoint: weights, AdamW state, step, every RNG state, history.
    ``how``: new values of the options of training.HOW_TO_RUN (device, threads, kernels), for a run that moved
    to another machine."""
    guid = resolve_run(run, out)
    paths = RunPaths(pathlib.Path(out), guid)
    record = load_record(out, guid)
    if record.kind == "import":
        raise BabyError(f"run {guid} was imported (from the original notebook or a GPT-2 folder), not trained "
                        f"here, so there is nothing to resume; to train it further, finetune it on new text "
                        f"(`baby finetune {guid}`, or littlebaby.finetune)")
    tc = dataclasses.replace(TrainConfig.from_dict(record.training), **(how or {}))
    plan = Plan.from_dict(record.plan)
    if not paths.checkpoint.exists():
        raise BabyError(f"run {guid} has no checkpoint ({paths.checkpoint}); it cannot be resumed")
    saved = checkpoint.load_checkpoint(paths.checkpoint)
    if saved["optimizer"]["step"] >= plan.steps and paths.model.exists():  # else: killed before its last files
        raise BabyError(f"run {guid} is already complete ({plan.steps} steps); "
                        f"to train further, `baby finetune {guid}`")
    if not history_ok(saved["history"]):
        raise BabyError(f"the training history in {paths.checkpoint} is damaged; the run cannot be resumed, "
                        f"train it again")
    cfg = Config.from_dict(record.model, f"model config of {guid}")
    gpt = GPT.from_params(cfg, {k: np.array(v) for k, v in saved["params"].items()}, seed=tc.seed)
    gpt.move_to(device.array_module_for(tc.device))
    threads = plan_threads(cfg, tc)
    dropout = dropout_rngs(tc.seed, threads[0], saved["dropout_rngs"])
    gpt.rng = dropout[0]
    optimizer = new_optimizer(gpt, tc)
    optimizer.load_state_dict(saved["optimizer"])
    tokenizer = load_tokenizer(paths.tokenizer)
    text_path = data_source(record.data["source"], record.data["path"])[1]
    data = open_tokens(paths, tokenizer, text_path, encode=False)
    data_rng = np.random.default_rng()
    data_rng.bit_generator.state = saved["data_rng"]
    training = TrainingState(gpt, optimizer, data, data_rng, tc, plan, saved["history"],
                             record.data["tokens"] / record.data["chars"], threads, dropout)
    state = RunState(paths, record, tokenizer, training)
    train_and_save(state, quiet, on_step)
    return state.run()


def open_tokens(paths, tokenizer, text_path, encode) -> TokenData:
    """The run's encoded corpus: rank 0 encodes ``text_path`` when ``encode`` or when the file is missing (a
    resume after it was deleted), every rank then reads it."""
    world = parallel.world()
    if world.is_root and (encode or not paths.tokens.exists()):
        encode_to_file(text_path, tokenizer, paths.tokens)
    world.barrier()
    return TokenData.open(paths.tokens, tokenizer.vocab_size)


def plan_threads(config, tc) -> tuple:
    """(worker processes, BLAS threads per product) for this rank's share of each batch: every core of the
    machine divided among its MPI ranks (littlebaby.workers.plan_threads); one process on a GPU."""
    if tc.device != "cpu":
        return 1, None
    rows = parallel.world().share(config.batch_size)
    return workers.plan_threads(rows.stop - rows.start, tc.threads, parallel.local_size())


def dropout_rngs(seed, n_workers, saved_states=()) -> list:
    """The dropout generators of this process's workers, each at the state saved for its share when there is
    one (littlebaby.seeds.dropout_rng). Worker w of rank r computes share r + ranks * w of every batch, so one
    process with one worker (and rank r of an MPI job) draws from share 0 (share r) as it always did, and a
    resumed run goes on with every share's stream. A share the checkpoint lacks (the run now has more workers
    than it had) never drew before, so it starts its stream fresh."""
    world = parallel.world()
    shares = [world.rank + world.size * w for w in range(n_workers)]
    rngs = [seeds.dropout_rng(seed, share) for share in shares]
    for rng, share in zip(rngs, shares):
        if share < len(saved_states) and saved_states[share] is not None:
            rng.bit_generator.state = saved_states[share]
    return rngs


def new_optimizer(gpt, tc) -> AdamW:
    return AdamW(gpt.params, lr=gpt.config.lr, betas=(tc.beta1, tc.beta2), eps=1e-8, weight_decay=tc.weight_decay)


def train_and_save(state: RunState, quiet, on_step, time_budget_s=None) -> None:
    """Run the loop, then save the checkpoint and the artifacts. From the first step to the last artifact a
    signal only asks the loop to stop, so a run interrupted anywhere leaves its files whole and resumable."""
    world = parallel.world()
    if world.is_root:
        remove_stale_temps(state.paths.out, state.paths.guid)    # what a killed earlier session left half-written
    with StopRequest(announce=world.is_root) as stop:
        status = run_training(state.training, stop, lambda: checkpoint_run(state), quiet=quiet or not world.is_root,
                              time_budget_s=time_budget_s, on_step=on_step)
        checkpoint_run(state)
        if world.is_root:
            save_artifacts(state, status)
    world.barrier()   # every rank returns once rank 0 has written every file


def checkpoint_run(state: RunState) -> None:
    """Write everything a resume needs: weights, AdamW state, the RNG states, the history. Every rank calls it:
    rank 0 gathers each rank's dropout state, then writes alone (the rest is the same on every rank)."""
    t = state.training
    world = parallel.world()
    per_rank = world.gather([rng.bit_generator.state for rng in (t.dropout_rngs or [t.gpt.rng])])
    dropout_states = None
    if world.is_root:   # by share: worker w of rank r drew share r + ranks * w
        dropout_states = [None] * max(r + world.size * (len(states) - 1) + 1 for r, states in enumerate(per_rank))
        for r, states in enumerate(per_rank):
            for w, saved in enumerate(states):
                dropout_states[r + world.size * w] = saved
    if world.is_root:
        checkpoint.save_checkpoint(state.paths.checkpoint, t.gpt.params, t.optimizer.state_dict(),
                                   t.data_rng.bit_generator.state, dropout_states, t.history)


def save_artifacts(state: RunState, status) -> None:
    """Write the model, then (when complete) the completion and the quality figures that read it, then the report
    and the loss curve."""
    paths, t = state.paths, state.training
    checkpoint.save_model(paths.model, t.gpt.params, t.gpt.config.to_dict(), state.record.guid)
    quality = None
    if status == "complete":   # the completion, then the quality figures (littlebaby.quality) on a longer sample
        if t.config.completion_tokens:
            atomic_write_text(paths.completion, sample_after_training(t, state.tokenizer, seeds.Stream.COMPLETION,
                                                                     t.config.completion_tokens))
        quality_sample = (sample_after_training(t, state.tokenizer, seeds.Stream.QUALITY_SAMPLE,
                                                t.config.quality_tokens) if t.config.quality_tokens else "")
        eval_rngs = [np.random.default_rng(0)] * t.threads[0]   # evaluation mode draws no dropout mask
        with running(t.gpt, t.config, t.threads, eval_rngs, report.QUALITY_BATCH) as (evaluator, _):
            quality = report.measure_quality(t.gpt, state.tokenizer, t.data.val, quality_sample,   # every core
                                             read_text(state.record.data["path"]), evaluator.loss)
    summary = report.build_report(state.record, t, state.tokenizer.kind, status, quality)
    report.save_report(summary, paths.report_json, paths.report_png)


def sample_after_training(t, tokenizer, which: seeds.Stream, n_tokens) -> str:
    """n_tokens sampled from nothing by the trained model, drawn from the run's stream ``which``."""
    return sample_text(t.gpt, tokenizer, "", n_tokens, rng=seeds.stream(t.config.seed, which),
                       kernels=t.config.kernels)


def data_source(data, path=None) -> tuple[str, pathlib.Path]:
    """(what the record calls the data, the text file to read): a user file, or the built-in corpus."""
    if data is None or data == corpus.SOURCE:
        return corpus.SOURCE, corpus.builtin_corpus_path()
    text_path = pathlib.Path(path or data)
    if text_path.is_dir():
        raise BabyError(f"`data` must be a text file, and {text_path} is a directory")
    if not text_path.is_file():
        raise BabyError(f"data file not found: {text_path}")
    return str(text_path.resolve()), text_path
