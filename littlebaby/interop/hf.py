"""Hugging Face GPT-2 folders: ``baby export RUN --format hf DIR`` and ``baby import-hf DIR``.

A folder is what ``GPT2LMHeadModel.save_pretrained`` writes: ``config.json``, ``model.safetensors`` and a
tokenizer (``tokenizer.json``, ``tokenizer_config.json``). The weights map one to one; GPT-2's Conv1D layers
store their weights (in, out) as we do, so only the untied LM head (nn.Linear, (V, C)) is transposed:

    ours                     GPT-2 (under ``transformer.``; ``h.{i}.`` for block i)
    wte (V, C)               wte.weight                 wpe (n_ctx, C)           wpe.weight
    blocks.{i}.ln_1.w, .b    h.{i}.ln_1.weight, .bias   attn.w_qkv (C, 3C), .b   h.{i}.attn.c_attn.weight, .bias
    attn.w_proj (C, C), .b   h.{i}.attn.c_proj.*        ln_2.w, .b               h.{i}.ln_2.*
    mlp.w_fc (C, 4C), .b     h.{i}.mlp.c_fc.*           mlp.w_proj (4C, C), .b   h.{i}.mlp.c_proj.*
    ln_f.w, .b               ln_f.weight, .bias         lm_head.w (C, V)         lm_head.weight (V, C), untied only

GPT-2 is our pre-norm GPT with multi-head attention, an MLP, head_size = n_emb, the tanh GELU, LayerNorm eps 1e-5
and an LM head without bias (tied by default). A run of another shape is refused, naming why.

Import streams: the header is read and every shape checked before any tensor, then one tensor at a time is read
(``safe_open``), converted to float32 and kept, so memory holds the weights once plus one tensor in flight;
the run's model file is then written tensor by tensor (``checkpoint.save_arrays``). A pickle
(``pytorch_model.bin``) is recognised by its first bytes and refused: it is never opened by an unpickler.
"""

import contextlib
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
import safetensors
import safetensors.numpy

from littlebaby import checkpoint
from littlebaby.errors import BabyError
from littlebaby.interop.hf_tokenizer import from_tokenizer_json, to_tokenizer_json
from littlebaby.model import GPT, Config, param_shapes
from littlebaby.nn.layernorm import EPS
from littlebaby.files import WriteError, atomic_write_json, read_json, write_error_message
from littlebaby.runs import RunPaths, RunRecord, make_out_dirs, new_guid, utc_now
from littlebaby.tokenizers import GPT2Tokenizer, load_tokenizer

WEIGHTS = "model.safetensors"
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")   # transformers' names for 0.5 x (1 + tanh(...)), our GELU
# what a run made by import-hf trains with unless `baby finetune` says otherwise: pretrained weights want a
# small step
IMPORT_TRAINING = {"batch_size": 8, "lr": 1e-4}
BLOCK_NAMES = {"ln_1.w": "ln_1.weight", "ln_1.b": "ln_1.bias", "attn.w_qkv": "attn.c_attn.weight",
               "attn.b_qkv": "attn.c_attn.bias", "attn.w_proj": "attn.c_proj.weight",
               "attn.b_proj": "attn.c_proj.bias", "ln_2.w": "ln_2.weight", "ln_2.b": "ln_2.bias",
               "mlp.w_fc": "mlp.c_fc.weight", "mlp.b_fc": "mlp.c_fc.bias", "mlp.w_proj": "mlp.c_proj.weight",
               "mlp.b_proj": "mlp.c_proj.bias"}
BUFFERS = ("attn.bias", "attn.masked_bias")      # the causal mask old checkpoints saved beside the weights
SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None}


