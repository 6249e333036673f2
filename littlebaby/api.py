"""The Python API: ``train``, ``finetune``, ``generate``, ``load_run``. The CLI only parses and calls these.

    run = train(data="input.txt", steps=500, n_layers=2, out="work")   # -> Run
    run = finetune(run.guid, data="more.txt", steps=100, out="work")   # -> Run "<guid>_finetuned"
    generate("last", prompt="ROMEO:", max_tokens=200, out="work")     # -> Generation, text also streamed
    run = load_run("last", out="work"); run.gpt, run.tokenizer, run.report

Options use the seed's names with underscores (``n_ctx``, ``batch_size``, ``max_time``): model shape and
learning rate go to ``littlebaby.model.Config``, the rest to ``littlebaby.train.TrainConfig``.
"""

import dataclasses
import datetime
import pathlib
import time

import numpy as np

from littlebaby import checkpoint, corpus, device, parallel
from littlebaby.data import TokenData, encode_to_file, read_text
from littlebaby.errors import BabyError
from littlebaby.generate import sample_texts
from littlebaby.model import GPT, Config
from littlebaby.optim import AdamW
from littlebaby.runs import (FINETUNE_SUFFIX, RunPaths, RunRecord, atomic_write_json, atomic_write_text,
                             load_record, make_out_dirs, new_guid, read_json, resolve_run,
                             utc_now)
from littlebaby.tokenizers import load_tokenizer, train_tokenizer
from littlebaby.train import Plan, TrainConfig, make_plan, new_history, run_training, time_steps

# `baby train` with no options (with train.DEFAULT_STEPS = 4000): 4.1M tokens, one epoch of the built-in
# corpus; measured on a shared 2-core AMD EPYC with one BLAS thread: 0.10 s per step, 4 min 15 s of CPU,
# val loss 1.70 (2.46 bits/char), text with real words and speaker names. Four heads of 32 channels train
# faster here than the seed's sixteen of 8 (same parameters, fewer and larger matmuls).
DEFAULT_MODEL = {"n_ctx": 64, "n_emb": 128, "head_size": 128, "n_heads": 4, "n_layers": 4, "dropout": 0.1,
                 "batch_size": 16, "lr": 2e-3}
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(Config) if f.name != "vocab_size")  # vocab: the tokenizer's
FINETUNE_MODEL_KEYS = ("dropout", "batch_size", "lr")    # the rest is the parent's shape
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclasses.dataclass
class RunState:
    """Everything the training loop reads and updates for one run."""
    record: RunRecord
    paths: RunPaths
    out_flag: str                 # " --out DIR" for the resume hint, "" for the current directory
    gpt: GPT
    optimizer: AdamW
    tokenizer: object
    data: TokenData
    data_rng: np.random.Generator
    train_config: TrainConfig
    plan: Plan
    history: dict
    tokens_per_char: float        # to turn nats per token into bits per character


@dataclasses.dataclass
class Run:
    """A run on disk: its record, its model and tokenizer."""
    guid: str
    paths: RunPaths
    record: RunRecord
    gpt: GPT
    tokenizer: object

    @property
    def report(self) -> dict:
        return read_json(self.paths.report_json, "report")


@dataclasses.dataclass
class Generation:
    text: str                     # prompt + sampled text (the first sample)
    path: pathlib.Path            # outputs/completion_G_<stamp>.txt
    tokens_per_s: float           # sampled tokens per second, all samples counted
    texts: list                   # every sample, when --num-samples asked for several


def load_run(run: str, out=".") -> Run:
    """The run named by a GUID, a unique prefix, or ``last``, with its weights and tokenizer."""
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


