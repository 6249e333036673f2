"""The runs of the original The Little Baby notebook (``GPT Numpy.ipynb``, v0.0.5 to v0.0.9): found, read, checked,
mapped onto our parameters, and written back in the v0.0.9 layout. docs/IMPORT.md says what maps to what.

A run G of the original is three JSON files (``json.dump(..., indent=4)``) under one folder:

    configs/config_G.json        the settings: c_sequence, c_attention, c_network (from v0.0.8), n_ctx, n_emb,
                                 dropout, head_size, n_heads, n_layers, num_epochs, batch_size, lr
    tokenizers/tokenizer_G.json  {"vocab": [sorted characters], "vocab_size": V}; a character's id is its index
    models/model_G.json          one object of nested lists, weights stored (in, out); a layer without bias has
                                 null (v0.0.5: model_G.weights). v0.0.5 to v0.0.7 name the MLP's up and down
                                 projections mlp_fc and mlp_proj, v0.0.8 on mlp_proj_up and mlp_proj_dn.

Nothing is unpickled or executed: a pickle (the original also wrote model_G.pkl) is refused by its first bytes,
and the model file is refused unread when it is larger than any model of its config, then parsed as a stream
(ijson), one array at a time.
"""

import dataclasses
import json
import pathlib
import re
from typing import NamedTuple

import ijson
import numpy as np

from littlebaby.data import read_text
from littlebaby.errors import BabyError
from littlebaby.model import Config, num_params, param_shapes
from littlebaby.files import read_json
from littlebaby.tokenizers.base import require_str

SETTINGS = ("c_sequence", "c_attention", "c_network", "n_ctx", "n_emb", "dropout", "head_size", "n_heads",
            "n_layers", "num_epochs", "batch_size", "lr")      # a v0.0.9 config's keys, in the order it writes them
SHAPE_SETTINGS = ("n_ctx", "n_emb", "head_size", "n_heads", "n_layers")
ARCHITECTURES = {"c_sequence": ("pre", "post"), "c_attention": ("mha", "moh"), "c_network": ("mlp", "moe")}
ORIGINAL_EXPERTS = 4          # the original always builds 4 experts of hidden width 4 * n_emb (its load() too)
BYTES_PER_NUMBER = 64         # json.dump(indent=4) of a float64: <= 24 characters, 12 spaces of indent, ",\n"
SMALL_FILE_LIMIT = 64 << 20   # a config, a tokenizer or a report is far smaller
MODEL_NAME = re.compile(r"model_(?P<guid>[0-9a-fA-F][0-9a-fA-F-]*(?:_finetuned)?)\.(?:json|weights)")
KEY_NAME = re.compile(r"(wte|wpe|lm_head)_(weight|bias)|ln_f_(gamma|beta)|block_\d+_[a-z0-9_]+")


class Row(NamedTuple):
    """One key of the original's model file: where its array sits in our parameters (``params[name][index]``), or
    for the experts' counts (name None) the Config field it must equal."""
    key: str
    name: str | None
    index: object