def hf_names(config) -> dict[str, str]:
    """Our parameter name -> the tensor name in a transformers GPT-2 ``model.safetensors`` (see the table above)."""
    names = {"wte": "transformer.wte.weight", "wpe": "transformer.wpe.weight"}
    for i in range(config.n_layers):
        names.update({f"blocks.{i}.{ours}": f"transformer.h.{i}.{theirs}" for ours, theirs in BLOCK_NAMES.items()})
    names.update({"ln_f.w": "transformer.ln_f.weight", "ln_f.b": "transformer.ln_f.bias"})
    if not config.weight_tying:
        names["lm_head.w"] = "lm_head.weight"
    return names


# --- export -------------------------------------------------------------------------------------------------

def why_not_gpt2(config, params) -> str | None:
    """The reason GPT-2 cannot express this model, or None when it can."""
    if config.c_sequence != "pre":
        return "it is post-norm (c_sequence = 'post'); GPT-2 normalises before each sublayer"
    if config.c_attention != "mha":
        return "it uses mixture of heads (c_attention = 'moh'); GPT-2 has multi-head attention only"
    if config.c_network != "mlp":
        return "it uses a mixture of experts (c_network = 'moe'); GPT-2 has one MLP per block"
    if config.head_size != config.n_emb:
        return (f"its head_size ({config.head_size}) differs from n_emb ({config.n_emb}); GPT-2's attention is "
                f"n_emb wide: train with `head_size={config.n_emb}`")
    if config.lm_head_bias and np.any(params["lm_head.b"] != 0):
        return (f"its LM head has a learned bias (largest |b| = {float(np.max(np.abs(params['lm_head.b']))):.3g}), "
                f"which GPT-2's head has not: train with `lm_head_bias=False`")
    return None


def hf_config(config, tokenizer) -> dict:
    """config.json for ``GPT2LMHeadModel``. Our one dropout rate goes to attention and residuals; we have no
    embedding dropout, so embd_pdrop is 0."""
    end = next((i for i in getattr(tokenizer, "special", []) if tokenizer.tokens[i] == "<|endoftext|>"), None)
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": config.vocab_size,
            "n_positions": config.n_ctx, "n_embd": config.n_emb, "n_layer": config.n_layers,
            "n_head": config.n_heads, "n_inner": None, "activation_function": "gelu_new",
            "resid_pdrop": config.dropout, "attn_pdrop": config.dropout, "embd_pdrop": 0.0,
            "layer_norm_epsilon": EPS, "initializer_range": 0.02, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "use_cache": True,
            "tie_word_embeddings": config.weight_tying, "bos_token_id": end, "eos_token_id": end,
            "dtype": "float32"}


def tokenizer_config(config, tokenizer) -> dict:
    """tokenizer_config.json: load tokenizer.json as it is (no class that would rebuild its pipeline)."""
    data = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.n_ctx,
            "clean_up_tokenization_spaces": False}
    if isinstance(tokenizer, GPT2Tokenizer) and "<|endoftext|>" in [tokenizer.tokens[i] for i in tokenizer.special]:
        data.update({name: "<|endoftext|>" for name in ("bos_token", "eos_token", "unk_token")})
    return data


def hf_tensors(params, config) -> dict:
    """Our parameters under GPT-2's names, float32; the untied head transposed to (V, C)."""
    tensors = {}
    for ours, theirs in hf_names(config).items():
        array = params[ours].T if ours == "lm_head.w" else params[ours]
        tensors[theirs] = np.ascontiguousarray(array, dtype=np.float32)
    return tensors


def export_hf(run, folder, out=".", overwrite=False) -> pathlib.Path:
    """Write run ``run`` as a Hugging Face GPT-2 folder; everything is checked before anything is written."""
    from littlebaby.api import load_run   # here: api imports the training machinery, which export does not need
    loaded = load_run(run, out)
    config, params = loaded.gpt.config, loaded.gpt.params
    reason = why_not_gpt2(config, params)
    if reason:
        raise BabyError(f"run {loaded.guid} cannot be exported as GPT-2: {reason}")
    tokenizer_json = to_tokenizer_json(loaded.tokenizer)
    folder = pathlib.Path(folder)
    check_target(folder, overwrite)
    files = {"config.json": hf_config(config, loaded.tokenizer), "tokenizer.json": tokenizer_json,
             "tokenizer_config.json": tokenizer_config(config, loaded.tokenizer)}
    with staging_folder(folder) as stage:
        safetensors.numpy.save_file(hf_tensors(params, config), stage / WEIGHTS, metadata={"format": "pt"})
        for name, data in files.items():
            (stage / name).write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return folder


