"""GPT-2's byte-level BPE, as Hugging Face ``tokenizers`` stores it: imported by ``baby import-hf``, never trained.

How it differs from our own BPE (bpe.py), which it otherwise resembles:
- the pre-split is GPT-2's, ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``
  (letters and numbers by Unicode category, no limit on digits);
- ids are in any order: the 256 byte tokens need not be ids 0..255, a merge's token is wherever the vocabulary
  put it, and merges are ranked by their position in the merge list;
- special tokens (``<|endoftext|>``) are matched in the text first and never merged with their neighbours;
- a merge is applied one occurrence at a time, the lowest-ranked pair present and the leftmost of equal ones,
  which is what ``tokenizers`` does, and equals our "all occurrences of the best pair" whenever merges are in
  training order.

On disk tokens are written as GPT-2 writes them: each byte as one printable character (``byte_to_char``), so
" the" is "Ġthe"; a special token is its own text.
"""

import functools
import re
from dataclasses import dataclass

import numpy as np

from littlebaby.config import from_dict
from littlebaby.errors import BabyError
from littlebaby.tokenizers import unicode_classes
from littlebaby.tokenizers.base import Tokenizer, require_str

CACHE_LIMIT = 200_000  # distinct chunks whose encoding is remembered between encode calls


@functools.lru_cache(maxsize=1)
def byte_to_char() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte: the bytes that are printable Latin-1 ('!'..'~', '¡'..'¬',
    '®'..'ÿ') stand for themselves, the other 68 take U+0100, U+0101, ... in byte order. 0x20 -> 'Ġ', 0x41 -> 'A'."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(0x100 + n) for n, b in enumerate(others)}}


@functools.lru_cache(maxsize=1)
def char_to_byte_table() -> dict[int, str]:
    """A ``str.translate`` table from each stand-in to its byte as a Latin-1 character; any other character
    below U+0144 becomes U+FFFF, which (like everything above U+00FF) Latin-1 cannot encode."""
    table = {c: "\uffff" for c in range(0x144)}
    table.update({ord(c): chr(b) for b, c in byte_to_char().items()})
    return table


def token_text(data: bytes) -> str:
    """Bytes -> GPT-2's token string: b" hi" -> "Ġhi"."""
    table = byte_to_char()
    return "".join(table[b] for b in data)


def token_bytes(text: str) -> bytes | None:
    """GPT-2's token string -> bytes, or None when a character is not one of the 256 stand-ins: "Ġhi" -> b" hi"."""
    try:
        return text.translate(char_to_byte_table()).encode("latin-1")
    except UnicodeEncodeError:
        return None


@functools.lru_cache(maxsize=1)
def split_regex() -> re.Pattern:
    """GPT-2's pre-split in Python ``re``: \\p{L}, \\p{N} and \\s spelled out as ranges (see unicode_classes).
    Letters and numbers come from Python's Unicode database, which may be older than the one ``tokenizers``
    uses: a character assigned in between splits as "other" here."""
    L = unicode_classes.python_class(unicode_classes.ranges_of_letters())
    N = unicode_classes.python_class(unicode_classes.ranges_of_numbers())
    S = unicode_classes.python_class(unicode_classes.WHITE_SPACE)
    return re.compile(f"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")


@dataclass
class GPT2File:
    """The JSON layout of a saved GPT-2 tokenizer."""

    kind: str  # always "gpt2"
    version: int  # base.FORMAT_VERSION
    tokens: list  # tokens[i]: id i in GPT-2's byte characters ("Ġthe"), or a special token's text
    merges: list  # in rank order: merges[r] = [a, b] glues ids a and b into the id of their bytes
    special: list  # the ids of the special tokens
    # (plain lists: 50,000 entries are checked below in one pass, not element by element by config.from_dict)