def key_table(config, old_keys=False) -> list[Row]:
    """Every key of an original model file of this config, in the order the original writes them.

    Q, K and V are three (C, H) weights, side by side in our attn.w_qkv (C, 3H); each expert's MLP is one slice
    of our stacked (NE, ...) moe arrays; everything else is one array for one array.
    """
    H, whole = config.head_size, ...
    rows = [Row("wte_weight", "wte", whole), Row("wpe_weight", "wpe", whole), Row("ln_f_gamma", "ln_f.w", whole),
            Row("ln_f_beta", "ln_f.b", whole), Row("lm_head_weight", "lm_head.w", whole),
            Row("lm_head_bias", "lm_head.b", whole)]
    up, dn = ("mlp_fc", "mlp_proj") if old_keys else ("mlp_proj_up", "mlp_proj_dn")
    for i in range(config.n_layers):
        b, o = f"block_{i}_", f"blocks.{i}."
        rows += [Row(b + "ln1_gamma", o + "ln_1.w", whole), Row(b + "ln1_beta", o + "ln_1.b", whole),
                 Row(b + "ln2_gamma", o + "ln_2.w", whole), Row(b + "ln2_beta", o + "ln_2.b", whole)]
        att = config.c_attention
        rows += [Row(f"{b}{att}_{x}_weight", o + "attn.w_qkv", np.s_[:, j * H:(j + 1) * H])   # (C, H) of (C, 3H)
                 for j, x in enumerate("qkv")]
        if att == "mha":
            rows += [Row(b + "mha_c_weight", o + "attn.w_proj", whole), Row(b + "mha_c_bias", o + "attn.b_proj", whole)]
        else:
            rows += [Row(b + "moh_g_weight", o + "attn.w_gate", whole), Row(b + "moh_g_bias", o + "attn.b_gate", whole),
                     Row(b + "moh_m_weight", o + "attn.w_proj", whole), Row(b + "moh_m_bias", o + "attn.b_proj", whole)]
        if config.c_network == "mlp":
            rows += [Row(f"{b}{up}_weight", o + "mlp.w_fc", whole), Row(f"{b}{up}_bias", o + "mlp.b_fc", whole),
                     Row(f"{b}{dn}_weight", o + "mlp.w_proj", whole), Row(f"{b}{dn}_bias", o + "mlp.b_proj", whole)]
            continue
        rows += [Row(b + "moe_g_weight", o + "moe.w_gate", whole), Row(b + "moe_g_bias", o + "moe.b_gate", whole),
                 Row(b + "moe_expansion", None, "moe_expansion"), Row(b + "moe_n_experts", None, "n_experts")]
        for e in range(config.n_experts):
            x = f"{b}moe_expert_{e}_"
            rows += [Row(x + "up_weight", o + "moe.w_fc", e), Row(x + "up_bias", o + "moe.b_fc", e),
                     Row(x + "dn_weight", o + "moe.w_proj", e), Row(x + "dn_bias", o + "moe.b_proj", e)]
    return rows


# --- finding and reading the files -----------------------------------------------------------------------------

@dataclasses.dataclass
class Files:
    guid: str                           # the original run's GUID, from the model file's name
    model: pathlib.Path
    config: pathlib.Path                # configs/config_G.json, or an older outputs/report_G.json with "config"
    tokenizer: pathlib.Path | None      # None before v0.0.5: the vocabulary was rebuilt from the text each run


def locate(path) -> Files:
    """The files of the run at ``path``: a folder laid out as the original writes it (holding one run), or a
    model file with its config and tokenizer beside it or in the sibling configs/ and tokenizers/ folders."""
    path = pathlib.Path(path)
    if not path.exists():
        raise BabyError(f"{path} not found: give a folder of the original (with configs/, tokenizers/, models/) "
                        f"or its models/model_<GUID>.json file")
    model = path if path.is_file() else find_model(path)
    refuse_foreign(model)
    match = MODEL_NAME.fullmatch(model.name)
    if match is None:
        raise BabyError(f"{model.name} is not named like a model of the original (model_<GUID>.json, or "
                        f"model_<GUID>.weights in v0.0.5): the GUID in the name finds its config and tokenizer")
    guid = match["guid"]
    root = model.parent.parent if model.parent.name == "models" else model.parent
    config = first_file([model.parent / f"config_{guid}.json", root / "configs" / f"config_{guid}.json",
                         root / "outputs" / f"report_{guid}.json"])
    if config is None:
        raise BabyError(f"no config_{guid}.json for {model} (looked beside it and in {root / 'configs'}): the "
                        f"original writes it to configs/ when it trains; copy it next to the model")
    tokenizer = first_file([model.parent / f"tokenizer_{guid}.json", root / "tokenizers" / f"tokenizer_{guid}.json"])
    return Files(guid, model, config, tokenizer)


