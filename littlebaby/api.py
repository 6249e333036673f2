"""The Python API: ``train``, ``finetune``, ``generate``, ``load_run``. The CLI only parses and calls these.

    run = train(data="input.txt", steps=500, n_layers=2, out="work")   # -> Run
    run = finetune(run.guid, data="more.txt", steps=100, out="work")   # -> Run "<guid>_finetuned"
    generate("last", prompt="ROMEO:", max_tokens=200, out="work")     # -> Generation, text also streamed
    run = load_run("last", out="work"); run.gpt, run.tokenizer, run.report
    run = import_original("TheLittleBaby/", out="work")              # a run of the original notebook -> Run
    export_original(run.guid, out="work", to="back")                  # and back, in its v0.0.9 format

Options use the seed's names with underscores (``n_ctx``, ``batch_size``, ``max_time``): model shape and
learning rate go to ``littlebaby.model.Config``, the rest to ``littlebaby.training.TrainConfig``. This module
turns options into those configs; littlebaby.lifecycle starts, resumes and saves the runs.
"""

import dataclasses
import datetime
import math
import pathlib
import time

import numpy as np

from littlebaby import ages, checkpoint, device, lifecycle
from littlebaby import config as configlib
from littlebaby.errors import BabyError
from littlebaby.files import atomic_file, atomic_write_json, atomic_write_text, read_json
from littlebaby.lifecycle import Run, load_run
from littlebaby.model import GPT, Config
from littlebaby.runs import RunPaths, RunRecord, make_out_dirs, new_guid, utc_now
from littlebaby.sampling import sample_texts
from littlebaby.tokenizers import CharTokenizer
from littlebaby.training import HOW_TO_RUN, TrainConfig

MODEL_KEYS = tuple(f.name for f in configlib.options(Config))       # vocab_size is the tokenizer's
FINETUNE_MODEL_KEYS = tuple(f.name for f in configlib.options(Config) if configlib.finetune_sets(Config, f))
TRAIN_KEYS = tuple(f.name for f in configlib.options(TrainConfig))
BUDGET_KEYS = tuple(f.name for f in configlib.options(TrainConfig) if f.metadata["group"] == "budget")
PARENT_TRAIN_KEYS = tuple(f.name for f in configlib.options(TrainConfig) if not configlib.finetune_sets(TrainConfig, f))

__all__ = ["train", "finetune", "generate", "load_run", "resume_run", "train_configs", "import_original",
           "export_original", "Run", "Generation"]


@dataclasses.dataclass
class Generation:
    text: str                     # prompt + sampled text (the first sample)
    path: pathlib.Path            # outputs/completion_G_<stamp>.txt
    tokens_per_s: float           # sampled tokens per second, all samples counted
    texts: list                   # every sample, when --num-samples asked for several


def train(data=None, config=None, out=".", quiet=False, resume=None, on_step=None, command=None,
          **options) -> Run:
    """Train a new model on ``data`` (a UTF-8 text file; None: the built-in Shakespeare corpus), or continue
    the run named by ``resume``. ``config`` is a JSON file or dict of options; keyword options override it;
    ``age="24m"`` puts a preset below both (littlebaby.ages). ``on_step(step)`` is called after every optimizer
    step. ``command``: the command line that asked for the run, recorded in its config (the CLI gives it)."""
    if resume is not None:   # a resume may change how the run runs (the machine moved), not what it trains
        how = {key: options.pop(key, None) for key in HOW_TO_RUN}
        if data is not None or config is not None or any(v is not None for v in options.values()):
            raise BabyError(f"`resume` continues a run with its own settings (only "
                            f"{', '.join(f'`{key}`' for key in HOW_TO_RUN)} may change); drop the other options")
        return resume_run(resume, out, quiet, on_step, **how)
    model_config, tc = train_configs(config, **options)    # checked before any data is read
    return lifecycle.train_run(model_config, tc, data, out, quiet, on_step, command)


