"""Text -> token ids on disk -> batches of random windows.

The corpus is encoded once, in chunks, into a flat file of ids in the smallest unsigned type that holds the
vocabulary (uint8 up to 256 tokens, else uint16), and read back through ``np.memmap``: memory stays
O(corpus), and a batch copies only its own (B, T) windows. The first 90% of the ids are the training split,
the last 10% the validation split, as in the original Tiny Shakespeare setup.

An epoch is ``len(train) / (B * n_ctx)`` steps: that many random windows cover each token about once.
"""

import dataclasses
import math
import pathlib

import numpy as np

from littlebaby import seeds
from littlebaby.errors import BabyError
from littlebaby.files import atomic_file

TRAIN_FRACTION = 0.9
CHUNK_CHARS = 1 << 20      # characters encoded at a time


def read_text(path) -> str:
    """The whole UTF-8 text of a file, with errors a user can act on."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BabyError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise BabyError(f"`data` must be a text file, {path} is a directory") from None
    except UnicodeDecodeError as e:
        raise BabyError(not_utf8_message(path, e)) from None
    except OSError as e:
        raise BabyError(f"cannot read data file {path}: {e.strerror or e}") from None
    if not text:
        raise BabyError(f"data file {path} is empty; give a UTF-8 text file with at least a few lines")
    return text


def not_utf8_message(path, error: UnicodeDecodeError) -> str:
    """Where the first non-UTF-8 byte is (line, column, the byte) and how to convert the file.

    littlebaby reads only UTF-8 (the tokenizers are defined on it); a Latin-1 or UTF-16 file must be
    converted once rather than guessed at on every read.
    """
    before = error.object[:error.start]
    line = before.count(b"\n") + 1
    column = error.start - (before.rfind(b"\n") + 1) + 1
    byte = error.object[error.start:error.start + 1]
    return (f"{path} is not UTF-8 text: byte 0x{byte.hex()} at line {line}, column {column} (byte offset "
            f"{error.start}) {error.reason}; convert the file once, e.g. `iconv -f latin1 -t utf-8 {path} > "
            f"fixed.txt`, and train on fixed.txt")


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids 0 .. vocab_size - 1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise BabyError(f"vocab_size {vocab_size} is too large")


def text_chunks(path, chunk_chars=CHUNK_CHARS):
    """Yield the file's text in pieces of about chunk_chars, each ending at a newline where one exists,
    so a tokenizer that merges across characters (BPE) never sees a word cut in two."""
    carry = ""
    with open(path, encoding="utf-8") as f:
        while True:
            block = f.read(chunk_chars)
            if not block:
                break
            text = carry + block
            cut = text.rfind("\n") + 1
            if cut == 0:
                carry = text
                continue
            carry = text[cut:]
            yield text[:cut]
    if carry:
        yield carry


def encode_to_file(text_path, tokenizer, tokens_path, chunk_chars=CHUNK_CHARS) -> int:
    """Encode a UTF-8 file chunk by chunk into tokens_path (atomically); return the number of tokens."""
    dtype = token_dtype(tokenizer.vocab_size)
    n_tokens = 0
    with atomic_file(tokens_path) as f:
        for chunk in text_chunks(text_path, chunk_chars):
            ids = np.asarray(tokenizer.encode(chunk))                     # (n,) int64
            f.write(ids.astype(dtype).tobytes())
            n_tokens += ids.size
    return n_tokens


@dataclasses.dataclass
class TokenData:
    """The encoded corpus (a read-only memmap) and its train / validation split."""
    tokens: np.ndarray          # (N,) uint8 or uint16
    n_train: int                # ids [0, n_train) train, [n_train, N) validate

    @classmethod
    def open(cls, tokens_path, vocab_size):
        tokens = np.memmap(tokens_path, dtype=token_dtype(vocab_size), mode="r")  # (N,)
        return cls(tokens, int(len(tokens) * TRAIN_FRACTION))

    @property
    def train(self):
        return self.tokens[:self.n_train]                                  # (N_train,)

    @property
    def val(self):
        return self.tokens[self.n_train:]                                  # (N_val,)

    def check_fits(self, n_ctx):
        """Both splits must hold at least one window of n_ctx inputs plus its shifted target. When they do not,
        the tokens file is removed as well: a run refused at the start leaves no artifact behind."""
        for name, split in (("training", self.train), ("validation", self.val)):
            if len(split) < n_ctx + 1:
                if isinstance(self.tokens, np.memmap) and self.tokens.filename:
                    pathlib.Path(self.tokens.filename).unlink(missing_ok=True)
                raise BabyError(f"the {name} split has {len(split)} tokens but one window needs n_ctx + 1 = "
                                f"{n_ctx + 1}; use more text (the split is 90/10) or a smaller `n_ctx`")


def sample_batch(split, batch_size, n_ctx, rng):
    """batch_size windows at random offsets of split -> inputs x (B, T) and next-token targets y (B, T)."""
    starts = rng.integers(0, len(split) - n_ctx, size=batch_size)          # (B,)
    offsets = starts[:, None] + np.arange(n_ctx + 1)                       # (B, T + 1)
    windows = np.asarray(split[offsets], dtype=np.int64)                   # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]                                 # (B, T), (B, T)


def fixed_batches(split, batch_size, n_ctx, n_batches, seed):
    """The same n_batches windows on every call (their own rng): evals compare like with like."""
    rng = seeds.stream(seed, seeds.Stream.EVAL_BATCHES)
    return [sample_batch(split, batch_size, n_ctx, rng) for _ in range(n_batches)]


def steps_per_epoch(n_train, batch_size, n_ctx) -> int:
    return max(1, math.ceil(n_train / (batch_size * n_ctx)))
