"""Bad input gets one clear line and exit code 2 with nothing written; faults (divergence, signals, a full
disk, SIGKILL mid-save, two runs at once) lose nothing. Every case goes through ``baby`` (littlebaby.cli.main)."""

import ast
import errno
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import TEXT, TINY_FLAGS, TINY_RUN
from littlebaby import api, checkpoint, files, runs, training
from littlebaby.cli import main
from littlebaby.runs import RunPaths, run_ids
from littlebaby.tokenizers import train_tokenizer

TINY = TINY_FLAGS
TINY_OPTIONS = dict(TINY_RUN, completion_tokens=0)
REPO = pathlib.Path(__file__).resolve().parents[1]


def baby(*args):
    return main([str(a) for a in args])


def snapshot(folder) -> dict:
    """relative path -> sha256 of every file under folder (hidden temp files included)."""
    folder = pathlib.Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, work, *args, says=""):
    """Run baby; assert exit 2, one `error:` line naming `says`, no traceback, and no file written or changed."""
    before = snapshot(work)
    code = baby(*args)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert says.lower() in err.lower(), err
    assert snapshot(work) == before
    return err


def the_run(work) -> RunPaths:
    (guid,) = [g for g in run_ids(work) if not g.endswith(runs.FINETUNE_SUFFIX)]
    return RunPaths(work, guid)


# ---- bad input ---------------------------------------------------------------------------------------------

def test_bad_data_files(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "short.txt").write_text("ANNE:\nHi.\n", encoding="utf-8")
    (tmp_path / "val.txt").write_text("abcdefghijklmnopqrst", encoding="utf-8")   # 18 train, 2 val tokens
    (tmp_path / "latin1.txt").write_bytes("ANNE:\nCaf\u00e9 au lait.\n".encode("latin-1"))
    (tmp_path / "folder").mkdir()
    refused(capsys, tmp_path, "train", "--data", tmp_path / "missing.txt", "--out", tmp_path, *TINY, says="not found")
    refused(capsys, tmp_path, "train", "--data", tmp_path / "folder", "--out", tmp_path, *TINY, says="folder")
    refused(capsys, tmp_path, "train", "--data", tmp_path / "empty.txt", "--out", tmp_path, *TINY, says="empty")
    refused(capsys, tmp_path, "train", "--data", tmp_path / "short.txt", "--out", tmp_path, *TINY,
            says="n_ctx + 1")
    refused(capsys, tmp_path, "train", "--data", tmp_path / "val.txt", "--out", tmp_path, *TINY,
            says="validation split")
    err = refused(capsys, tmp_path, "train", "--data", tmp_path / "latin1.txt", "--out", tmp_path, *TINY,
                  says="not UTF-8")
    assert "byte 0xe9 at line 2, column 4" in err and "iconv" in err


def test_bad_run_names(work, tmp_path, capsys):
    refused(capsys, tmp_path, "generate", "last", "--out", tmp_path, says="no runs in")
    refused(capsys, work, "generate", "ffff", "--out", work, says="no run matches")
    for name in ("../../etc/passwd", "", "a b", "zz"):
        refused(capsys, work, "generate", name, "--out", work, says="is not a run name")
    record = json.loads(the_run(work).config.read_text(encoding="utf-8"))
    for guid in ("abcd1111-0000", "abcd2222-0000"):
        (work / "configs" / f"config_{guid}.json").write_text(json.dumps({**record, "guid": guid}),
                                                               encoding="utf-8")
    refused(capsys, work, "generate", "abcd", "--out", work, says="matches 2 runs")