def train(data=None, config=None, out=".", quiet=False, resume=None, on_step=None, **options) -> Run:
    """Train a new model on ``data`` (a UTF-8 text file; None: the built-in Shakespeare corpus), or continue
    the run named by ``resume``. ``config`` is a JSON file or dict of options; keyword options override it.
    ``on_step(step)`` is called after every optimizer step."""
    if resume is not None:
        resume_device = options.pop("device", None)   # the one setting a resume may change: the machine moved
        if data is not None or config is not None or any(v is not None for v in options.values()):
            raise BabyError("--resume continues a run with its own settings (only --device may change); "
                            "drop the other options")
        return resume_run(resume, out, quiet, on_step, resume_device)
    model_opts, train_opts = split_options(merge_options(config, options), MODEL_KEYS)
    tc = TrainConfig.from_dict(train_opts)
    xp = device.array_module_for(tc.device)   # a missing CuPy or GPU is said before any work
    Config.from_dict({**DEFAULT_MODEL, **model_opts})  # check the options before reading any data
    source, text_path = data_source(data)
    tokenizer = train_tokenizer(tc.tokenizer, read_text(text_path), tc.vocab_size)
    model_config = Config.from_dict({**DEFAULT_MODEL, **model_opts, "vocab_size": tokenizer.vocab_size})
    gpt = GPT(model_config, seed=tc.seed).move_to(xp)
    guid = parallel.world().broadcast(new_guid())   # under MPI every rank trains the run rank 0 named
    return start_run("train", None, guid, out, gpt, tokenizer, tc, source, text_path, quiet, on_step)


def finetune(run, data=None, config=None, out=".", overwrite=False, quiet=False, on_step=None, **options) -> Run:
    """Train the model of ``run`` further on ``data``, as the new run ``<guid>_finetuned``. A char vocabulary
    grows by the new text's characters: old ids keep their meaning, the new rows start random."""
    parent = load_run(run, out)
    guid = parent.guid + FINETUNE_SUFFIX
    if RunPaths(pathlib.Path(out), guid).config.exists() and not overwrite:
        raise BabyError(f"run {guid} already exists in {pathlib.Path(out).resolve()}; "
                        f"pass --overwrite to replace it")
    model_opts, train_opts = split_options(merge_options(config, options), FINETUNE_MODEL_KEYS)
    for key in ("tokenizer", "vocab_size"):
        if key in train_opts:
            raise BabyError(f"finetune keeps the parent's tokenizer; drop {key}")
    tc = TrainConfig.from_dict({**train_opts, "tokenizer": parent.record.tokenizer["kind"]})
    xp = device.array_module_for(tc.device)   # before any work
    source, text_path = data_source(data)
    tokenizer = parent.tokenizer
    if tokenizer.kind == "char":
        tokenizer = tokenizer.extend(read_text(text_path))
    gpt = parent.gpt
    if tokenizer.vocab_size > gpt.config.vocab_size:
        gpt.grow_vocab(tokenizer.vocab_size, np.random.default_rng([tc.seed, 3]))
    model_config = Config.from_dict({**gpt.config.to_dict(), **model_opts})
    gpt = GPT.from_params(model_config, gpt.params, seed=tc.seed).move_to(xp)
    return start_run("finetune", parent.guid, guid, out, gpt, tokenizer, tc, source, text_path, quiet, on_step)


