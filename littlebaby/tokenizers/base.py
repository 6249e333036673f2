"""The shared plumbing of every tokenizer: ids <-> bytes, streaming decode, JSON save and load.

A tokenizer here is a list of byte strings, one per token id (``vocab_bytes[i]`` is what id ``i`` stands for),
plus a rule for cutting text into those ids. Decoding is the same for every kind: join the bytes of the ids
and read them as UTF-8. Only ``encode`` and the file format differ, so a subclass supplies:

- ``kind``                    the name written in the file ("char" or "bpe"),
- ``encode(text)``            text -> 1-D int64 array of ids,
- ``_payload()``              the kind-specific keys of ``to_dict``,
- ``from_dict(data)``         the inverse, validating every field and raising ``BabyError``.
"""

import codecs

import numpy as np

from littlebaby.errors import BabyError
from littlebaby.files import atomic_write_json

FORMAT_VERSION = 1  # bump when the JSON layout changes; load refuses versions it does not know


class Tokenizer:
    """Base class: a vocabulary of byte strings, decode, streaming decode and save."""

    kind: str = ""

    def __init__(self, vocab_bytes: list[bytes]):
        self.vocab_bytes = vocab_bytes  # vocab_bytes[i] = the UTF-8 bytes token id i decodes to

    @property
    def vocab_size(self) -> int:
        return len(self.vocab_bytes)

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids) -> str:
        """Token ids (list or array of ints) -> text. Bytes that are not valid UTF-8 become U+FFFD.

        Example (byte-level BPE): ids [72, 105] -> bytes b"Hi" -> "Hi".
        """
        id_list = self.check_ids(ids)
        data = b"".join([self.vocab_bytes[i] for i in id_list])
        return data.decode("utf-8", errors="replace")

    def check_ids(self, ids) -> list[int]:
        """Refuse anything that is not a flat sequence of ids in [0, vocab_size); return them as a list."""
        try:
            array = np.asarray(ids)  # (N,)
        except (OverflowError, ValueError, TypeError) as e:
            raise BabyError(f"token ids must be a flat list or array of integers ({e})") from None
        if array.ndim != 1:
            raise BabyError(f"token ids must be 1-D, got an array of shape {array.shape}; pass one sequence")
        if array.size == 0:
            return []
        if array.dtype.kind not in "iu":
            raise BabyError(f"token ids must be integers, got dtype {array.dtype}")
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise BabyError(
                f"token id {bad} is outside this {self.kind} tokenizer's vocabulary of {self.vocab_size}; "
                "were these ids made by a different tokenizer?"
            )
        return array.tolist()

    def stream_decoder(self) -> "StreamDecoder":
        """A decoder fed one id at a time, for printing text while it is being generated."""
        return StreamDecoder(self)

    # ---- files --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """A plain JSON-able dict: ``kind``, ``version`` and the kind's own keys."""
        return {"kind": self.kind, "version": FORMAT_VERSION, **self._payload()}

    def _payload(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        raise NotImplementedError

    def save(self, path) -> None:
        """Write the tokenizer as UTF-8 JSON, atomically (littlebaby.files)."""
        atomic_write_json(path, self.to_dict(), indent=1, ensure_ascii=False)


class StreamDecoder:
    """Turns ids into text one at a time without ever emitting half a character.

    A BPE token may end in the middle of a multi-byte UTF-8 character (e.g. the first two of the three bytes
    of "€"). ``push`` holds such bytes back and returns "" until the character is complete; ``flush`` returns
    whatever is left (a U+FFFD if the sequence really ended mid-character). The concatenation of every
    ``push`` and the final ``flush`` equals ``tokenizer.decode(ids)``.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Feed one id; return the text completed by it ("" while a character is still incomplete)."""
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise BabyError(f"stream_decoder.push takes one integer token id, got {token_id!r}")
        (checked,) = self.tokenizer.check_ids([int(token_id)])
        return self._utf8.decode(self.tokenizer.vocab_bytes[checked])

    def flush(self) -> str:
        """End of the sequence: return the held-back bytes (U+FFFD for an unfinished character)."""
        rest = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return rest


def require_str(text, what: str = "text") -> str:
    """Refuse non-strings and strings that cannot be UTF-8 (lone surrogates such as '\\ud800')."""
    if not isinstance(text, str):
        raise BabyError(f"{what} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BabyError(
            f"{what} holds {text[e.start]!r} at position {e.start}, a lone surrogate that is not a character; "
            "read files with encoding='utf-8' (errors='replace') to get valid text"
        ) from None
    return text