def test_damaged_model_files(work, capsys):
    paths = the_run(work)
    good = paths.model.read_bytes()
    paths.model.write_bytes(good[:len(good) // 2])
    refused(capsys, work, "generate", "last", "--out", work, says=str(paths.model))
    paths.model.write_bytes(good[:8] + bytes(b ^ 0x5A for b in good[8:40]) + good[40:])
    refused(capsys, work, "generate", "last", "--out", work, says="not a littlebaby safetensors file")
    paths.model.write_bytes(b"")
    refused(capsys, work, "generate", "last", "--out", work, says="only 0 bytes")
    shutil.copyfile(paths.checkpoint, paths.model)                        # a checkpoint is not a model
    refused(capsys, work, "generate", "last", "--out", work, says="not a littlebaby model")


def test_model_from_a_newer_version_is_refused_for_generate_and_finetune(work, capsys):
    paths = the_run(work)
    arrays, meta = checkpoint.load_arrays(paths.model)
    meta["config"]["c_memory"] = "recurrent"                             # a switch this version lacks
    checkpoint.save_arrays(paths.model, arrays, meta)
    refused(capsys, work, "generate", "last", "--out", work, says="newer version")
    refused(capsys, work, "finetune", "last", "--data", work / "tiny.txt", "--steps", "2", "--out", work,
            says="c_memory")


def test_tokenizer_of_another_size_is_refused(work, capsys):
    paths = the_run(work)
    data = json.loads(paths.tokenizer.read_text(encoding="utf-8"))
    other = train_tokenizer(data["kind"], TEXT + "XYZ")
    other.save(paths.tokenizer)
    refused(capsys, work, "generate", "last", "--out", work, says="different runs")


@pytest.mark.parametrize("change, says", [
    (lambda r: r.pop("plan"), "lacks the key 'plan'"),
    (lambda r: r.update(guid="0000"), "rename it back"),
    (lambda r: r.update(seed=-1), "seed -1"),
    (lambda r: r.update(kind="steal"), "'kind'"),
    (lambda r: r.update(extra=1), "unknown key 'extra'"),
], ids=["missing-key", "other-guid", "negative-seed", "bad-kind", "unknown-key"])
def test_damaged_run_records(work, capsys, change, says):
    record = json.loads(the_run(work).config.read_text(encoding="utf-8"))
    change(record)
    the_run(work).config.write_text(json.dumps(record), encoding="utf-8")
    refused(capsys, work, "generate", "last", "--out", work, says=says)


@pytest.mark.parametrize("options, says", [
    ({"n_embd": 16}, "unknown option 'n_embd'"),
    ({"n_emb": "16"}, "must be of type int"),
    ({"head_size": 15, "n_heads": 2}, "divisible by n_heads"),
    ({"n_layers": 0}, "positive"),
    ({"n_emb": -4}, "positive"),
    ({"dropout": 1.0}, "[0, 1)"),
    ({"lr": 0}, "'lr' must be a positive"),
    ({"lr": -0.1}, "'lr' must be a positive"),
    ({"steps": 0}, "'steps' must be a positive integer"),
    ({"n_ctx": 4096}, "n_ctx + 1"),
    ([1, 2], "JSON object"),
])
def test_bad_config_files(tmp_path, capsys, options, says):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps(options), encoding="utf-8")
    refused(capsys, tmp_path, "train", "--data", tmp_path / "tiny.txt", "--config", tmp_path / "c.json",
            "--out", tmp_path, says=says)


def test_broken_config_json(tmp_path, capsys):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    for text in ("{", '{"n_ctx": ' + "9" * 5000 + "}", "[" * 100000):
        (tmp_path / "c.json").write_text(text, encoding="utf-8")
        refused(capsys, tmp_path, "train", "--data", tmp_path / "tiny.txt", "--config", tmp_path / "c.json",
                "--out", tmp_path, says="not valid JSON")


@pytest.mark.parametrize("flags, says", [
    (["--max-tokens", "-1"], "--max-tokens"),
    (["--top-p", "0"], "--top-p"),
    (["--top-p", "1.5"], "--top-p"),
    (["--temperature", "-0.5"], "--temperature"),
    (["--top-k", "0"], "--top-k"),
    (["--prompt", "Z\u00fcrich"], "'\u00fc'"),
])
def test_bad_generate_settings_write_nothing(work, capsys, flags, says):
    refused(capsys, work, "generate", "last", *flags, "--out", work, says=says)


def test_output_directory_that_cannot_be_written(tmp_path, capsys):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "a_file").write_text("not a directory", encoding="utf-8")
    refused(capsys, tmp_path, "train", "--data", tmp_path / "tiny.txt", "--steps", "2", "--quiet",
            "--out", tmp_path / "a_file", *TINY, says="cannot write")


