"""Byte-level byte-pair encoding (BPE): 256 byte tokens plus learned merges.

How it differs from the base: text is first cut into chunks by a regex (the pre-split), each chunk is turned
into its UTF-8 bytes (ids 0..255), and then learned merges glue adjacent ids into bigger tokens. Merge ``i``
turns the pair ``merges[i] = (a, b)`` into the new id ``256 + i`` whose bytes are ``bytes(a) + bytes(b)``.
Because every byte is a token, any text encodes; there is no unknown token.

The pre-split rule (``SPLIT_PATTERN``, Python ``re``; merges never cross a chunk boundary):

    '(?:[sdmt]|ll|ve|re)       an English contraction:          "'s", "'ll"
    | ?[^\\W\\d_]+               a run of letters, with at most one leading space:  " hello", "Bonjour"
    | ?\\d{1,3}                  one to three digits, with at most one leading space: " 202", "5"
    | ?(?:[^\\s\\w]|_)+           a run of other symbols (punctuation, emoji, "_"):  " --", "?!"
    |\\s+(?!\\S)                 whitespace not followed by a word (so a word keeps its own leading space)
    |\\s+                        any remaining whitespace

so "Hello, world!!  It's 2024" -> ["Hello", ",", " world", "!!", " ", " It", "'s", " 202", "4"]. Every
character falls in one of the classes (letter, digit, other, whitespace), so the chunks always join back to
the text.

Training (``learn_merges``) repeatedly merges the most frequent adjacent pair, breaking ties by the smaller
pair ``(a, b)``. It works on the distinct chunks, each weighted by how often it occurs, and after a merge
updates only the pair counts of the chunks that contained the merged pair. Example: chunks {"aaab": 1}
count (97, 97): 2, (97, 98): 1, so the first merge is (97, 97) -> 256 ("aa"), leaving [256, 97, 98].
"""

import heapq
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from littlebaby.config import from_dict
from littlebaby.errors import BabyError
from littlebaby.tokenizers.base import Tokenizer, require_str

SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
SPLIT_RE = re.compile(SPLIT_PATTERN)
CACHE_LIMIT = 200_000  # distinct chunks whose encoding is remembered between encode calls


@dataclass
class BPEFile:
    """The JSON layout of a saved BPE tokenizer."""

    kind: str  # always "bpe"
    version: int  # base.FORMAT_VERSION
    split_pattern: str  # the pre-split regex; must equal SPLIT_PATTERN
    merges: list[list[int]]  # merges[i] = [a, b]: ids a and b glued into id 256 + i
    tokens: dict  # {"256": " t", ...}: the learned tokens as text, bytes that are not UTF-8 escaped as \xNN


