"""Arrays on disk as safetensors (never pickle), with JSON metadata, written atomically.

Two kinds of file use it:
    the model       models/model_G.safetensors: the parameters under their own names; metadata "config"
    a checkpoint    runs/checkpoint_G.safetensors: "param.<name>", "adam_m.<name>", "adam_v.<name>";
                    metadata "step", "data_rng", "dropout_rng", "history" (JSON each), and with more than one
                    share of the batch (MPI ranks) "dropout_rngs", every share's dropout state in share order
"""

import dataclasses
import json
import pathlib

import numpy as np
import safetensors
import safetensors.numpy

from littlebaby.errors import BabyError
from littlebaby.nn.backend import to_host
from littlebaby.files import atomic_path


def save_arrays(path, arrays: dict, metadata: dict) -> None:
    """Write ``arrays`` (name -> ndarray) and ``metadata`` (name -> any JSON value) to one safetensors file.

    ``save_file`` writes the tensors one after the other from the arrays themselves, so no second copy of the
    weights is ever made (``save`` would build the whole file in memory first, twice over).
    """
    tensors = {name: np.ascontiguousarray(to_host(a)) for name, a in arrays.items()}  # from the GPU, if there
    meta = {key: json.dumps(value) for key, value in metadata.items()}   # safetensors metadata is str -> str
    with atomic_path(path) as tmp:
        try:
            safetensors.numpy.save_file(tensors, tmp, metadata=meta)
        except safetensors.SafetensorError as e:   # its I/O errors (a full disk) arrive as this
            raise OSError(f"{e}") from None


def load_arrays(path) -> tuple[dict, dict]:
    """(arrays, metadata) of a file written by ``save_arrays``; a missing, damaged or crafted file is a BabyError.

    The header is checked by ``check_header`` before the safetensors library maps a single tensor.
    """
    path = pathlib.Path(path)
    try:
        check_file(path)
        with safetensors.safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}
        return arrays, {key: json.loads(value) for key, value in meta.items()}
    except BabyError:
        raise
    except (OSError, ValueError, RecursionError, safetensors.SafetensorError) as e:
        raise BabyError(f"cannot read {path}: {e}; the file is damaged, retrain or restore it") from None