# ---- faults ------------------------------------------------------------------------------------------------

def text_opens_without_encoding(source: str) -> list[int]:
    """Line numbers of open() / Path.open / os.fdopen in text mode, read_text(), write_text() without encoding=."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":                     # builtin open(path, mode)
            mode_at = 1
        elif isinstance(func, ast.Attribute) and func.attr in ("read_text", "write_text"):
            mode_at = None                                                       # Path.read_text / write_text
        elif isinstance(func, ast.Attribute) and func.attr in ("open", "fdopen") and not (
                isinstance(func.value, ast.Name) and func.value.id in ("TokenData", "os") and func.attr == "open"):
            # TokenData.open and os.open (a file descriptor, never text) take no encoding
            mode_at = 1 if func.attr == "fdopen" else 0                          # os.fdopen, Path.open
        else:
            continue
        modes = [] if mode_at is None else node.args[mode_at:mode_at + 1]
        modes += [k.value for k in node.keywords if k.arg == "mode"]
        if any(isinstance(m, ast.Constant) and "b" in str(m.value) for m in modes):
            continue
        if "encoding" not in {k.arg for k in node.keywords}:
            lines.append(node.lineno)
    return lines


def test_every_text_file_is_opened_as_utf8():
    sample = ('open(p)\nopen(p, "rb")\nos.fdopen(fd, "w")\np.read_text()\np.write_text(t, encoding="utf-8")\n'
              'p.open(mode="wb")\np.open()\nos.open(p, os.O_WRONLY)\n')
    assert text_opens_without_encoding(sample) == [1, 3, 4, 7]               # the check itself can fail
    offenders = [f"{path.name}:{line}" for path in (REPO / "littlebaby").rglob("*.py")
                 for line in text_opens_without_encoding(path.read_text(encoding="utf-8"))]
    assert not offenders, offenders


C_LOCALE = {**os.environ, "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "LC_ALL": "C", "LANG": "C"}
ACCENTS = "".join(f"ZO\u00cb:\nJ'ai {n} \u20ac et caf\u00e9.\n\n" for n in range(60))


def baby_in_c_locale(*args):
    """Run `python -m littlebaby` where the default encoding is ASCII: any file opened without
    encoding="utf-8" would fail on the accents."""
    return subprocess.run([sys.executable, "-m", "littlebaby", *map(str, args)], cwd=REPO, env=C_LOCALE,
                          capture_output=True, timeout=120)


def test_files_are_utf8_whatever_the_locale(tmp_path):
    (tmp_path / "t.txt").write_text(ACCENTS, encoding="utf-8")
    result = baby_in_c_locale("train", "--data", tmp_path / "t.txt", "--steps", "3", "--quiet", "--out", tmp_path,
                              *TINY)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    paths = the_run(tmp_path)
    assert "\u20ac" in paths.tokenizer.read_text(encoding="utf-8")
    paths.completion.read_text(encoding="utf-8")
    assert runs.load_record(tmp_path, paths.guid).data["chars"] == len(ACCENTS)


def test_generate_prints_in_an_ascii_locale(tmp_path):
    (tmp_path / "t.txt").write_text(ACCENTS, encoding="utf-8")
    assert baby_in_c_locale("train", "--data", tmp_path / "t.txt", "--steps", "3", "--quiet", "--out", tmp_path,
                            *TINY).returncode == 0
    result = baby_in_c_locale("generate", "last", "--prompt", "J", "--max-tokens", "300", "--seed", "1",
                              "--out", tmp_path)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="utf-8") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_stays_flat_over_a_long_run(tmp_path):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    rss = {}

    def on_step(step):
        if step in (500, 3000):
            rss[step] = rss_bytes()

    api.train(data=tmp_path / "tiny.txt", out=tmp_path, quiet=True, steps=3000, eval_every=250, eval_batches=2,
              on_step=on_step, **TINY_OPTIONS)
    growth = rss[3000] - rss[500]
    assert growth < 8 << 20, f"RSS grew by {growth / 2**20:.1f} MiB over 2500 steps"


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    from littlebaby import model
    original, calls = model.GPT.loss_and_grads, {"n": 0}

    def nan_from_step_7(self, idx, targets, rng=None):
        loss, grads = original(self, idx, targets, rng)
        calls["n"] += 1
        return (float("nan") if calls["n"] >= 7 else loss), grads

    monkeypatch.setattr(model.GPT, "loss_and_grads", nan_from_step_7)
    err = refused_after_training(capsys, "train", "--data", tmp_path / "tiny.txt", "--steps", "20",
                                 "--eval-every", "3", "--quiet", "--out", tmp_path, *TINY)
    monkeypatch.undo()
    assert "diverged at step 7" in err and "checkpoint of step 6" in err and "--lr" in err
    saved = checkpoint.load_checkpoint(the_run(tmp_path).checkpoint)   # loads: finite, consistent
    assert saved["optimizer"]["step"] == 6


def refused_after_training(capsys, *args):
    code = baby(*args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("where", ["eval", "save"])
def test_signal_during_eval_or_save_leaves_a_resumable_run(tmp_path, capsys, monkeypatch, where):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    target = {"eval": (training, "evaluate"), "save": (checkpoint, "save_arrays")}[where]
    original = getattr(*target)
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)                         # arrives in the middle of the call
        return original(*args, **kwargs)

    monkeypatch.setattr(*target, interrupted)
    assert baby("train", "--data", tmp_path / "tiny.txt", "--steps", "12", "--eval-every", "2", "--quiet",
                "--out", tmp_path, *TINY) == 0
    monkeypatch.undo()
    paths = the_run(tmp_path)
    stopped = checkpoint.load_checkpoint(paths.checkpoint)["optimizer"]["step"]
    assert 0 < stopped < 12
    assert [p.name for p in tmp_path.rglob(".*.tmp")] == []
    assert baby("train", "--resume", "last", "--quiet", "--out", tmp_path) == 0
    assert checkpoint.load_checkpoint(paths.checkpoint)["optimizer"]["step"] == 12


def test_interrupt_before_the_first_step_is_resumable(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    original = training.evaluate

    calls = {"n": 0}

    def interrupted_first_eval(*args):
        calls["n"] += 1
        if calls["n"] == 1:                       # one Ctrl-C; a second one would abort on purpose
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args)

    monkeypatch.setattr(training, "evaluate", interrupted_first_eval)
    assert baby("train", "--data", tmp_path / "tiny.txt", "--steps", "6", "--quiet", "--out", tmp_path, *TINY) == 0
    monkeypatch.undo()
    paths = the_run(tmp_path)
    assert checkpoint.load_checkpoint(paths.checkpoint)["optimizer"]["step"] == 0 and paths.model.exists()
    assert baby("train", "--resume", "last", "--quiet", "--out", tmp_path) == 0
    assert checkpoint.load_checkpoint(paths.checkpoint)["optimizer"]["step"] == 6


def test_disk_full_during_a_save_says_so_and_keeps_earlier_files(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    real_replace = os.replace
    saves = {"n": 0}

    def replace(src, dst):
        if "checkpoint_" in str(dst):
            saves["n"] += 1
            if saves["n"] == 3:                                         # steps 0, 2 saved; 4 fails
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    err = refused_after_training(capsys, "train", "--data", tmp_path / "tiny.txt", "--steps", "8",
                                 "--eval-every", "2", "--quiet", "--out", tmp_path, *TINY)
    monkeypatch.undo()
    assert "No space left on device" in err and "free some disk space" in err and "intact" in err
    paths = the_run(tmp_path)
    assert checkpoint.load_checkpoint(paths.checkpoint)["optimizer"]["step"] == 2      # the first save
    assert paths.config.exists() and paths.tokenizer.exists()
    assert [p.name for p in tmp_path.rglob(".*.tmp")] == []


def test_disk_full_while_saving_the_tokenizer(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    real_replace = os.replace

    def replace(src, dst):
        if "tokenizer_" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    err = refused_after_training(capsys, "train", "--data", tmp_path / "tiny.txt", "--steps", "2", "--quiet",
                                 "--out", tmp_path, *TINY)
    monkeypatch.undo()
    assert "tokenizer_" in err and "No space left on device" in err
    assert run_ids(tmp_path) == [] and [p.name for p in tmp_path.rglob(".*.tmp")] == []


KILL_MID_SAVE = """
import os, sys, time
from littlebaby import files
from littlebaby.cli import main
real_fsync, seen = os.fsync, []
def fsync(fd):
    if "checkpoint_" in os.readlink(f"/proc/self/fd/{fd}"):
        seen.append(fd)
        if len(seen) == 3:                       # after steps 0 and 2: the step-4 save, half done
            open(sys.argv[2], "w", encoding="utf-8").close()
            time.sleep(60)
    real_fsync(fd)
