"""Character tokenizer: one token per Unicode character seen in the training text.

How it differs from the base: the vocabulary is the sorted set of characters of the training text, so
``vocab_bytes[i]`` is ``chars[i].encode("utf-8")``. Text with a character outside the vocabulary cannot be
encoded (there is no unknown token), and ``extend`` grows the vocabulary for finetuning by appending new
characters after the old ones so every old id keeps its meaning.

Example: trained on "hello" -> chars ['e', 'h', 'l', 'o'], encode("hole") -> [1, 3, 2, 0].
"""

from dataclasses import dataclass

import numpy as np

from littlebaby.config import from_dict
from littlebaby.errors import BabyError
from littlebaby.tokenizers.base import Tokenizer, require_str

MAX_LISTED = 10  # how many unknown characters an error message names


@dataclass
class CharFile:
    """The JSON layout of a saved character tokenizer."""

    kind: str  # always "char"
    version: int  # base.FORMAT_VERSION
    chars: list[str]  # chars[i] is the character of token id i


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: list[str]):
        super().__init__([c.encode("utf-8") for c in chars])
        self.chars = list(chars)  # chars[i] is the character of id i
        codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)  # (V,)
        # encode looks characters up by binary search over the sorted code points; after extend the ids are
        # no longer in code-point order, so keep the permutation from sorted position back to id.
        self._sorted_order = np.argsort(codepoints, kind="stable")  # (V,)
        self._sorted_codepoints = codepoints[self._sorted_order]  # (V,)

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        require_str(text, "training text")
        if not text:
            raise BabyError("training text is empty; a character tokenizer needs at least one character")
        return cls(sorted(set(text)))

    def extend(self, new_text: str) -> "CharTokenizer":
        """A tokenizer with the characters of ``new_text`` not yet known appended (sorted) after the old ones."""
        require_str(new_text, "text to extend the vocabulary with")
        known = set(self.chars)
        return CharTokenizer(self.chars + sorted(set(new_text) - known))

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids, one per character. Raises BabyError naming any character not in the vocabulary."""
        require_str(text)
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)  # (N,)
        position = np.searchsorted(self._sorted_codepoints, codepoints)  # (N,)
        position = np.minimum(position, self.vocab_size - 1)  # (N,) past-the-end -> a slot that will not match
        known = self._sorted_codepoints[position] == codepoints  # (N,)
        if not known.all():
            self._raise_unknown(codepoints[~known])
        return self._sorted_order[position].astype(np.int64)  # (N,)

    def encode_simple(self, text: str) -> np.ndarray:
        """The plain twin of ``encode``: a dict lookup per character (tests check both agree)."""
        require_str(text)
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = [c for c in text if c not in index]
        if unknown:
            self._raise_unknown(np.array([ord(c) for c in unknown], dtype=np.int64))
        return np.array([index[c] for c in text], dtype=np.int64)  # (N,)

    def _raise_unknown(self, codepoints: np.ndarray) -> None:
        missing = [chr(int(c)) for c in np.unique(codepoints)]
        listed = ", ".join(repr(c) for c in missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise BabyError(
            f"text has {len(missing)} character(s) not in the vocabulary: {listed}{more}; the model was trained "
            "on a different alphabet. Remove them, or extend the tokenizer (tok.extend(text)) and finetune"
        )

    def _payload(self) -> dict:
        return {"chars": list(self.chars)}

    @classmethod
    def from_dict(cls, data: dict) -> "CharTokenizer":
        file = from_dict(CharFile, data, "char tokenizer file")
        chars = file.chars
        if not chars:
            raise BabyError("char tokenizer file has an empty 'chars' list; retrain the tokenizer")
        for i, c in enumerate(chars):
            if len(c) != 1:
                raise BabyError(f"char tokenizer file: chars[{i}] = {c!r} is not a single character")
            require_str(c, f"char tokenizer file: chars[{i}]")
        seen = set()
        for c in chars:
            if c in seen:
                raise BabyError(f"char tokenizer file lists {c!r} twice; each character must appear once")
            seen.add(c)
        return cls(chars)