def check_target(folder, overwrite) -> None:
    if folder.exists() and not folder.is_dir():
        raise BabyError(f"{folder} is a file; give a folder to export into")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise BabyError(f"{folder} is not empty; give a new folder, or pass `overwrite=True` to replace the files "
                        f"there")


@contextlib.contextmanager
def staging_folder(folder):
    """Yield a hidden folder beside ``folder`` to write into; at the end its files move into ``folder``, so a
    failure (a full disk) leaves ``folder`` as it was: absent, or with its previous files."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        stage = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)   # mkdtemp makes it private; the folder it becomes should not be
    except OSError as e:
        raise WriteError(write_error_message(folder, e)) from None
    try:
        yield stage
        if not folder.exists():
            os.rename(stage, folder)
        else:
            for path in sorted(stage.iterdir()):
                os.replace(path, folder / path.name)
    except WriteError:
        raise
    except (OSError, safetensors.SafetensorError) as e:   # safetensors' I/O errors arrive as SafetensorError
        raise WriteError(write_error_message(folder, e if isinstance(e, OSError) else OSError(str(e)))) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# --- import -------------------------------------------------------------------------------------------------

def config_from_hf(hf, where) -> Config:
    """Our Config for a GPT-2 config.json, refusing what our model does not compute."""
    if not isinstance(hf, dict):
        raise BabyError(f"{where} must hold a JSON object")
    if hf.get("model_type") != "gpt2":
        raise BabyError(f"{where} describes a {hf.get('model_type')!r} model; only GPT-2 (model_type 'gpt2') "
                        "can be imported")
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        if type(hf.get(key)) is not int or hf[key] <= 0:
            raise BabyError(f"{where}: {key} must be a positive integer, got {hf.get(key)!r}")
    for key in ("layer_norm_epsilon", "resid_pdrop"):
        if key in hf and type(hf[key]) not in (int, float):
            raise BabyError(f"{where}: {key} must be a number, got {hf[key]!r}")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in TANH_GELUS:
        raise BabyError(f"{where}: activation_function {activation!r} is not supported; littlebaby's MLP uses the "
                        f"tanh GELU ({' or '.join(TANH_GELUS)})")
    C = hf["n_embd"]
    checks = [(hf.get("n_inner") in (None, 4 * C), f"n_inner {hf.get('n_inner')} is not 4 * n_embd"),
              (abs(hf.get("layer_norm_epsilon", EPS) - EPS) <= 1e-12 * EPS,
               f"layer_norm_epsilon {hf.get('layer_norm_epsilon')} is not {EPS}"),
              (hf.get("scale_attn_weights", True), "scale_attn_weights is false"),
              (not hf.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx is true"),
              (not hf.get("add_cross_attention", False), "add_cross_attention is true"),
              (C % hf["n_head"] == 0, f"n_embd {C} does not divide by n_head {hf['n_head']}")]
    for ok, what in checks:
        if not ok:
            raise BabyError(f"{where}: {what}; littlebaby's GPT cannot compute this model")
    dropout = hf.get("resid_pdrop", 0.1)
    return Config(vocab_size=hf["vocab_size"], n_ctx=hf["n_positions"], n_emb=C, head_size=C, n_heads=hf["n_head"],
                  n_layers=hf["n_layer"], dropout=float(dropout), weight_tying=bool(hf.get("tie_word_embeddings", True)),
                  lm_head_bias=False, **IMPORT_TRAINING)


def pickle_kind(head: bytes) -> str | None:
    """What pickle format the first bytes of a file announce, or None. A safetensors file starts with its
    header's length (8 bytes) and ``{``, which is checked first: 0x80 may also begin that length."""
    if len(head) >= 9 and head[8:9] == b"{":
        return None
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (PyTorch's pickle format)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a pickle (protocol {head[1]})"
    return None


def find_weights(folder) -> pathlib.Path:
    """model.safetensors, after making sure it is not a pickle; a pickle is named and refused by its first bytes
    and never opened by an unpickler."""
    path = folder / WEIGHTS
    for candidate in (path, folder / "pytorch_model.bin"):
        if candidate.is_file():
            with open(candidate, "rb") as f:
                kind = pickle_kind(f.read(9))
            if kind:
                raise BabyError(f"{candidate} is {kind}, which could run code when loaded; littlebaby never "
                                f"unpickles. Convert it to {WEIGHTS} where you trust it (transformers: "
                                f"model.save_pretrained(dir, safe_serialization=True))")
    if (folder / f"{WEIGHTS}.index.json").is_file():
        raise BabyError(f"{folder} holds weights split into shards; littlebaby imports one {WEIGHTS}")
    if not path.is_file():
        raise BabyError(f"no {WEIGHTS} in {folder}; a Hugging Face GPT-2 folder has config.json and {WEIGHTS}")
    return path


def read_header(path) -> dict:
    """The safetensors header: name -> {dtype, shape, data_offsets}, checked against the file's size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= min(checkpoint.HEADER_LIMIT, size - 8):
                raise ValueError(f"its header claims {n} bytes in a file of {size}")
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BabyError(f"{path} is not a safetensors file ({e}); it is damaged or of another format") from None
    if not isinstance(header, dict):
        raise BabyError(f"{path} is not a safetensors file: its header is not a JSON object")
    header.pop("__metadata__", None)
    return header


def tensor_names(header, config, path) -> dict[str, str]:
    """Our name -> the file's name for every parameter, the shapes checked; with or without ``transformer.``."""
    prefix = "transformer." if "transformer.wte.weight" in header else ""
    expected = param_shapes(config)
    names = {}
    for ours, theirs in hf_names(config).items():
        theirs = theirs.removeprefix("transformer.") if not prefix else theirs
        entry = header.get(theirs)
        if not isinstance(entry, dict):
            raise BabyError(f"{path} lacks the tensor {theirs!r} that config.json's shape needs")
        shape = tuple(reversed(expected[ours])) if ours == "lm_head.w" else expected[ours]
        if tuple(entry.get("shape", ())) != shape:
            raise BabyError(f"{path}: tensor {theirs!r} has shape {tuple(entry.get('shape', ()))} but config.json "
                            f"says {shape}; the weights and the config disagree")
        if entry.get("dtype") not in SAFETENSORS_DTYPES:
            raise BabyError(f"{path}: tensor {theirs!r} is {entry.get('dtype')}; only F32, F16, BF16 and F64 "
                            "weights can be imported")
        names[ours] = theirs
    known = set(names.values()) | {prefix + "lm_head.weight", "lm_head.weight"}
    unexpected = [n for n in header if n not in known and not n.endswith(BUFFERS)]
    if unexpected:
        raise BabyError(f"{path} holds {len(unexpected)} tensor(s) GPT-2 does not have, such as {unexpected[0]!r}; "
                        "is it another architecture?")
    return names


def read_tensor(f, path, header, name, data_start) -> np.ndarray:
    """One tensor as float32. bfloat16, which NumPy lacks, is read as its bits: the upper half of a float32."""
    entry = header[name]
    if entry["dtype"] != "BF16":
        return f.get_tensor(name).astype(np.float32, copy=False)
    start, end = entry["data_offsets"]
    bits = np.fromfile(path, dtype="<u2", count=(end - start) // 2, offset=data_start + start)  # (n,)
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def load_weights(path, header, names) -> dict:
    """Our parameters, read one tensor at a time; a NaN or infinite weight is refused."""
    with open(path, "rb") as f:
        data_start = 8 + int.from_bytes(f.read(8), "little")
    params = {}
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            for ours, theirs in names.items():
                array = read_tensor(f, path, header, theirs, data_start)
                params[ours] = np.ascontiguousarray(array.T if ours == "lm_head.w" else array)
                if not np.isfinite(params[ours]).all():
                    raise BabyError(f"{path}: tensor {theirs!r} holds NaN or infinite values")
    except (OSError, ValueError, safetensors.SafetensorError) as e:
        raise BabyError(f"cannot read {path}: {e}; the file is damaged") from None
    return params


def import_tokenizer(folder, tokenizer_path, config):
    """The folder's tokenizer.json (or ``tokenizer_path``: a tokenizer.json or a littlebaby tokenizer file)."""
    path = pathlib.Path(tokenizer_path) if tokenizer_path else folder / "tokenizer.json"
    if not path.is_file():
        raise BabyError(f"no tokenizer.json in {folder}; a run needs its tokenizer: pass `tokenizer='FILE'` "
                        "(a tokenizer.json, or a littlebaby tokenizer_G.json)")
    data = read_json(path, "tokenizer file")
    tok = load_tokenizer(path) if isinstance(data, dict) and "kind" in data else from_tokenizer_json(data, path)
    if tok.vocab_size != config.vocab_size:
        raise BabyError(f"{path} has {tok.vocab_size} tokens but the model's embedding has {config.vocab_size} "
                        "rows; the tokenizer is not this model's")
    return tok


def import_hf(folder, out=".", tokenizer=None):
    """Read a GPT-2 folder into a new run under ``out``; returns the loaded Run. Nothing is written until the
    config, the tokenizer and every tensor's shape have been checked and the weights read."""
    from littlebaby.lifecycle import Run
    from littlebaby.training import Plan, TrainConfig
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise BabyError(f"{folder} is not a folder; give the folder that holds config.json and {WEIGHTS}")
    if not (folder / "config.json").is_file():
        raise BabyError(f"no config.json in {folder}; a Hugging Face GPT-2 folder has config.json and {WEIGHTS}")
    config = config_from_hf(read_json(folder / "config.json", "config.json"), folder / "config.json")
    weights = find_weights(folder)
    header = read_header(weights)
    names = tensor_names(header, config, weights)
    tok = import_tokenizer(folder, tokenizer, config)
    gpt = GPT.from_params(config, load_weights(weights, header, names))

    guid = new_guid()
    paths = RunPaths(pathlib.Path(out), guid)
    make_out_dirs(out)
    import littlebaby
    record = RunRecord(
        version=littlebaby.__version__, guid=guid, kind="import", parent=None, created=utc_now(), seed=0,
        model=config.to_dict(), training=TrainConfig(tokenizer=tok.kind).to_dict(),
        plan=Plan(steps=0, eval_every=1, warmup_steps=0, min_lr=0.0, steps_per_epoch=0).to_dict(),
        tokenizer={"kind": tok.kind, "vocab_size": tok.vocab_size},
        data={"source": f"imported from {folder.resolve()}", "path": str(folder.resolve()), "chars": 0,
              "tokens": 0, "train_tokens": 0, "val_tokens": 0, "token_dtype": ""})
    try:   # the record last: until it exists the run is not listed, and a failure removes what was written
        checkpoint.save_model(paths.model, gpt.params, config.to_dict(), guid)
        tok.save(paths.tokenizer)
        atomic_write_json(paths.config, record.to_dict())
    except BaseException:
        for path in (paths.model, paths.tokenizer):
            path.unlink(missing_ok=True)
        raise
    return Run(guid, paths, record, gpt, tok)