def check_file(path) -> None:
    """Read only the header of the safetensors file at ``path`` and check it against the file's length
    (``check_header``): a missing, truncated or crafted file is a BabyError, found without reading a tensor."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise BabyError(f"file not found: {path}" if not path.exists() else f"{path} is not a file")
    with open(path, "rb") as f:   # the 8-byte header length, then only the header itself
        prefix = f.read(8)
        claimed = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
        check_header(prefix + f.read(min(claimed, HEADER_LIMIT)), path.stat().st_size, path)


HEADER_LIMIT = 100 << 20                            # 100 MB of JSON header is far beyond any real model
DTYPES = {"F32": 4, "F64": 8}                       # the only tensor types littlebaby writes


def check_header(head: bytes, file_size: int, path) -> None:
    """Refuse a safetensors header that is not what littlebaby writes: only float32/float64 tensors whose
    shapes, offsets and sizes agree with each other and with the file's length (no absurd allocation)."""
    damaged = f"{path} is not a littlebaby safetensors file"
    if len(head) < 8:
        raise BabyError(f"{damaged}: it is only {file_size} bytes long; retrain or restore it")
    n = int.from_bytes(head[:8], "little")
    if n > min(HEADER_LIMIT, file_size - 8):
        raise BabyError(f"{damaged}: its header claims {n} bytes in a file of {file_size}; it is truncated "
                        f"or was not written by littlebaby")
    try:
        header = json.loads(head[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BabyError(f"{damaged}: its header is not UTF-8 JSON; retrain or restore it") from None
    if not isinstance(header, dict):
        raise BabyError(f"{damaged}: its header is not a JSON object")
    data_size = file_size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise BabyError(f"{damaged}: its metadata is not a map of strings")
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
            raise BabyError(f"{damaged}: tensor {name!r} is not float32 or float64")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if (not isinstance(shape, list) or len(shape) > 4
                or not all(type(d) is int and 0 <= d <= data_size for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= data_size
                or offsets[1] - offsets[0] != DTYPES[entry["dtype"]] * int(np.prod(shape, dtype=object))):
            raise BabyError(f"{damaged}: tensor {name!r} has shape {shape} and offsets {offsets} that do not "
                            f"fit its {data_size} bytes of data; it is damaged or crafted")


def save_model(path, params: dict, model_config: dict, guid: str) -> None:
    save_arrays(path, params, {"config": model_config, "guid": guid, "format": "littlebaby-model"})


def load_model(path) -> tuple[dict, dict]:
    """(params, model config dict) of a model file, refused unless it is a littlebaby model this version can
    read: every array float32/float64 and finite, the config a JSON object with only known keys."""
    arrays, meta = load_arrays(path)
    if meta.get("format") != "littlebaby-model" or not isinstance(meta.get("config"), dict):
        raise BabyError(f"{path} is not a littlebaby model (no format and config in its metadata); "
                        f"load only model_G.safetensors files written by `baby train`")
    check_known_keys(meta["config"], path)
    check_finite(arrays, path)
    return arrays, meta["config"]


def check_known_keys(model_config: dict, path) -> None:
    """A model made by a newer littlebaby may use switches this version does not have: say so plainly."""
    from littlebaby.model import Config   # here, not at the top: model.py is far heavier than this module
    unknown = sorted(set(model_config) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        raise BabyError(f"{path} uses model settings this version of littlebaby does not know "
                        f"({', '.join(map(str, unknown[:4]))}); it was made by a newer version: upgrade littlebaby "
                        f"(pip install -U) to load, generate from or finetune it")


def check_finite(arrays: dict, path) -> None:
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise BabyError(f"{path}: array {name!r} holds NaN or infinite values; the run diverged or the file "
                            f"is damaged. Use an earlier run, or retrain with a lower `lr`")


def save_checkpoint(path, params, optimizer_state, data_rng_state, dropout_rng_states, history) -> None:
    """Write a checkpoint; ``dropout_rng_states`` holds the dropout generator state of each share of the batch
    (one per worker process of each MPI rank, see littlebaby.lifecycle.dropout_rngs; None for a share no worker
    drew). Share 0's is "dropout_rng", as it always was, so a
    one-process checkpoint is unchanged; the list goes along only when there are more shares."""
    arrays = {f"param.{n}": a for n, a in params.items()}
    arrays.update({f"adam_m.{n}": a for n, a in optimizer_state["m"].items()})
    arrays.update({f"adam_v.{n}": a for n, a in optimizer_state["v"].items()})
    meta = {"step": optimizer_state["step"], "data_rng": data_rng_state, "dropout_rng": dropout_rng_states[0],
            "history": history, "format": "littlebaby-checkpoint"}
    if len(dropout_rng_states) > 1:
        meta["dropout_rngs"] = list(dropout_rng_states)
    save_arrays(path, arrays, meta)


def load_checkpoint(path) -> dict:
    """{"params", "optimizer": {"step", "m", "v"}, "data_rng", "dropout_rngs", "history"} of a checkpoint,
    each part checked (names, shapes and dtypes of the moments against the parameters, the step, every RNG
    state, the history's series) so a resume never starts from a damaged or crafted file. "dropout_rngs" has
    one state per share of the batch that was saved (one without MPI)."""
    arrays, meta = load_arrays(path)
    bad = f"{path} is not a usable littlebaby checkpoint"
    if meta.get("format") != "littlebaby-checkpoint":
        raise BabyError(f"{bad}: no littlebaby-checkpoint format in its metadata")

    def group(prefix):
        return {n[len(prefix):]: a for n, a in arrays.items() if n.startswith(prefix)}

    params, m, v = group("param."), group("adam_m."), group("adam_v.")
    for moments in (m, v):
        if set(moments) != set(params) or any(moments[k].shape != params[k].shape
                                               or moments[k].dtype != params[k].dtype for k in params):
            raise BabyError(f"{bad}: its AdamW moments do not match its parameters")
    check_finite(arrays, path)
    step, history = meta.get("step"), meta.get("history")
    if type(step) is not int or step < 0:
        raise BabyError(f"{bad}: step {step!r} is not a count of steps")
    if not isinstance(history, dict) or not all(isinstance(value, (list, float, int))
                                                for value in history.values()):
        raise BabyError(f"{bad}: its training history is missing or malformed")
    dropout_rngs = meta.get("dropout_rngs", [meta.get("dropout_rng")])
    if not isinstance(dropout_rngs, list) or not dropout_rngs or dropout_rngs[0] is None or \
            dropout_rngs[0] != meta.get("dropout_rng"):
        raise BabyError(f"{bad}: its dropout_rngs do not start with its dropout_rng")
    drawn = [("dropout_rng", state) for state in dropout_rngs if state is not None]   # None: a share no one drew
    for key, state in [("data_rng", meta.get("data_rng"))] + drawn:
        check_rng_state(state, f"{bad}: its {key} state")
    return {"params": params, "optimizer": {"step": step, "m": m, "v": v},
            "data_rng": meta["data_rng"], "dropout_rngs": dropout_rngs, "history": history}


def check_rng_state(state, what: str) -> None:
    """A saved PCG64 state must be one numpy accepts; try it on a scratch generator."""
    try:
        np.random.default_rng().bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError):
        raise BabyError(f"{what} is not a numpy PCG64 state; the file is damaged, restart the run") from None