def train_configs(config=None, **options) -> tuple[Config, TrainConfig]:
    """(model config, training config) of a new run: the options of a config file or dict, keyword options
    (None: not given) on top, an age's preset (``age``) below them. vocab_size keeps its default until the
    tokenizer sets it."""
    merged = merge_options(config, options)
    if merged.get("age") is not None:
        merged = ages.with_age(merged, BUDGET_KEYS)
    model_opts, train_opts = split_options(merged, MODEL_KEYS)
    tc = TrainConfig.from_dict(train_opts)
    return Config.from_dict(model_opts), tc


def finetune(run, data=None, config=None, out=".", overwrite=False, quiet=False, on_step=None, command=None,
             **options) -> Run:
    """Train the model of ``run`` further on ``data``, as the new run ``<guid>_finetuned``. A char vocabulary
    grows by the new text's characters: old ids keep their meaning, the new rows start random. ``run`` may be
    ``pretrained``, the baby that ships with littlebaby; the finetune is written under ``out`` all the same."""
    parent = load_run(run, out)
    model_opts, train_opts = split_options(merge_options(config, options), FINETUNE_MODEL_KEYS)
    if "age" in train_opts:
        raise BabyError("a finetune keeps the parent's model, so an age does not apply; drop `age`")
    for key in PARENT_TRAIN_KEYS:
        if key in train_opts:
            raise BabyError(f"finetune keeps the parent's tokenizer; drop {key}")
    tc = TrainConfig.from_dict({**train_opts, "tokenizer": parent.record.tokenizer["kind"]})
    return lifecycle.finetune_run(parent, model_opts, tc, data, out, overwrite, quiet, on_step, command)


def resume_run(run, out=".", quiet=False, on_step=None, device=None, threads=None, kernels=None) -> Run:
    """Continue a stopped run from its checkpoint: weights, AdamW state, step, every RNG state, history.
    ``device`` ("cpu" or "cuda"), ``threads`` and ``kernels``, when given, override how the run was running."""
    how = {"device": device, "threads": threads, "kernels": kernels}
    return lifecycle.resume_run(run, out, {k: v for k, v in how.items() if v is not None}, quiet, on_step)


def generate(run, prompt="", max_tokens=500, temperature=1.0, top_k=None, top_p=None, seed=None, cache=True,
             out=".", stream=None, num_samples=1, device_name="cpu", kernels="auto") -> Generation:
    """Sample from a run; write outputs/completion_G_<yyyymmddhhmmss>.txt and a .json of the settings.
    ``stream`` (e.g. sys.stdout) receives the first sample as it is produced. With num_samples > 1 the samples
    are generated as one batch; ``Generation.texts`` holds them all and the file separates them.
    ``device_name``: "cpu" or "cuda", where the model runs (sampling itself is on the host). ``kernels``: "auto"
    (the compiled decode step when numba works), "numba" or "numpy" (littlebaby.sampling.make_stepper)."""
    xp = device.array_module_for(device_name)
    loaded = load_run(run, out)
    loaded.gpt.move_to(xp)
    if loaded.builtin and kernels == "auto":   # small enough that NumPy is as fast end to end, and the first
        kernels = "numpy"                       # token never waits for numba's import or first compile
    start = time.perf_counter()
    texts = sample_texts(loaded.gpt, loaded.tokenizer, prompt, max_tokens, temperature, top_k, top_p,
                         np.random.default_rng(seed), cache, num_samples, stream, kernels)
    seconds = time.perf_counter() - start
    return save_generation(loaded, texts, seconds, prompt, max_tokens, temperature, top_k, top_p, seed, cache,
                           device_name, out)


def save_generation(loaded, texts, seconds, prompt, max_tokens, temperature, top_k, top_p, seed, cache=True,
                    device_name="cpu", out=".") -> Generation:
    """Write the samples ``texts`` of run ``loaded`` as outputs/completion_G_<yyyymmddhhmmss>.txt and a .json of
    the settings (what ``generate`` and the playground of `baby serve` save): beside the run's own files, or
    in ``out``/outputs/ for the pretrained baby, whose files inside the package are never written."""
    num_samples = len(texts)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
    paths = loaded.output_paths(out)
    text_path, json_path = paths.generation(stamp)
    for n in range(2, 1000):   # two generations in the same second keep both files
        if not text_path.exists():
            break
        text_path, json_path = paths.generation(f"{stamp}-{n}")
    tokens_per_s = max_tokens * num_samples / seconds if seconds > 0 else 0.0
    atomic_write_text(text_path, texts[0] if num_samples == 1 else "".join(
        f"=== sample {i + 1} of {num_samples} ===\n{text}\n" for i, text in enumerate(texts)))
    atomic_write_json(json_path, {"run": loaded.guid, "prompt": prompt, "max_tokens": max_tokens,
                                  "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed,
                                  "cache": cache, "num_samples": num_samples, "device": device_name,
                                  "seconds": seconds, "tokens_per_s": tokens_per_s, "created": utc_now()})
    return Generation(texts[0], text_path, tokens_per_s, texts)


