"""Token ids on disk, the 90/10 split, random windows and the epoch arithmetic."""

import numpy as np
import pytest

from littlebaby.data import (TokenData, encode_to_file, fixed_batches, read_text, sample_batch, steps_per_epoch,
                             text_chunks, token_dtype)
from littlebaby.errors import BabyError
from littlebaby.tokenizers import train_tokenizer

TEXT = "".join(f"LINE {i}:\nthe quick brown fox {i % 7} jumps.\n\n" for i in range(300))


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_token_dtype_is_the_smallest_that_fits():
    assert token_dtype(65) == np.uint8 and token_dtype(256) == np.uint8
    assert token_dtype(257) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_chunks_end_at_newlines_and_rejoin_to_the_text(text_file):
    chunks = list(text_chunks(text_file, chunk_chars=100))
    assert "".join(chunks) == TEXT
    assert len(chunks) > 10 and all(c.endswith("\n") for c in chunks[:-1])


def test_encoding_in_chunks_equals_encoding_at_once(text_file, tmp_path):
    tok = train_tokenizer("char", TEXT)
    n = encode_to_file(text_file, tok, tmp_path / "tokens.bin", chunk_chars=97)
    data = TokenData.open(tmp_path / "tokens.bin", tok.vocab_size)
    assert n == len(TEXT) and data.tokens.dtype == np.uint8 and isinstance(data.tokens, np.memmap)
    np.testing.assert_array_equal(data.tokens, tok.encode(TEXT))
    assert (tmp_path / "tokens.bin").stat().st_size == len(TEXT)      # one byte per id
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_split_is_ninety_ten(text_file, tmp_path):
    tok = train_tokenizer("char", TEXT)
    encode_to_file(text_file, tok, tmp_path / "t.bin")
    data = TokenData.open(tmp_path / "t.bin", tok.vocab_size)
    assert data.n_train == int(len(TEXT) * 0.9)
    assert len(data.train) + len(data.val) == len(TEXT)
    np.testing.assert_array_equal(data.val, tok.encode(TEXT[data.n_train:]))


def test_batches_are_shifted_windows_of_the_split():
    split = np.arange(1000, dtype=np.uint16) % 500                        # (N,)
    x, y = sample_batch(split, 4, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    for row in x:                                                        # each row is a contiguous window
        start = int(np.nonzero(split == row[0])[0][0])
        np.testing.assert_array_equal(row, split[start:start + 8])
    x2, _ = sample_batch(split, 4, 8, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)                                 # seeded: reproducible


def test_windows_reach_the_end_and_never_past_it():
    split = np.arange(10)
    rng = np.random.default_rng(1)
    last_targets = {int(sample_batch(split, 1, 4, rng)[1][0, -1]) for _ in range(500)}
    assert max(last_targets) == 9 and min(last_targets) == 4


def test_fixed_batches_repeat_exactly():
    split = np.arange(300) % 11
    a, b = fixed_batches(split, 2, 5, 3, seed=7), fixed_batches(split, 2, 5, 3, seed=7)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_epoch_covers_the_training_tokens_once():
    assert steps_per_epoch(1000, 4, 25) == 10
    assert steps_per_epoch(1001, 4, 25) == 11
    assert steps_per_epoch(5, 4, 25) == 1


def test_too_little_text_for_the_context_is_explained(tmp_path):
    tok = train_tokenizer("char", "abcdefghij" * 3)
    (tmp_path / "s.txt").write_text("abcdefghij" * 3, encoding="utf-8")
    encode_to_file(tmp_path / "s.txt", tok, tmp_path / "s.bin")
    data = TokenData.open(tmp_path / "s.bin", tok.vocab_size)
    data.check_fits(2)
    with pytest.raises(BabyError, match="validation split has 3 tokens"):
        data.check_fits(8)


def test_read_text_errors_name_the_file(tmp_path):
    with pytest.raises(BabyError, match="not found"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(BabyError, match="not UTF-8"):
        read_text(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(BabyError, match="empty"):
        read_text(tmp_path / "empty.txt")