def find_model(folder) -> pathlib.Path:
    """The one model file in folder/models (or in folder itself)."""
    models = folder / "models" if (folder / "models").is_dir() else folder
    files = sorted(p for p in models.iterdir() if p.is_file())
    found = {}
    for p in sorted(files, key=lambda p: p.suffix != ".json"):   # model_G.json before model_G.weights
        match = MODEL_NAME.fullmatch(p.name)
        if match:
            found.setdefault(match["guid"], p)
    if not found:
        for p in files:   # only pickles? say why they are not read
            if p.suffix in (".pkl", ".pickle"):
                refuse_foreign(p)
        raise BabyError(f"no model_<GUID>.json (or .weights) in {models}: give the folder the original wrote "
                        f"(with models/, configs/, tokenizers/) or the model file itself")
    if len(found) > 1:
        guids = sorted(found)
        raise BabyError(f"{models} holds {len(found)} runs of the original ({', '.join(guids[:4])}"
                        f"{', ...' if len(found) > 4 else ''}); import one at a time: baby import {found[guids[0]]}")
    return next(iter(found.values()))


def first_file(candidates):
    return next((p for p in candidates if p.is_file()), None)


def refuse_foreign(path) -> None:
    """Refuse, by its first bytes (or its name), a file that is not JSON text: a pickle above all, which runs code
    when it is read. Protocols 2 to 5 start with 0x80 and the protocol; 0 and 1 have no mark, so a .pkl name is
    refused too (and no pickle starts with '{')."""
    with open(path, "rb") as f:
        head = f.read(4096)
    why = ("littlebaby never reads a pickle, because reading one can run any code; import the JSON model the "
           "original writes beside it (models/model_<GUID>.json or .weights; its 'extract' plan makes one from a "
           ".pkl)")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise BabyError(f"{path} is a Python pickle (protocol {head[1]}, its first bytes are 0x80 0x0{head[1]}): {why}")
    if path.suffix in (".pkl", ".pickle"):
        raise BabyError(f"{path} is a Python pickle (by its name): {why}")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x93NUMPY"):
        kind = "a zip archive (.npz, or a PyTorch file)" if head.startswith(b"PK") else "a NumPy .npy file"
        raise BabyError(f"{path} is {kind}, which may hold pickles; littlebaby reads only the original's JSON "
                        f"files (models/model_<GUID>.json)")
    if head.lstrip()[:1] != b"{":
        raise BabyError(f"{path} is not a JSON object, so it is not a file of the original (its models, configs "
                        f"and tokenizers are JSON objects written by json.dump)")


def read_small_json(path, what):
    size = path.stat().st_size
    if size > SMALL_FILE_LIMIT:
        raise BabyError(f"{path} is {size:,} bytes, far more than any {what} of the original; it is not one")
    refuse_foreign(path)
    return read_json(path, what)


def read_settings(path) -> dict:
    """The original's settings, checked: only keys it writes, the model shape present, architectures we have."""
    data = read_small_json(path, "config of the original")
    if path.name.startswith("report_") and isinstance(data, dict):
        data = data.get("config")   # before configs/ existed, the report held the settings
    if not isinstance(data, dict):
        raise BabyError(f"{path} is not a config of the original: it holds no object of settings like "
                        f"{{\"n_ctx\": 8, \"n_emb\": 16}}")
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise BabyError(f"{path} has the setting {unknown[0]!r}, which no version of the original from v0.0.5 to "
                        f"v0.0.9 writes; littlebaby cannot map what it does not know, so it imports nothing")
    missing = [key for key in SHAPE_SETTINGS if key not in data]
    if missing:
        raise BabyError(f"{path} lacks the setting {missing[0]!r}, without which the model's shape is unknown")
    for key, allowed in ARCHITECTURES.items():
        if data.get(key, allowed[0]) not in allowed:
            raise BabyError(f"{path} asks for {key} = {data[key]!r}, an architecture littlebaby does not have "
                            f"(it has {' and '.join(allowed)})")
    return data