def split_text(text: str) -> list[str]:
    """Cut text into the chunks that merges may not cross. "It's 42!" -> ["It", "'s", " 42", "!"]."""
    return SPLIT_RE.findall(text)


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each non-overlapping occurrence of ``pair``, left to right. [97, 97, 97], (97, 97) -> [256, 97]."""
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def learn_merges(words: list[list[int]], weights: list[int], n_merges: int) -> list[tuple[int, int]]:
    """Learn up to ``n_merges`` merges from distinct chunks ``words`` (byte ids) occurring ``weights`` times.

    Pair counts live in a dict and a max-heap of (-count, pair) entries; an entry is stale (skipped when
    popped) once its count no longer matches the dict, so a changed count is just pushed again. Stops early
    when no adjacent pair is left.
    """
    counts: Counter = Counter()  # pair -> weighted number of occurrences
    where: dict[tuple[int, int], set[int]] = {}  # pair -> indices of words that contain (or once contained) it
    for w, (word, weight) in enumerate(zip(words, weights)):
        for pair in zip(word, word[1:]):
            counts[pair] += weight
            where.setdefault(pair, set()).add(w)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg_count or neg_count == 0:
            continue  # stale entry
        new_id = 256 + len(merges)
        merges.append(pair)
        touched = set()
        for w in where.pop(pair):
            old, weight = words[w], weights[w]
            new = merge_pair(old, pair, new_id)
            if len(new) == len(old):
                continue  # this word lost the pair to an earlier merge
            for p in zip(old, old[1:]):
                counts[p] -= weight
                touched.add(p)
            for p in zip(new, new[1:]):
                counts[p] += weight
                touched.add(p)
                where.setdefault(p, set()).add(w)
            words[w] = new
        for p in touched:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
            else:
                del counts[p]
    return merges


def readable(token: bytes) -> str:
    """A token's bytes as text for people: b" th" -> " th", b"\\xe2\\x82" -> "\\\\xe2\\\\x82"."""
    return token.decode("utf-8", errors="backslashreplace")


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, merges: list[tuple[int, int]]):
        vocab = [bytes([b]) for b in range(256)]
        for a, b in merges:
            vocab.append(vocab[a] + vocab[b])
        super().__init__(vocab)
        self.merges = [tuple(m) for m in merges]  # merges[i] = (a, b) -> id 256 + i
        self.ranks = {pair: 256 + i for i, pair in enumerate(self.merges)}  # pair -> merged id (= priority)
        self._chunk_ids: dict[str, list[int]] = {}  # the encode cache: chunk text -> its ids

    @classmethod
    def train(cls, text: str, vocab_size: int = 512) -> "BPETokenizer":
        """Learn ``vocab_size - 256`` merges (fewer if the text runs out of pairs) from ``text``."""
        require_str(text, "training text")
        if not text:
            raise BabyError("training text is empty; BPE needs text to learn merges from")
        if type(vocab_size) is not int or vocab_size < 256:
            raise BabyError(f"BPE vocab_size must be an int >= 256 (256 bytes + merges), got {vocab_size!r}")
        chunk_counts = Counter(split_text(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        return cls(learn_merges(words, list(chunk_counts.values()), vocab_size - 256))

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids: pre-split, then each distinct chunk is merged once and its ids reused (cached)."""
        require_str(text)
        ids: list[int] = []
        cache = self._chunk_ids
        for chunk in split_text(text):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = self._encode_chunk(chunk.encode("utf-8"))
                if len(cache) < CACHE_LIMIT:
                    cache[chunk] = chunk_ids
            ids.extend(chunk_ids)
        return np.array(ids, dtype=np.int64)  # (N,)

    def _encode_chunk(self, data: bytes) -> list[int]:
        """Merge the earliest-learned pair present until none is left. b"aaab" with (97,97)->256 -> [256, 97, 98]."""
        ids = list(data)
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, np.inf))
            if pair not in self.ranks:
                break
            ids = merge_pair(ids, pair, self.ranks[pair])
        return ids

    def encode_simple(self, text: str) -> np.ndarray:
        """The plain twin of ``encode``: no cache, every merge applied in training order to every chunk."""
        require_str(text)
        ids: list[int] = []
        for chunk in split_text(text):
            chunk_ids = list(chunk.encode("utf-8"))
            for i, pair in enumerate(self.merges):
                chunk_ids = merge_pair(chunk_ids, pair, 256 + i)
            ids.extend(chunk_ids)
        return np.array(ids, dtype=np.int64)  # (N,)

    def _payload(self) -> dict:
        return {
            "split_pattern": SPLIT_PATTERN,
            "merges": [list(pair) for pair in self.merges],
            "tokens": {str(i): readable(self.vocab_bytes[i]) for i in range(256, self.vocab_size)},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "BPETokenizer":
        file = from_dict(BPEFile, data, "bpe tokenizer file")
        if file.split_pattern != SPLIT_PATTERN:
            raise BabyError(
                "bpe tokenizer file has a different split_pattern than this code uses; "
                "retrain the tokenizer with this version of littlebaby"
            )
        seen = set()
        for i, merge in enumerate(file.merges):
            if len(merge) != 2 or not all(0 <= t < 256 + i for t in merge):
                raise BabyError(
                    f"bpe tokenizer file: merges[{i}] = {merge!r} must be two ids below {256 + i} "
                    "(bytes or earlier merges); the file is corrupted, retrain or restore it"
                )
            if tuple(merge) in seen:
                raise BabyError(f"bpe tokenizer file: merges[{i}] = {merge!r} repeats an earlier merge")
            seen.add(tuple(merge))
        tok = cls([tuple(m) for m in file.merges])
        if file.tokens != tok._payload()["tokens"]:
            raise BabyError(
                "bpe tokenizer file: the 'tokens' listing does not match the merges (was it edited?); "
                "the merges are authoritative: restore the file or retrain"
            )
        return tok