def import_original(path, out=".", corpus=None, dtype="float32") -> Run:
    """Bring in a run of the original The Little Baby notebook (v0.0.5 to v0.0.9) as a new run of ours, with a new
    GUID and the original's recorded as its ``source``; it then generates, finetunes and is exported like any
    other. ``path``: the original's folder (configs/, tokenizers/, models/) or its model file. ``corpus``: the
    training text, for runs older than v0.0.5 that have no tokenizer file. ``dtype``: float32 (what the original
    itself computes with after loading) or float64 (the stored numbers exactly). Every file is read and checked
    before anything is written. See docs/IMPORT.md."""
    from littlebaby.interop import original   # the format code lives outside the core and the workflow
    if dtype not in ("float32", "float64"):
        raise BabyError(f"`dtype` must be float32 or float64, got {dtype!r}")
    found = original.read_original(path, corpus)
    config, params = original.to_littlebaby(found, dtype)
    gpt = GPT.from_params(config, params)
    tokenizer = CharTokenizer(found.vocab)
    guid = new_guid()
    paths = RunPaths(pathlib.Path(out), guid)
    make_out_dirs(out)
    checkpoint.save_model(paths.model, params, config.to_dict(), guid)
    tokenizer.save(paths.tokenizer)
    epochs = found.settings.get("num_epochs")
    epochs = float(epochs) if type(epochs) in (int, float) and epochs > 0 else None
    data = {"source": "the original's training text (not part of its run)"}
    if corpus is not None:
        data["vocabulary_from"] = str(pathlib.Path(corpus).resolve())
    import littlebaby
    record = RunRecord(
        version=littlebaby.__version__, guid=guid, kind="import", parent=None, created=utc_now(), seed=0,
        model=config.to_dict(), training=TrainConfig(epochs=epochs).to_dict(), plan={},   # nothing trained here
        tokenizer={"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size}, data=data,
        source={"format": "the-little-baby-original", "version": found.version, "guid": found.files.guid,
                "path": str(found.files.model.resolve()), "settings": found.settings})
    atomic_write_json(paths.config, record.to_dict())
    return Run(guid, paths, record, gpt, tokenizer)


def export_original(run, out=".", to="original") -> pathlib.Path:
    """Write ``run`` in the original notebook's v0.0.9 format under ``to`` (configs/, tokenizers/, models/, named
    by the run's GUID) and return the model file's path. Refused, saying why, for a run the original cannot
    represent (sparse experts, Q, K, V or gate biases, a BPE tokenizer); nothing is written then."""
    from littlebaby.interop import original
    loaded = load_run(run, out)
    if loaded.tokenizer.kind != "char":
        raise BabyError(f"run {loaded.guid} uses a {loaded.tokenizer.kind} tokenizer; the original has only the "
                        f"character tokenizer (train with `tokenizer='char'`)")
    epochs = loaded.record.training.get("epochs")
    settings, tokenizer, items = original.from_littlebaby(loaded.gpt.config, loaded.gpt.params,
                                                          loaded.tokenizer.chars, max(1, math.ceil(epochs or 1)))
    to = pathlib.Path(to)
    model = to / "models" / f"model_{loaded.guid}.json"
    for path, pairs in ((model, items), (to / "tokenizers" / f"tokenizer_{loaded.guid}.json", tokenizer.items()),
                        (to / "configs" / f"config_{loaded.guid}.json", settings.items())):
        with atomic_file(path) as f:
            original.write_json(f, pairs)
    return model


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