def read_vocab(files, corpus=None) -> list[str]:
    """The characters, id i being vocab[i]: from the tokenizer file, or rebuilt from ``corpus`` as the original
    did before v0.0.5 (the sorted set of the text's characters)."""
    if files.tokenizer is None:
        if corpus is None:
            raise BabyError(f"run {files.guid} has no tokenizer_{files.guid}.json (the original wrote none before "
                            f"v0.0.5, it rebuilt the vocabulary from the training text): pass `corpus='FILE'`, "
                            f"the text it was trained on")
        return sorted(set(read_text(corpus)))
    if corpus is not None:
        raise BabyError(f"`corpus` is for runs without a tokenizer, and {files.tokenizer} is this run's; drop it")
    data = read_small_json(files.tokenizer, "tokenizer of the original")
    vocab = data.get("vocab") if isinstance(data, dict) else None
    if not (isinstance(vocab, list) and vocab and all(isinstance(c, str) and len(c) == 1 for c in vocab)):
        raise BabyError(f"{files.tokenizer} is not a tokenizer of the original: it needs \"vocab\", a list of "
                        f"single characters")
    for i, c in enumerate(vocab):
        require_str(c, f"{files.tokenizer}: vocab[{i}]")   # a lone surrogate is not a character
    if len(set(vocab)) != len(vocab) or data.get("vocab_size", len(vocab)) != len(vocab):
        raise BabyError(f"{files.tokenizer} lists {len(vocab)} characters ({len(set(vocab))} distinct) but says "
                        f"vocab_size {data.get('vocab_size')}; the file is damaged")
    return vocab


def read_arrays(path, limit) -> dict:
    """key -> float64 array, None (a layer without bias) or int (the experts' counts), streamed from the file."""
    size = path.stat().st_size
    if size > limit:
        raise BabyError(f"{path} is {size:,} bytes, more than a model of its config can take as the original writes "
                        f"it ({limit:,} bytes at most); it is not this run's model, or it is damaged")
    arrays = {}
    try:
        with open(path, "rb") as f:
            for key, value in ijson.kvitems(f, "", use_float=True):
                arrays[key] = as_array(key, value, path)
    except ijson.JSONError as e:
        raise BabyError(parse_error(path, e)) from None
    if not arrays:
        raise BabyError(f"{path} is an empty object, not a model of the original")
    return arrays


def as_array(key, value, path):
    if not KEY_NAME.fullmatch(key):
        raise BabyError(f"{path} is not a model of the original: it holds the key {key!r}, where a model's keys "
                        f"are wte_weight, wpe_weight, block_0_ln1_gamma, ...")
    if value is None or type(value) is int:
        return value
    try:
        array = np.asarray(value)
    except ValueError:   # lists of different lengths
        array = None
    if array is None or array.dtype.kind not in "fi":
        raise BabyError(f"{path}: {key} is not a rectangular array of numbers")
    return array.astype(np.float64)


def parse_error(path, error) -> str:
    """One line for a model file ijson could not parse; NaN and infinities (which json.dump writes for a diverged
    run, and which are not JSON) are named as such."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    key = None
    try:   # where it failed: the last top-level key before the error (only on this error path)
        with open(path, "rb") as f:
            for prefix, event, value in ijson.parse(f):
                if prefix == "" and event == "map_key":
                    key = value
    except ijson.JSONError:
        pass
    where = f" in {key!r}" if key else ""
    with open(path, "rb") as f:
        non_finite = re.search(rb"NaN|Infinity", f.read()) is not None or "overflow" in reason
    if non_finite:
        return (f"{path} holds NaN or infinite values{where}: the original saved a run that had diverged. Import "
                f"an earlier run, or retrain it")
    return f"{path} is not valid JSON{where} ({reason}); it is damaged or was not written by the original"


@dataclasses.dataclass
class OriginalRun:
    """Everything read from one run of the original, checked for types; ``to_littlebaby`` checks the shapes."""
    files: Files
    settings: dict        # the config as the original saved it
    vocab: list           # vocab[i] is the character of id i
    arrays: dict          # the model file's keys and values

    @property
    def old_keys(self) -> bool:
        """v0.0.5 to v0.0.7 call the MLP's projections mlp_fc and mlp_proj."""
        return any("_mlp_fc_" in key for key in self.arrays)

    @property
    def version(self) -> str:
        return "v0.0.5-v0.0.7" if self.old_keys or not set(ARCHITECTURES) & set(self.settings) else "v0.0.8-v0.0.9"