def start_run(kind, parent, guid, out, gpt, tokenizer, tc, source, text_path, quiet, on_step) -> Run:
    """Encode the data, plan the schedule, write the run's record and tokenizer, and train."""
    paths = RunPaths(pathlib.Path(out), guid)
    world = parallel.world()
    if world.is_root:  # under MPI rank 0 writes every file; the others read the token file once it is there
        make_out_dirs(out)
        encode_to_file(text_path, tokenizer, paths.tokens)
    world.barrier()
    data = TokenData.open(paths.tokens, tokenizer.vocab_size)
    n_tokens = data.tokens.size
    cfg = gpt.config
    data.check_fits(cfg.n_ctx)
    seconds_per_step = time_steps(gpt, data, cfg.batch_size, cfg.n_ctx) if tc.max_time is not None else None
    seconds_per_step = world.broadcast(seconds_per_step)   # one plan for all ranks
    plan = make_plan(tc, cfg.lr, data.n_train, cfg.batch_size, cfg.n_ctx, seconds_per_step)
    n_chars = len(read_text(text_path))
    import littlebaby
    record = RunRecord(
        version=littlebaby.__version__, guid=guid, kind=kind, parent=parent, created=utc_now(), seed=tc.seed,
        model=cfg.to_dict(), training=tc.to_dict(), plan=plan.to_dict(),
        tokenizer={"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
        data={"source": source, "path": str(pathlib.Path(text_path).resolve()), "chars": n_chars,
              "tokens": n_tokens, "train_tokens": data.n_train, "val_tokens": n_tokens - data.n_train,
              "token_dtype": str(data.tokens.dtype)})
    if world.is_root:
        tokenizer.save(paths.tokenizer)
        atomic_write_json(paths.config, record.to_dict())
    optimizer = AdamW(gpt.params, lr=cfg.lr, betas=(tc.beta1, tc.beta2), eps=1e-8, weight_decay=tc.weight_decay)
    state = RunState(record, paths, out_flag(out), gpt, optimizer, tokenizer, data,
                     np.random.default_rng([tc.seed, 2]), tc, plan, new_history(), n_tokens / n_chars)
    time_budget = tc.max_time * 60 if tc.max_time is not None else None
    run_training(state, quiet=quiet, time_budget_s=time_budget, on_step=on_step)
    return Run(guid, paths, record, gpt, tokenizer)


def resume_run(run, out=".", quiet=False, on_step=None, device_name=None) -> Run:
    """Continue a stopped run from its checkpoint: weights, AdamW state, step, both RNG states, history.
    ``device_name`` ("cpu" or "cuda") overrides the device the run was started on."""
    guid = resolve_run(run, out)
    paths = RunPaths(pathlib.Path(out), guid)
    record = load_record(out, guid)
    tc = TrainConfig.from_dict(record.training)
    if device_name is not None:
        tc = dataclasses.replace(tc, device=device_name)
    plan = Plan.from_dict(record.plan)
    if record.kind == "import":
        raise BabyError(f"run {guid} was imported (baby import-hf), not trained here, so there is nothing to "
                        f"resume; to train it further, `baby finetune {guid}`")
    if not paths.checkpoint.exists():
        raise BabyError(f"run {guid} has no checkpoint ({paths.checkpoint}); it cannot be resumed")
    saved = checkpoint.load_checkpoint(paths.checkpoint)
    if saved["optimizer"]["step"] >= plan.steps and paths.model.exists():  # else: killed before its last files
        raise BabyError(f"run {guid} is already complete ({plan.steps} steps); "
                        f"to train further, `baby finetune {guid}`")
    cfg = Config.from_dict(record.model, f"model config of {guid}")
    gpt = GPT.from_params(cfg, {k: np.array(v) for k, v in saved["params"].items()}, seed=tc.seed)
    gpt.rng.bit_generator.state = saved["dropout_rng"]
    gpt.move_to(device.array_module_for(tc.device))
    optimizer = AdamW(gpt.params, lr=cfg.lr, betas=(tc.beta1, tc.beta2), eps=1e-8, weight_decay=tc.weight_decay)
    optimizer.load_state_dict(saved["optimizer"])
    tokenizer = load_tokenizer(paths.tokenizer)
    world = parallel.world()
    if world.is_root and not paths.tokens.exists():
        encode_to_file(data_source(record.data["source"], record.data["path"])[1], tokenizer, paths.tokens)
    world.barrier()
    data = TokenData.open(paths.tokens, tokenizer.vocab_size)
    data_rng = np.random.default_rng()
    data_rng.bit_generator.state = saved["data_rng"]
    state = RunState(record, paths, out_flag(out), gpt, optimizer, tokenizer, data, data_rng, tc, plan,
                     saved["history"], record.data["tokens"] / record.data["chars"])
    run_training(state, quiet=quiet, on_step=on_step)
    return Run(guid, paths, record, gpt, tokenizer)


def generate(run, prompt="", max_tokens=500, temperature=1.0, top_k=None, top_p=None, seed=None, cache=True,
             out=".", stream=None, num_samples=1, device_name="cpu") -> Generation:
    """Sample from a run; write outputs/completion_G_<yyyymmddhhmmss>.txt and a .json of the settings.
    ``stream`` (e.g. sys.stdout) receives the first sample as it is produced. With num_samples > 1 the samples
    are generated as one batch; ``Generation.texts`` holds them all and the file separates them.
    ``device_name``: "cpu" or "cuda", where the model runs (sampling itself is on the host)."""
    xp = device.array_module_for(device_name)
    loaded = load_run(run, out)
    loaded.gpt.move_to(xp)
    start = time.perf_counter()
    texts = sample_texts(loaded.gpt, loaded.tokenizer, prompt, max_tokens, temperature, top_k, top_p,
                         np.random.default_rng(seed), cache, num_samples, stream)
    seconds = time.perf_counter() - start
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
    text_path, json_path = loaded.paths.generation(stamp)
    for n in range(2, 1000):   # two generations in the same second keep both files
        if not text_path.exists():
            break
        text_path, json_path = loaded.paths.generation(f"{stamp}-{n}")
    tokens_per_s = max_tokens * num_samples / seconds if seconds > 0 else 0.0
    atomic_write_text(text_path, texts[0] if num_samples == 1 else "".join(
        f"=== sample {i + 1} of {num_samples} ===\n{text}\n" for i, text in enumerate(texts)))
    atomic_write_json(json_path, {"run": loaded.guid, "prompt": prompt, "max_tokens": max_tokens,
                                  "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed,
                                  "cache": cache, "num_samples": num_samples, "device": device_name,
                                  "seconds": seconds, "tokens_per_s": tokens_per_s, "created": utc_now()})
    return Generation(texts[0], text_path, tokens_per_s, texts)


def merge_options(config, options) -> dict:
    """Options from a config file or dict, then keyword options (None means not given) on top."""
    merged = {}
    if config is not None:
        merged.update(config_options(config))
    merged.update({k: v for k, v in options.items() if v is not None})
    return merged


def config_options(config) -> dict:
    """A --config file (or dict): flat options, or a run's config_G.json (its model and training sections)."""
    data = read_json(config, "config file") if isinstance(config, (str, pathlib.Path)) else dict(config)
    if not isinstance(data, dict):
        raise BabyError("a config file must hold a JSON object of options such as {\"n_ctx\": 64}")
    if "model" in data and "training" in data:   # a previous run's record: reuse its settings
        model = {k: v for k, v in data["model"].items() if k != "vocab_size"}
        return {**model, **{k: v for k, v in data["training"].items() if v is not None}}
    return data


def split_options(options, model_keys) -> tuple[dict, dict]:
    """(model options, training options); an unknown key is an error naming the known ones."""
    model, training = {}, {}
    for key, value in options.items():
        if key in model_keys:
            model[key] = value
        elif key in TRAIN_KEYS:
            training[key] = value
        elif key in MODEL_KEYS:
            raise BabyError(f"{key} is fixed by the parent run and cannot change in a finetune; "
                            f"only {', '.join(model_keys)} can")
        else:
            raise BabyError(f"unknown option {key!r}; known: {', '.join(model_keys + TRAIN_KEYS)}")
    return model, training


def data_source(data, path=None) -> tuple[str, pathlib.Path]:
    """(what the record calls the data, the text file to read): a user file, or the built-in corpus."""
    if data is None or data == corpus.SOURCE:
        return corpus.SOURCE, corpus.builtin_corpus_path()
    text_path = pathlib.Path(path or data)
    if text_path.is_dir():
        raise BabyError(f"--data must be a text file, and {text_path} is a directory")
    if not text_path.is_file():
        raise BabyError(f"data file not found: {text_path}")
    return str(text_path.resolve()), text_path


def out_flag(out) -> str:
    return "" if pathlib.Path(out) == pathlib.Path(".") else f" --out {out}"
