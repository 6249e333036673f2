"""Arrays on disk as safetensors (never pickle), with JSON metadata, written atomically.

Two kinds of file use it:
    the model       models/model_G.safetensors: the parameters under their own names; metadata "config"
    a checkpoint    runs/checkpoint_G.safetensors: "param.<name>", "adam_m.<name>", "adam_v.<name>";
                    metadata "step", "data_rng", "dropout_rng", "history" (JSON each)
"""

import json
import pathlib

import numpy as np
import safetensors
import safetensors.numpy

from littlebaby.errors import BabyError
from littlebaby.runs import atomic_write_bytes


def save_arrays(path, arrays: dict, metadata: dict) -> None:
    """Write ``arrays`` (name -> ndarray) and ``metadata`` (name -> any JSON value) to one safetensors file."""
    tensors = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    meta = {key: json.dumps(value) for key, value in metadata.items()}   # safetensors metadata is str -> str
    atomic_write_bytes(path, safetensors.numpy.save(tensors, metadata=meta))


def load_arrays(path) -> tuple[dict, dict]:
    """(arrays, metadata) of a file written by ``save_arrays``; a missing or damaged file is a BabyError."""
    path = pathlib.Path(path)
    if not path.exists():
        raise BabyError(f"file not found: {path}")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}
        return arrays, {key: json.loads(value) for key, value in meta.items()}
    except (OSError, ValueError, safetensors.SafetensorError) as e:
        raise BabyError(f"cannot read {path}: {e}; the file is damaged, retrain or restore it") from None


def save_model(path, params: dict, model_config: dict, guid: str) -> None:
    save_arrays(path, params, {"config": model_config, "guid": guid, "format": "littlebaby-model"})


def load_model(path) -> tuple[dict, dict]:
    """(params, model config dict) of a model file."""
    arrays, meta = load_arrays(path)
    if "config" not in meta:
        raise BabyError(f"{path} has no model config in its metadata; it was not written by littlebaby")
    return arrays, meta["config"]


def save_checkpoint(path, params, optimizer_state, data_rng_state, dropout_rng_state, history) -> None:
    arrays = {f"param.{n}": a for n, a in params.items()}
    arrays.update({f"adam_m.{n}": a for n, a in optimizer_state["m"].items()})
    arrays.update({f"adam_v.{n}": a for n, a in optimizer_state["v"].items()})
    meta = {"step": optimizer_state["step"], "data_rng": data_rng_state, "dropout_rng": dropout_rng_state,
            "history": history, "format": "littlebaby-checkpoint"}
    save_arrays(path, arrays, meta)


def load_checkpoint(path) -> dict:
    """{"params", "optimizer": {"step", "m", "v"}, "data_rng", "dropout_rng", "history"} of a checkpoint."""
    arrays, meta = load_arrays(path)
    if meta.get("format") != "littlebaby-checkpoint":
        raise BabyError(f"{path} is not a littlebaby checkpoint")

    def group(prefix):
        return {n[len(prefix):]: a for n, a in arrays.items() if n.startswith(prefix)}

    return {"params": group("param."), "optimizer": {"step": meta["step"], "m": group("adam_m."),
                                                     "v": group("adam_v.")},
            "data_rng": meta["data_rng"], "dropout_rng": meta["dropout_rng"], "history": meta["history"]}