def read_original(path, corpus=None) -> OriginalRun:
    """Find and read the run at ``path``, refusing any file that is not what the original writes."""
    files = locate(path)
    settings = read_settings(files.config)
    vocab = read_vocab(files, corpus)
    sized = make_config(settings, files.config, len(vocab), "float64", ORIGINAL_EXPERTS, ORIGINAL_EXPERTS, True)
    limit = BYTES_PER_NUMBER * num_params(sized) + (64 << 10)
    return OriginalRun(files, settings, vocab, read_arrays(files.model, limit))


def make_config(settings, path, vocab_size, dtype, n_experts, expansion, gate_bias) -> Config:
    fields = {key: settings[key] for key in SHAPE_SETTINGS + ("dropout", "batch_size", "lr") if key in settings}
    fields.update({key: settings.get(key, allowed[0]) for key, allowed in ARCHITECTURES.items()})
    return Config.from_dict({**fields, "vocab_size": vocab_size, "dtype": dtype, "n_experts": n_experts,
                             "moe_expansion": expansion, "moe_top_k": 0, "qkv_bias": False, "gate_bias": gate_bias},
                            f"the settings in {path}")


# --- the original's arrays as our parameters, and back ---------------------------------------------------------

def to_littlebaby(run: OriginalRun, dtype="float32"):
    """(Config, params) of our model computing what the original's does: every key of the file placed, every shape
    checked against the config and the tokenizer. A null bias becomes zeros (x @ w + 0 = x @ w), except the gates':
    when all are null the config says gate_bias = False, as it says qkv_bias = False for Q, K and V."""
    arrays, path = run.arrays, run.files.model
    n_experts = expansion = ORIGINAL_EXPERTS
    if run.settings.get("c_network") == "moe":
        n_experts, expansion = (arrays.get(f"block_0_moe_{name}") for name in ("n_experts", "expansion"))
        if not all(type(n) is int and n > 0 for n in (n_experts, expansion)):
            raise BabyError(f"{path} lacks block_0_moe_n_experts and block_0_moe_expansion (positive integers), "
                            f"which a mixture-of-experts model of the original has")
    gates = [key for key in arrays if key.endswith(("_moh_g_bias", "_moe_g_bias"))]
    gate_bias = any(arrays[key] is not None for key in gates)
    config = make_config(run.settings, run.files.config, len(run.vocab), dtype, n_experts, expansion, gate_bias)
    rows = key_table(config, run.old_keys)
    check_keys(rows, arrays, config, run)
    shapes = param_shapes(config)
    for key, name, index in rows:
        value = arrays[key]
        if name is None:
            if value != getattr(config, index) or type(value) is not int:
                raise BabyError(f"{path}: {key} is {value!r} but block 0 has {getattr(config, index)}; littlebaby "
                                f"has one {index} for all blocks")
        elif not isinstance(value, np.ndarray) and (value is not None or not key.endswith("_bias")):
            raise BabyError(f"{path}: {key} is {value!r}, where the original writes an array of numbers")
        elif value is not None:
            check_array(key, value, sliced_shape(shapes[name], index), config, run)
    params = {name: np.zeros(shape, dtype) for name, shape in shapes.items()}   # the sizes checked: the file's
    for key, name, index in rows:
        if name is not None and arrays[key] is not None:
            params[name][index] = arrays[key]
    return config, params


def check_keys(rows, arrays, config, run) -> None:
    expected = {row.key for row in rows}
    missing = [row.key for row in rows if row.key not in arrays]
    extra = [key for key in arrays if key not in expected]
    arch = f"{config.c_sequence} / {config.c_attention} / {config.c_network}, n_layers {config.n_layers}"
    if missing:
        raise BabyError(f"{run.files.model} lacks the key {missing[0]!r} ({len(missing)} missing) that a model of "
                        f"{run.files.config} ({arch}) has; the file is truncated or from another run")
    if extra:
        raise BabyError(f"{run.files.model} holds the key {extra[0]!r}, which a model of {run.files.config} "
                        f"({arch}) does not have; the model and the config are from different runs")


