"""Every file littlebaby writes is written atomically, and every JSON file it reads is read here.

Runs, checkpoints, models, tokenizers, reports and the corpus cache all go through ``atomic_file``: a temp file
in the target's folder, fsynced, then renamed onto the target, so a reader sees the old file or the new one,
never half of one. ``read_json`` turns every way a JSON file can be broken into one BabyError naming the file.
"""

import contextlib
import errno
import json
import os
import pathlib
import tempfile

from littlebaby.errors import BabyError


class WriteError(BabyError, OSError):
    """A file could not be written (disk full, no permission): a BabyError for the user, an OSError for code."""


@contextlib.contextmanager
def atomic_file(path):
    """Open a temp file in path's directory for binary writing; when the block ends, fsync it and rename it onto
    path, so readers see the old file or the new one, never half of one.

    A write that fails (disk full, no permission, a read-only disk) removes its temp file, leaves the previous
    file as it was, and raises a WriteError saying what to do; so does any other OSError in the block. SIGKILL
    mid-write can leave only a hidden ``.name.*.tmp`` file behind, never a half-written ``name``.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


@contextlib.contextmanager
def atomic_path(path):
    """``atomic_file`` for a writer that takes a file name (safetensors' ``save_file``): yields the temp file's
    path; when the block ends the file is fsynced and renamed onto path, with the same guarantees."""
    path = pathlib.Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(write_error_message(path, e)) from None
    finally:
        if tmp is not None:
            pathlib.Path(tmp).unlink(missing_ok=True)   # gone already after the rename


def atomic_write_bytes(path, data: bytes) -> None:
    """Write data to path atomically (see atomic_file)."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, data, indent=2, ensure_ascii=True) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=ensure_ascii) + "\n")


def write_error_message(path, error: OSError) -> str:
    """One line for a failed write: which file, why, what to do, and that the earlier file is intact."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some disk space (or point `out` at another disk) and run the command again"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "choose a directory you can write to as `out`"
    elif error.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        advice = "`out` must be a directory (or a path that does not exist yet), not a file"
    else:
        advice = "check the disk and the permissions of `out`"
    return f"cannot write {path}: {reason}; {advice}. Files written before are intact"


def read_json(path, what: str):
    """Read a UTF-8 JSON file, turning a missing, unreadable or broken file into a BabyError that names it."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:   # missing, a directory, no permission
        raise BabyError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise BabyError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                        f"delete it or restore it") from None
    except (ValueError, RecursionError) as e:   # JSONDecodeError, a 5000-digit number, [[[[...]]]] nesting
        raise BabyError(f"{what} {path} is not valid JSON ({e}); delete it or restore it") from None
