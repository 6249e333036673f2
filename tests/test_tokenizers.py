"""Tokenizers: round trips, save/load, streaming decode, malformed files, and the BPE training rule."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from littlebaby.errors import BabyError
from littlebaby.tokenizers import (BPETokenizer, GPT2Tokenizer, load_tokenizer, tokenizer_from_dict,
                                   train_tokenizer)
from littlebaby.tokenizers.bpe import learn_merges, merge_pair, split_text

SAMPLE = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer — ça va? 日本語 🙂\n"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def make(kind):
    return train_tokenizer(kind, SAMPLE) if kind == "char" else train_tokenizer(kind, SAMPLE * 3, vocab_size=300)


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


# ---- byte-level BPE -------------------------------------------------------------------------------------


def learn_merges_simple(words, weights, n_merges):
    """The plain twin of learn_merges: recount every pair from scratch before each merge."""
    words = [list(w) for w in words]
    merges = []
    for _ in range(n_merges):
        counts = {}
        for word, weight in zip(words, weights):
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + weight
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))  # most frequent, then the smaller pair
        merges.append(best)
        words = [merge_pair(w, best, 255 + len(merges)) for w in words]
    return merges


def test_bpe_first_merge_on_small_text():
    tok = train_tokenizer("bpe", "aaab aaab aaab", vocab_size=257)
    assert tok.kind == "bpe" and tok.vocab_size == 257
    # chunks "aaab" x1 and " aaab" x2: (a, a) occurs 2 + 2 * 2 = 6 times, more than any other pair
    assert tok.merges == [(97, 97)]
    assert tok.encode("aaab").tolist() == [256, 97, 98]


def test_bpe_stops_when_pairs_run_out():
    tok = train_tokenizer("bpe", "abc", vocab_size=1000)
    assert tok.merges == [(97, 98), (256, 99)] and tok.vocab_size == 258
    assert tok.encode("abc").tolist() == [257]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text("ab c", max_size=12), min_size=1, max_size=8), st.integers(1, 12))
def test_incremental_training_matches_recounting(texts, n_merges):
    text = " ".join(texts)
    counts = {}
    for chunk in split_text(text):
        counts[chunk] = counts.get(chunk, 0) + 1
    words = [list(c.encode("utf-8")) for c in counts]
    weights = list(counts.values())
    assert learn_merges([list(w) for w in words], weights, n_merges) == learn_merges_simple(words, weights, n_merges)


def test_incremental_training_matches_recounting_on_real_text():
    text = SAMPLE * 2 + "the theme of these thefts, they thought, then thanked them"
    counts = {}
    for chunk in split_text(text):
        counts[chunk] = counts.get(chunk, 0) + 1
    words = [list(c.encode("utf-8")) for c in counts]
    weights = list(counts.values())
    assert learn_merges([list(w) for w in words], weights, 60) == learn_merges_simple(words, weights, 60)


def test_split_pattern_keeps_words_apart():
    assert split_text("Hello, world!!  It's 2024") == ["Hello", ",", " world", "!!", " ", " It", "'s", " 202", "4"]
    assert split_text("snake_case\tcafé\n\n") == ["snake", "_", "case", "\t", "café", "\n\n"]


@FAST
@given(st.text())
def test_bpe_round_trips_any_text(text):
    tok = make("bpe")
    assert "".join(split_text(text)) == text
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert tok.decode(ids) == text
    assert ids.tolist() == tok.encode_simple(text).tolist()


def test_bpe_merges_shorten_text_and_never_cross_chunks():
    tok = make("bpe")
    assert len(tok.encode(SAMPLE)) < len(SAMPLE.encode("utf-8")) * 0.7
    for i in range(256, tok.vocab_size):
        piece = tok.vocab_bytes[i].decode("utf-8", errors="ignore")
        assert len(split_text(piece)) <= 1, f"token {i} {piece!r} spans two chunks"


def test_bpe_stream_decoder_holds_back_half_characters():
    tok = BPETokenizer([])  # bytes only: "€" is three tokens
    ids = tok.encode("a€b").tolist()
    assert ids == [97, 0xE2, 0x82, 0xAC, 98]
    dec = tok.stream_decoder()
    assert [dec.push(i) for i in ids] == ["a", "", "", "€", "b"]
    assert dec.flush() == ""
    dec = tok.stream_decoder()
    assert [dec.push(i) for i in ids[:3]] == ["a", "", ""]
    assert dec.flush() == "\ufffd" == tok.decode(ids[:3])[1:]


def test_bpe_file_lists_learned_tokens_readably(tmp_path):
    tok = make("bpe")
    data = tok.to_dict()
    assert data["tokens"]["256"] == tok.vocab_bytes[256].decode("utf-8")
    assert len(data["merges"]) == len(data["tokens"]) == tok.vocab_size - 256
    half = BPETokenizer([(0xE2, 0x82)])
    assert half.to_dict()["tokens"] == {"256": "\\xe2\\x82"}


def test_bpe_corrupted_merges_are_refused():
    good = make("bpe").to_dict()
    cases = {
        "two ids": [[1, 2, 3]],
        "below 256": [[1, 256]],
        "repeats": [[1, 2], [1, 2]],
    }
    for why, merges in cases.items():
        tokens = {str(256 + i): "x" for i in range(len(merges))}
        with pytest.raises(BabyError, match=why):
            tokenizer_from_dict({**good, "merges": merges, "tokens": tokens})
    with pytest.raises(BabyError, match="listing does not match"):
        tokenizer_from_dict({**good, "tokens": {**good["tokens"], "256": "zz"}})
    with pytest.raises(BabyError, match="split_pattern"):
        tokenizer_from_dict({**good, "split_pattern": ".*"})
    with pytest.raises(BabyError, match="vocab_size"):
        train_tokenizer("bpe", SAMPLE, vocab_size=100)
    with pytest.raises(BabyError, match="surrogate"):
        make("bpe").encode("a\udc80")


# ---- shared behaviour, parametrized over kinds ----------------------------------------------------------

KINDS = ["char", "bpe"]


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
    if "\ufffd" not in tok.decode(ids):
        assert not any("\ufffd" in p for p in pieces), "a piece showed a broken character"


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
        text = tok.decode(list(range(tok.vocab_size)))  # whatever loads must be usable: it decodes every id,
        assert isinstance(text, str) and tok.decode(tok.encode(text)) == text  # and encodes what it decoded


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


# --- GPT-2's byte-level BPE (imported, not trained: built here by hand) ----------------------------------------

def small_gpt2_tokenizer():
    """Bytes in reversed id order, then "Ġt", "he", "Ġthe" (merge ranks 0..2), then <|endoftext|>."""
    from littlebaby.tokenizers.gpt2 import token_text
    tokens = [token_text(bytes([b])) for b in reversed(range(256))] + ["Ġt", "he", "Ġthe", "<|endoftext|>"]
    ids = {t: i for i, t in enumerate(tokens)}
    merges = [(ids["Ġ"], ids["t"]), (ids["h"], ids["e"]), (ids["Ġt"], ids["he"])]
    return GPT2Tokenizer(tokens, merges, [259])


def test_gpt2_tokenizer_merges_by_rank_and_keeps_special_tokens_whole(tmp_path):
    tok = small_gpt2_tokenizer()
    assert tok.encode(" the").tolist() == [258]                    # " t" + "he" -> " the"
    assert tok.encode("the<|endoftext|> the").tolist() == [255 - ord("t"), 257, 259, 258]
    assert tok.decode(tok.encode("a<|endoftext|>é 😀")) == "a<|endoftext|>é 😀"
    tok.save(tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert again.kind == "gpt2" and again.encode(" the other").tolist() == tok.encode(" the other").tolist()


@FAST
@given(st.text(max_size=40))
def test_gpt2_tokenizer_round_trips_any_text(text):
    tok = small_gpt2_tokenizer()
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("change, message", [
    (lambda d: d["tokens"].__setitem__(0, "a b"), "not made of GPT-2's byte characters"),
    (lambda d: d["merges"].append([0, 1]), "which is not a token"),
    (lambda d: d["tokens"].__setitem__(255, "ĀĀ"), "lacks tokens for 1 of the 256 bytes"),   # byte 0 gone
    (lambda d: d["tokens"].__setitem__(256, "Ā"), "two tokens stand for the same bytes"),
    (lambda d: d["merges"].append([1]), "pair of token ids"),
])
def test_gpt2_tokenizer_files_are_checked(tmp_path, change, message):
    data = small_gpt2_tokenizer().to_dict()
    change(data)
    with pytest.raises(BabyError, match=message):
        tokenizer_from_dict(data)


def test_a_gpt2_tokenizer_is_not_trained_here():
    with pytest.raises(BabyError, match="baby import-hf"):
        train_tokenizer("gpt2", "text")