files.os.fsync = fsync
main(["train", "--data", sys.argv[1], "--steps", "8", "--eval-every", "2", "--quiet", "--out", sys.argv[3],
      "--n-ctx", "8", "--n-emb", "16", "--head-size", "16", "--n-heads", "2", "--n-layers", "1",
      "--batch-size", "4"])
"""


def test_sigkill_during_a_save_keeps_the_previous_checkpoint(tmp_path, capsys):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    marker, out = tmp_path / "saving", tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", KILL_MID_SAVE, tmp_path / "tiny.txt", marker, out], cwd=REPO,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child never reached its third checkpoint save"
        paths = the_run(out)
        before = paths.checkpoint.read_bytes()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert paths.checkpoint.read_bytes() == before                         # the step-2 save, whole
    assert checkpoint.load_checkpoint(paths.checkpoint)["optimizer"]["step"] == 2
    assert len(list(out.rglob(".checkpoint_*.tmp"))) == 1                   # the killed write's leftover
    assert baby("train", "--resume", paths.guid[:8], "--quiet", "--out", out) == 0
    assert checkpoint.load_checkpoint(paths.checkpoint)["optimizer"]["step"] == 8
    assert list(out.rglob(".*.tmp")) == []                                   # the resume cleared it


def test_two_runs_at_once_in_one_out(tmp_path, capsys):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    command = [sys.executable, "-m", "littlebaby", "train", "--data", str(tmp_path / "tiny.txt"), "--steps",
               "30", "--quiet", "--out", str(tmp_path), *TINY]
    children = [subprocess.Popen(command + ["--seed", str(seed)], cwd=REPO, stderr=subprocess.PIPE)
                for seed in (1, 2)]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode("utf-8")
    ids = run_ids(tmp_path)
    assert len(ids) == 2
    for guid in ids:
        record = runs.load_record(tmp_path, guid)
        params, _ = checkpoint.load_model(RunPaths(tmp_path, guid).model)
        assert record.plan["steps"] == 30 and record.guid == guid and params
    assert {runs.load_record(tmp_path, g).seed for g in ids} == {1, 2}       # neither clobbered the other
    assert runs.resolve_run("last", tmp_path) in ids
    assert [p.name for p in tmp_path.rglob(".*.tmp")] == []
