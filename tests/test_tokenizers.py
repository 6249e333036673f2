"""Tokenizers: round trips, save/load, streaming decode, malformed files, and the BPE training rule."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from littlebaby.errors import BabyError
from littlebaby.tokenizers import CharTokenizer, load_tokenizer, tokenizer_from_dict, train_tokenizer

SAMPLE = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer — ça va? 日本語 🙂\n"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def make(kind):
    return train_tokenizer(kind, SAMPLE)


# ---- character tokenizer --------------------------------------------------------------------------------


def test_char_vocab_is_sorted_unique_characters():
    tok = train_tokenizer("char", "hello")
    assert tok.kind == "char"
    assert tok.chars == ["e", "h", "l", "o"]
    assert tok.vocab_size == 4
    ids = tok.encode("hole")
    assert ids.dtype == np.int64 and ids.tolist() == [1, 3, 2, 0]
    assert tok.decode(ids) == "hole"
    assert tok.decode([1, 3, 2, 0]) == "hole"


def test_char_unknown_characters_are_named():
    tok = train_tokenizer("char", "abc")
    with pytest.raises(BabyError, match=r"'z'.*different alphabet"):
        tok.encode("abz")
    with pytest.raises(BabyError, match=r"23 character.*and 13 more"):
        tok.encode("abcdefghijklmnopqrstuvwxyz")


def test_char_extend_keeps_old_ids():
    tok = train_tokenizer("char", "hello")
    grown = tok.extend("world !")
    assert grown.chars[: tok.vocab_size] == tok.chars
    assert grown.chars[tok.vocab_size :] == [" ", "!", "d", "r", "w"]
    assert grown.encode("hello").tolist() == tok.encode("hello").tolist()
    assert grown.decode(grown.encode("hello world!")) == "hello world!"
    assert tok.extend("hole").chars == tok.chars


def test_char_fast_encode_matches_simple_twin_after_extend():
    tok = train_tokenizer("char", "zyx abc").extend("ÿ€🙂 q")
    text = "abc 🙂 xyz q€ÿ" * 3
    assert tok.encode(text).tolist() == tok.encode_simple(text).tolist()


@FAST
@given(st.text(max_size=40))
def test_char_round_trip_or_refuse(text):
    tok = make("char")
    if set(text) <= set(tok.chars):
        assert tok.decode(tok.encode(text)) == text
    else:
        with pytest.raises(BabyError, match="different alphabet"):
            tok.encode(text)


def test_empty_and_bad_training_text_refused():
    with pytest.raises(BabyError, match="empty"):
        train_tokenizer("char", "")
    with pytest.raises(BabyError, match="must be a str"):
        train_tokenizer("char", b"bytes")
    with pytest.raises(BabyError, match="surrogate"):
        train_tokenizer("char", "a\ud800b")
    with pytest.raises(BabyError, match="unknown tokenizer kind"):
        train_tokenizer("words", SAMPLE)
    with pytest.raises(BabyError, match="vocab_size"):
        train_tokenizer("char", SAMPLE, vocab_size=100)


# ---- shared behaviour, parametrized over kinds ----------------------------------------------------------

KINDS = ["char"]


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    tok = make(kind)
    path = tmp_path / "tok.json"
    tok.save(path)
    back = load_tokenizer(path)
    assert type(back) is type(tok) and back.to_dict() == tok.to_dict()
    assert back.encode(SAMPLE).tolist() == tok.encode(SAMPLE).tolist()
    assert json.loads(path.read_text(encoding="utf-8"))["kind"] == kind
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temp file left behind


@pytest.mark.parametrize("kind", KINDS)
def test_decode_refuses_bad_ids(kind):
    tok = make(kind)
    assert tok.decode([]) == ""
    assert tok.decode(np.array([], dtype=np.int64)) == ""
    for bad in ([tok.vocab_size], [-1], [[1, 2]], [1.5], ["a"], [2**70]):
        with pytest.raises(BabyError):
            tok.decode(bad)
    with pytest.raises(BabyError):
        tok.stream_decoder().push(tok.vocab_size)
    with pytest.raises(BabyError):
        tok.stream_decoder().push(1.0)


@pytest.mark.parametrize("kind", KINDS)
@FAST
@given(data=st.data())
def test_stream_decode_equals_whole_decode(kind, data):
    tok = make(kind)
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=30))
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in tok.decode(ids)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("kind", KINDS)
@FAST
@given(data=st.data())
def test_arbitrary_json_only_raises_baby_error(kind, data):
    good = make(kind).to_dict()
    key = data.draw(st.sampled_from(sorted(good) + ["extra"]))
    mutated = dict(good)
    mutated[key] = data.draw(JSON)
    for candidate in (mutated, data.draw(JSON)):
        try:
            tok = tokenizer_from_dict(candidate)
        except BabyError:
            continue
        tok.decode(tok.encode("the"[: 0]))  # whatever loaded must be usable


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_baby_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("bytes") / "tok.json"
    path.write_bytes(raw)
    with pytest.raises(BabyError):
        load_tokenizer(path)


def test_unreadable_files_raise_baby_error(tmp_path):
    with pytest.raises(BabyError, match="cannot read"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(BabyError, match="cannot read"):
        load_tokenizer(tmp_path)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(BabyError, match="not valid JSON"):
        load_tokenizer(deep)


@pytest.mark.parametrize("kind", KINDS)
def test_corrupted_fields_are_named(kind):
    good = make(kind).to_dict()
    with pytest.raises(BabyError, match="version"):
        tokenizer_from_dict({**good, "version": 99})
    with pytest.raises(BabyError, match="kind"):
        tokenizer_from_dict({**good, "kind": "words"})
    with pytest.raises(BabyError, match="unknown key 'extra'"):
        tokenizer_from_dict({**good, "extra": 1})


def test_char_file_duplicates_and_multichar_refused():
    good = make("char").to_dict()
    with pytest.raises(BabyError, match="twice"):
        tokenizer_from_dict({**good, "chars": ["a", "b", "a"]})
    with pytest.raises(BabyError, match="single character"):
        tokenizer_from_dict({**good, "chars": ["ab"]})
    with pytest.raises(BabyError, match="surrogate"):
        tokenizer_from_dict({**good, "chars": ["\ud800"]})
    with pytest.raises(BabyError, match="empty"):
        tokenizer_from_dict({**good, "chars": []})
