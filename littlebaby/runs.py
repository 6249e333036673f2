"""GUID-tagged runs: where each artifact lives, and finding a run by GUID, prefix or ``last``.

For a run with id G, under the output directory ``out``:

    configs/config_G.json           the run record (RunRecord): model, training, tokenizer, data, parent
    models/model_G.safetensors      the weights, the config JSON in the metadata
    models/tokenizer_G.json         the tokenizer
    outputs/report_G.json, .png     the training analysis and the loss curve
    outputs/completion_G.txt        500 tokens sampled after training
    runs/checkpoint_G.safetensors   resume state: weights, AdamW moments, step, RNG states, history
    runs/tokens_G.bin               the encoded corpus (uint8 or uint16), read through np.memmap

A finetune of G is the run ``G_finetuned``; its parent is recorded in its config.
"""

import dataclasses
import datetime
import os
import pathlib
import re
import tempfile
import uuid
from typing import Literal

from littlebaby import config as configlib
from littlebaby.errors import BabyError
from littlebaby.files import WriteError, read_json, write_error_message

FINETUNE_SUFFIX = "_finetuned"
RUN_NAME = re.compile(r"[0-9a-fA-F][0-9a-fA-F-]*(_finetuned)*")   # a GUID prefix, never a path


def remove_stale_temps(out, guid) -> list[pathlib.Path]:
    """Delete the hidden temp files a SIGKILL left while writing run ``guid``'s files (``.model_G.safetensors
    .x1y2.tmp``); only this run's, so another run writing in the same --out is never disturbed."""
    stale = [p for folder in ("configs", "models", "outputs", "runs")
             for p in (pathlib.Path(out) / folder).glob(f".*_{guid}.*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def make_out_dirs(out) -> None:
    """Create --out and its four folders, and prove a file can be written there, before any work: an --out
    that is a file, read-only or on a full disk is refused with one clear line instead of a traceback."""
    out = pathlib.Path(out)
    try:
        for folder in ("configs", "models", "outputs", "runs"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out / "runs", prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise WriteError(write_error_message(out, e)) from None


@dataclasses.dataclass
class RunRecord(configlib.TypedConfig):
    """Everything needed to rebuild or resume a run; saved as configs/config_G.json."""
    WHAT = "run config"

    version: str                              # littlebaby version that made the run
    guid: str                                 # the run id G (a finetune's ends in _finetuned)
    kind: Literal["train", "finetune", "import"]   # how the run started (import: of the original, or of a GPT-2 folder)
    parent: str | None                        # the run a finetune started from, else None
    created: str                              # UTC time the run started, ISO 8601 with microseconds
    seed: int                                 # the seed of init, dropout, batches
    model: dict                               # littlebaby.model.Config as a dict
    training: dict                            # littlebaby.training.TrainConfig as a dict (what was asked)
    plan: dict                                # littlebaby.training.Plan as a dict (steps, schedule: what was done)
    tokenizer: dict                           # {"kind": ..., "vocab_size": ...}
    data: dict                                # source, sizes in chars and tokens, token dtype
    source: dict | None = None                # an imported run's origin: format, version, its GUID there, path
    command: str | None = None                # the command line that started the run (`baby train ...`), if any
    age: dict | None = None                   # the age asked for, its preset, what overrode it (littlebaby.ages)




@dataclasses.dataclass(frozen=True)
class RunPaths:
    """The paths of every file of run ``guid`` under ``out``."""
    out: pathlib.Path
    guid: str

    def _file(self, folder, stem, ext):
        return self.out / folder / f"{stem}_{self.guid}.{ext}"

    @property
    def config(self):
        return self._file("configs", "config", "json")

    @property
    def model(self):
        return self._file("models", "model", "safetensors")

    @property
    def tokenizer(self):
        return self._file("models", "tokenizer", "json")

    @property
    def report_json(self):
        return self._file("outputs", "report", "json")

    @property
    def report_png(self):
        return self._file("outputs", "report", "png")

    @property
    def completion(self):
        return self._file("outputs", "completion", "txt")

    @property
    def checkpoint(self):
        return self._file("runs", "checkpoint", "safetensors")

    @property
    def tokens(self):
        return self._file("runs", "tokens", "bin")

    def generation(self, stamp: str):
        """(text path, json path) of one ``baby generate`` output, stamped yyyymmddhhmmss."""
        text = self._file("outputs", "completion", "txt").with_name(f"completion_{self.guid}_{stamp}.txt")
        return text, text.with_suffix(".json")


def new_guid() -> str:
    return str(uuid.uuid4())


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def run_ids(out) -> list[str]:
    """Ids of the runs with a config file under out, sorted."""
    folder = pathlib.Path(out) / "configs"
    if not folder.is_dir():
        return []
    return sorted(p.name[len("config_"):-len(".json")] for p in folder.glob("config_*.json"))


def load_record(out, guid) -> RunRecord:
    """The record of run ``guid``, refused when it names another run or holds an impossible seed."""
    path = RunPaths(pathlib.Path(out), guid).config
    record = RunRecord.from_dict(read_json(path, "run config"), f"run config of {guid}")
    if record.guid != guid:
        raise BabyError(f"{path} describes run {record.guid!r}, not {guid!r}; it was renamed or copied by hand: "
                        f"rename it back or delete it")
    if not 0 <= record.seed < 2 ** 63:
        raise BabyError(f"{path} has seed {record.seed}; a seed is an integer in [0, 2**63)")
    return record


def resolve_run(run: str, out) -> str:
    """The run id meant by ``run``: an id, ``last``, or a unique prefix of a GUID (optionally + ``_finetuned``).

    ``ab12`` picks the base run whose GUID starts with ab12; ``ab12_finetuned`` picks its finetune.
    """
    if not isinstance(run, str) or not (run == "last" or RUN_NAME.fullmatch(run)):
        raise BabyError(f"{run!r} is not a run name: give a GUID, a prefix of one (hex digits and '-', "
                        f"optionally ending in {FINETUNE_SUFFIX}), or last; `baby runs` lists them")
    ids = run_ids(out)
    if not ids:
        raise BabyError(f"no runs in {pathlib.Path(out).resolve()}: train one with `baby train`, "
                        f"or point `out` at the directory that holds configs/")
    if run == "last":
        return max(ids, key=lambda g: (load_record(out, g).created, g))
    if run in ids:
        return run
    base = run.split(FINETUNE_SUFFIX)[0]
    suffix = run[len(base):]
    bases = sorted({g.split(FINETUNE_SUFFIX)[0] for g in ids if g.startswith(base)})
    matches = [b + suffix for b in bases if b + suffix in ids]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise BabyError(f"no run matches {run!r} in {pathlib.Path(out).resolve()}; `baby runs` lists them")
    raise BabyError(f"{run!r} matches {len(matches)} runs ({', '.join(matches[:4])}); type more of the GUID")
