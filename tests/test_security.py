"""Untrusted files: nothing in the package can run code from a file, crafted files are refused with a
BabyError before any compute, and arbitrary bytes never raise anything else."""

import ast
import json
import pathlib
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TEXT
from littlebaby import checkpoint, model
from littlebaby.cli import main
from littlebaby.errors import BabyError
from littlebaby.files import read_json
from littlebaby.runs import RunPaths, load_record, run_ids
from littlebaby.tokenizers import load_tokenizer, tokenizer_from_dict, train_tokenizer

REPO = pathlib.Path(__file__).resolve().parents[1]


def pickle_payload(marker: pathlib.Path) -> bytes:
    """Protocol-0 pickle opcodes, written out by hand, that would call os.system("touch <marker>") if anything
    unpickled them: c(lass) os.system, ( mark, S string, t(uple), R(educe), . stop."""
    return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode("ascii")


def npy_with_pickle(marker: pathlib.Path) -> bytes:
    """A .npy file of one object (dtype |O): np.load(allow_pickle=True) would run the payload."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("ascii") + pickle_payload(marker)


def paths_of(work) -> RunPaths:
    (guid,) = run_ids(work)
    return RunPaths(work, guid)


def generate_refused(work, capsys, says):
    code = main(["generate", "last", "--max-tokens", "3", "--out", str(work)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert says in err, err


def test_no_code_execution_primitives_in_the_package():
    """No pickle, marshal, eval, exec, __import__ or allow_pickle anywhere in littlebaby/."""
    found = []
    for path in (REPO / "littlebaby").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                found += [f"{path.name}:{node.lineno} import {n}" for n in names
                          if n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve", "joblib")]
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("eval", "exec", "__import__"):
                found.append(f"{path.name}:{node.lineno} {node.func.id}()")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                found.append(f"{path.name}:{node.lineno} allow_pickle")
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads") and \
                    getattr(node.value, "id", None) in ("np", "numpy", "torch", "yaml", "pickle"):
                found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert not found, found


@pytest.mark.parametrize("which, npy_says, pickle_says", [
    ("model", "is not a littlebaby safetensors file", "is not a littlebaby safetensors file"),
    ("tokenizer", "is not UTF-8 text", "is not valid JSON"),
    ("config", "is not UTF-8 text", "is not valid JSON"),
])
def test_a_pickle_payload_in_any_run_file_runs_nothing(work, capsys, tmp_path, which, npy_says, pickle_says):
    """Each crafted file is refused by the check of its own kind, which names the file, and runs nothing."""
    marker = tmp_path / "pwned"
    target = getattr(paths_of(work), which)
    target.write_bytes(npy_with_pickle(marker))
    generate_refused(work, capsys, f"{target} {npy_says}")
    target.write_bytes(pickle_payload(marker))
    generate_refused(work, capsys, f"{target} {pickle_says}")
    assert not marker.exists()


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode("utf-8")
    return len(raw).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize("header, data, says", [
    ({"wte": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 16]}}, bytes(16), "do not fit"),
    ({"wte": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1 << 50]}}, bytes(16), "do not fit"),
    ({"wte": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}}, bytes(16), "do not fit"),
    ({"wte": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 4]}}, bytes(16), "do not fit"),
    ({"wte": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}, bytes(16), "not float32 or float64"),
    ({"wte": {"dtype": "O", "shape": [1], "data_offsets": [0, 8]}}, bytes(8), "not float32 or float64"),
    ({"__metadata__": {"config": 5}}, b"", "metadata is not a map of strings"),
    ({"__metadata__": {"format": '"littlebaby-model"', "config": "[1]"}}, b"", "not a littlebaby model"),
    ([1, 2, 3], b"", "not a JSON object"),
], ids=["huge-shape", "offset-past-end", "negative-dim", "offsets-reversed", "int64", "object", "meta-not-str",
        "config-not-object", "header-a-list"])
def test_crafted_safetensors_headers_are_refused(tmp_path, header, data, says):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(header, data))
    with pytest.raises(BabyError, match=says.replace("(", r"\(")):
        checkpoint.load_model(path)


def test_absurd_header_length_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes((1 << 62).to_bytes(8, "little") + b"{}")
    with pytest.raises(BabyError, match="truncated"):
        checkpoint.load_model(path)


def rewrite_model(paths, change):
    arrays, meta = checkpoint.load_arrays(paths.model)
    change(arrays, meta)
    checkpoint.save_arrays(paths.model, arrays, meta)


@pytest.mark.parametrize("change, says", [
    (lambda a, m: a.update(wte=a["wte"].astype(np.float64)), "should be float32"),
    (lambda a, m: a.update(wte=a["wte"][:-1]), "should be float32"),
    (lambda a, m: a.pop("ln_f.w"), "missing"),
    (lambda a, m: m["config"].update(n_ctx=10 ** 30), "should be float32"),
    (lambda a, m: m["config"].update(vocab_size=m["config"]["vocab_size"] + 1), "should be float32"),
    (lambda a, m: m["config"].update(n_layers=-1), "positive"),
    (lambda a, m: a["wte"].__setitem__((0, 0), np.nan), "NaN"),
], ids=["float64", "short-wte", "missing-array", "huge-n_ctx", "vocab-mismatch", "negative-layers", "nan"])
def test_model_files_are_checked_before_any_compute(work, capsys, monkeypatch, change, says):
    def no_compute(*args, **kwargs):
        raise AssertionError("the model ran on a file that should have been refused")

    rewrite_model(paths_of(work), change)
    monkeypatch.setattr(model, "gpt_forward", no_compute)
    generate_refused(work, capsys, says)


def test_huge_numbers_in_json_files_are_refused(work, capsys):
    paths = paths_of(work)
    paths.tokenizer.write_text('{"kind": "char", "version": ' + "9" * 5000 + "}", encoding="utf-8")
    generate_refused(work, capsys, "not valid JSON")
    paths.config.write_text('{"guid": 1e999999}', encoding="utf-8")
    generate_refused(work, capsys, "run config")


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def only_baby_errors(load, data: bytes, name: str):
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / name
        path.write_bytes(data)
        try:
            load(path)
        except BabyError:
            pass


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_to_the_loaders_raise_only_baby_error(data):
    only_baby_errors(checkpoint.load_model, data, "model.safetensors")
    only_baby_errors(checkpoint.load_checkpoint, data, "checkpoint.safetensors")
    only_baby_errors(load_tokenizer, data, "tokenizer.json")
    only_baby_errors(lambda p: read_json(p, "run config"), data, "config.json")


@FUZZ
@given(st.data())
def test_mutated_real_files_raise_only_baby_error(trained, data):
    """A real model, checkpoint and tokenizer with a few bytes overwritten: loads, or a BabyError."""
    paths = paths_of(trained)
    for path, load in ((paths.model, checkpoint.load_model), (paths.checkpoint, checkpoint.load_checkpoint),
                       (paths.tokenizer, load_tokenizer)):
        raw = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, min(len(raw) - 1, 600)))     # the header is where damage bites
            raw[at] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(1, len(raw)))
        only_baby_errors(load, bytes(raw[:cut]), path.name)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                max_size=4), max_leaves=12)


@FUZZ
@given(st.fixed_dictionaries({"kind": st.sampled_from(["char", "bpe"]), "version": st.just(1)},
                             optional={"vocab": JSON, "merges": JSON, "chars": JSON, "pattern": JSON}) | JSON)
def test_arbitrary_json_tokenizers_raise_only_baby_error(data):
    try:
        tokenizer_from_dict(data)
    except BabyError:
        pass


@FUZZ
@given(st.text(max_size=60))
def test_any_text_round_trips_or_is_refused_clearly(text):
    bpe = train_tokenizer("bpe", TEXT, 260)
    assert bpe.decode(bpe.encode(text)) == text
    char = train_tokenizer("char", TEXT)
    try:
        ids = char.encode(text)
    except BabyError as e:
        assert "character" in str(e) or "surrogate" in str(e)
    else:
        assert char.decode(ids) == text


RECORD_KEYS = ("version", "guid", "kind", "parent", "created", "seed", "model", "training", "plan", "tokenizer",
               "data")


@FUZZ
@given(st.fixed_dictionaries({**{k: JSON for k in RECORD_KEYS}, "guid": st.just("abc"), "seed": st.integers(),
                              "kind": st.sampled_from(["train", "finetune"]), "created": st.text(max_size=5)})
       | st.dictionaries(st.sampled_from(RECORD_KEYS) | st.text(max_size=4), JSON, max_size=12) | JSON)
def test_arbitrary_run_records_raise_only_baby_error(record):
    with tempfile.TemporaryDirectory() as folder:
        (pathlib.Path(folder) / "configs").mkdir()
        (pathlib.Path(folder) / "configs" / "config_abc.json").write_text(json.dumps(record), encoding="utf-8")
        try:
            load_record(folder, "abc")
        except BabyError:
            pass