class GPT2Tokenizer(Tokenizer):
    kind = "gpt2"

    def __init__(self, tokens: list[str], merges: list[tuple[int, int]], special: list[int]):
        """``tokens`` in GPT-2's byte characters (special ones as their text), ``merges`` as id pairs in rank
        order, ``special`` the ids of special tokens. Raises BabyError naming the first thing that is off."""
        special_set = set(special)
        if len(special_set) != len(special) or not all(0 <= i < len(tokens) for i in special):
            raise BabyError("gpt2 tokenizer: the special token ids must be distinct ids of the vocabulary")
        vocab = []
        for i, text in enumerate(tokens):
            data = text.encode("utf-8") if i in special_set else token_bytes(text)
            if data is None or not data:
                raise BabyError(f"gpt2 tokenizer: token {i} ({text!r}) is not made of GPT-2's byte characters")
            vocab.append(data)
        super().__init__(vocab)
        self.tokens, self.special = list(tokens), list(special)
        normal = {vocab[i]: i for i in range(len(vocab)) if i not in special_set}
        if len(normal) != len(vocab) - len(special_set):
            raise BabyError("gpt2 tokenizer: two tokens stand for the same bytes")
        missing = [b for b in range(256) if bytes([b]) not in normal]
        if missing:
            raise BabyError(f"gpt2 tokenizer lacks tokens for {len(missing)} of the 256 bytes (first {missing[0]}); "
                            "byte-level BPE needs them all (train with initial_alphabet=ByteLevel.alphabet())")
        self.byte_ids = [normal[bytes([b])] for b in range(256)]   # byte value -> its token id
        self.merges = [tuple(m) for m in merges]
        self.ranks = {}                                            # a pair of ids a, b -> (rank, merged id)
        for rank, (a, b) in enumerate(self.merges):
            if not (0 <= a < len(vocab) and 0 <= b < len(vocab)) or a in special_set or b in special_set:
                raise BabyError(f"gpt2 tokenizer: merge {rank} {[a, b]} names ids that are not normal tokens")
            merged = normal.get(vocab[a] + vocab[b])
            if merged is None:
                raise BabyError(f"gpt2 tokenizer: merge {rank} makes {tokens[a] + tokens[b]!r}, which is not a token")
            self.ranks.setdefault((a, b), (rank, merged))
        by_length = sorted((self.tokens[i] for i in self.special), key=len, reverse=True)  # longest first
        self._special_re = re.compile("|".join(map(re.escape, by_length))) if by_length else None
        self._special_ids = {self.tokens[i]: i for i in self.special}
        self._chunk_ids: dict[str, list[int]] = {}

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids: special tokens first, then GPT-2's pre-split of the text between them, then BPE."""
        require_str(text)
        ids: list[int] = []
        start = 0
        for match in self._special_re.finditer(text) if self._special_re else ():
            ids += self._encode_ordinary(text[start:match.start()])
            ids.append(self._special_ids[match.group()])
            start = match.end()
        ids += self._encode_ordinary(text[start:])
        return np.array(ids, dtype=np.int64)  # (N,)

    def _encode_ordinary(self, text: str) -> list[int]:
        ids, cache = [], self._chunk_ids
        for chunk in split_regex().findall(text):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = self._encode_chunk(chunk.encode("utf-8"))
                if len(cache) < CACHE_LIMIT:
                    cache[chunk] = chunk_ids
            ids += chunk_ids
        return ids

    def _encode_chunk(self, data: bytes) -> list[int]:
        """Merge the lowest-ranked adjacent pair, the leftmost of equals, one occurrence at a time."""
        ids = [self.byte_ids[b] for b in data]
        no_merge = (len(self.merges), -1)
        while len(ids) >= 2:
            ranked = [self.ranks.get(pair, no_merge) for pair in zip(ids, ids[1:])]
            best = min(range(len(ranked)), key=lambda i: ranked[i][0])   # min keeps the leftmost of equals
            if ranked[best] is no_merge:
                break
            ids[best:best + 2] = [ranked[best][1]]
        return ids

    def _payload(self) -> dict:
        return {"tokens": self.tokens, "merges": [list(m) for m in self.merges], "special": self.special}

    @classmethod
    def from_dict(cls, data: dict) -> "GPT2Tokenizer":
        file = from_dict(GPT2File, data, "gpt2 tokenizer file")
        if not all(isinstance(t, str) for t in file.tokens):
            raise BabyError("gpt2 tokenizer file: every token must be a string")
        if not all(type(i) is int for i in file.special):
            raise BabyError("gpt2 tokenizer file: special must list token ids")
        if not all(isinstance(m, list) and len(m) == 2 and type(m[0]) is int and type(m[1]) is int
                   for m in file.merges):
            raise BabyError("gpt2 tokenizer file: every merge must be a pair of token ids")
        return cls(file.tokens, [tuple(m) for m in file.merges], file.special)