def check_array(key, value, shape, config, run) -> None:
    if value.shape != shape:
        vocab_axis = {"wte_weight": 0, "lm_head_weight": 1, "lm_head_bias": 0}.get(key)
        if vocab_axis is not None and value.ndim == len(shape) and value.shape[vocab_axis] != config.vocab_size:
            raise BabyError(f"the tokenizer {run.files.tokenizer or '(rebuilt from `corpus`)'} has {config.vocab_size}"
                            f" characters but {key} in {run.files.model} is for {value.shape[vocab_axis]} tokens "
                            f"{value.shape}; the tokenizer and the model are from different runs")
        raise BabyError(f"{key} in {run.files.model} has shape {value.shape} but {run.files.config} (n_emb "
                        f"{config.n_emb}, head_size {config.head_size}, n_heads {config.n_heads}, n_ctx "
                        f"{config.n_ctx}) makes it {shape}; the model and the config are from different runs")
    if not np.isfinite(value).all():
        raise BabyError(f"{run.files.model} holds NaN or infinite values in {key!r}: the original saved a run that "
                        f"had diverged. Import an earlier run, or retrain it")


def sliced_shape(shape, index) -> tuple:
    """The shape of ``array[index]`` for an array of ``shape``, without making one."""
    return np.broadcast_to(np.empty((), np.int8), shape)[index].shape


def from_littlebaby(config, params, chars, num_epochs):
    """(settings, tokenizer dict, model items) of our model in the original's v0.0.9 format, or a BabyError
    naming the feature the original does not have. ``params`` are NumPy arrays; the items are (key, value)
    pairs in the original's order, each value a nested list, None or an int."""
    refuse_unmappable(config, params)
    settings = {key: num_epochs if key == "num_epochs" else getattr(config, key) for key in SETTINGS}

    def value(row):
        if row.name is None:
            return getattr(config, row.index)
        if row.name == "lm_head.w" and config.weight_tying:   # the tied head is wte read transposed: an exact copy
            return params["wte"].T.tolist()
        if row.name not in params:   # a gate without bias: the original writes null
            return None
        return params[row.name][row.index].tolist()

    items = ((row.key, value(row)) for row in key_table(config))
    return settings, {"vocab": list(chars), "vocab_size": len(chars)}, items


def refuse_unmappable(config, params) -> None:
    if config.c_network == "moe":
        if config.moe_top_k:
            raise BabyError(f"the run routes each token to its top {config.moe_top_k} experts; the original has only "
                            f"the dense soft gate (moe_top_k 0)")
        if (config.n_experts, config.moe_expansion) != (ORIGINAL_EXPERTS, ORIGINAL_EXPERTS):
            raise BabyError(f"the run has {config.n_experts} experts of expansion {config.moe_expansion}; the original "
                            f"always builds {ORIGINAL_EXPERTS} of expansion {ORIGINAL_EXPERTS} (its load() ignores "
                            f"the counts in the file)")
    for name, array in params.items():
        leaf = name.split(".", 2)[-1]
        if leaf in ("attn.b_qkv", "attn.b_gate", "moe.b_gate") and np.any(array != 0):
            what = "Q, K and V" if leaf == "attn.b_qkv" else "gates"
            raise BabyError(f"the run's {what} have biases ({name} is not zero) and the original's {what} have none; "
                            f"train with `qkv_bias=False` `gate_bias=False` to make a run the original can read")


def write_json(f, items) -> None:
    """Write (key, value) pairs to binary file f as ``json.dump(dict(items), f, indent=4)`` writes them, one value
    at a time so that only one array is in memory as lists."""
    f.write(b"{")
    for n, (key, value) in enumerate(items):
        text = json.dumps(value, indent=4).replace("\n", "\n    ")   # one level deeper than json.dumps puts it
        f.write(f"{',' if n else ''}\n    {json.dumps(key)}: {text}".encode("ascii"))
    f.write(b"\n}")
