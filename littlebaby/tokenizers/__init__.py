"""Tokenizers: text <-> token ids.

Two kinds share one base class (``Tokenizer``, in base.py):

- ``CharTokenizer`` (char.py): one token per character of the training text. Tiny vocabulary, no surprises,
  but it cannot encode a character it never saw.
- ``BPETokenizer`` (bpe.py): byte-level byte-pair encoding. 256 byte tokens plus learned merges; encodes any
  text, shorter sequences, bigger vocabulary.
- ``GPT2Tokenizer`` (gpt2.py): GPT-2's byte-level BPE as Hugging Face stores it, read by ``baby import-hf``;
  it is imported, never trained here.

    tok = train_tokenizer("char", text)            # or train_tokenizer("bpe", text, vocab_size=512)
    ids = tok.encode(text); text = tok.decode(ids)
    tok.save("tokenizer.json"); tok = load_tokenizer("tokenizer.json")
"""

from littlebaby.errors import BabyError
from littlebaby.files import read_json
from littlebaby.tokenizers.base import FORMAT_VERSION, StreamDecoder, Tokenizer
from littlebaby.tokenizers.bpe import BPETokenizer
from littlebaby.tokenizers.char import CharTokenizer
from littlebaby.tokenizers.gpt2 import GPT2Tokenizer

KINDS = {"char": CharTokenizer, "bpe": BPETokenizer, "gpt2": GPT2Tokenizer}
TRAINABLE = ("char", "bpe")


def train_tokenizer(kind: str, text: str, vocab_size: int | None = None) -> Tokenizer:
    """Learn a tokenizer of ``kind`` ("char" or "bpe") from ``text``.

    ``vocab_size`` is for "bpe" only (256 byte tokens + merges, default 512); a char vocabulary is the set
    of characters in the text.
    """
    if kind == "char":
        if vocab_size is not None:
            raise BabyError("a char tokenizer's vocab_size is the number of distinct characters; drop vocab_size")
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer.train(text, 512 if vocab_size is None else vocab_size)
    if kind == "gpt2":
        raise BabyError("a gpt2 tokenizer comes with a model imported by `baby import-hf`; it is not trained here: "
                        "use `tokenizer='char'` or `tokenizer='bpe'`")
    raise BabyError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(repr(k) for k in TRAINABLE)}")


def tokenizer_from_dict(data) -> Tokenizer:
    """Rebuild a tokenizer from ``to_dict`` output, checking every field (BabyError when anything is off)."""
    if not isinstance(data, dict):
        raise BabyError(f"a tokenizer file must hold a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise BabyError(f"tokenizer 'kind' must be one of {', '.join(repr(k) for k in KINDS)}, got {kind!r}")
    version = data.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise BabyError(
            f"tokenizer file version {version!r} is not supported (this code reads version {FORMAT_VERSION}); "
            "retrain the tokenizer or use the matching version of littlebaby"
        )
    return KINDS[kind].from_dict(data)


def load_tokenizer(path) -> Tokenizer:
    """Read a tokenizer saved with ``tok.save(path)``; any malformed file raises BabyError."""
    return tokenizer_from_dict(read_json(path, "tokenizer file"))


__all__ = [
    "Tokenizer",
    "CharTokenizer",
    "BPETokenizer",
    "GPT2Tokenizer",
    "StreamDecoder",
    "train_tokenizer",
    "load_tokenizer",
    "tokenizer_from_dict",
]
