"""Our tokenizers <-> Hugging Face ``tokenizer.json`` (the file ``tokenizers`` and ``AutoTokenizer`` read).

Export (``to_tokenizer_json``), each chosen so that ``tokenizers`` gives exactly our ids:
    bpe    model BPE; pre-tokenizer: our pre-split (bpe.SPLIT_PATTERN) rewritten for Oniguruma with its classes
           as explicit ranges (``split_pattern_for_onig``), then ByteLevel without its own regex; decoder ByteLevel.
           Refused when two merges make the same bytes (tokenizer.json maps each token string to one id).
    char   model WordLevel over single characters; pre-tokenizer: split off every code point; decoder Fuse
           (join without spaces). A byte-level model cannot be used: a character is one id here, several bytes
           there. Text with an unknown character is an error in both.
    gpt2   model BPE; pre-tokenizer ByteLevel with GPT-2's regex; special tokens as added tokens.
Import (``from_tokenizer_json``) reads back those three layouts, which covers GPT-2's own tokenizer.json and
any byte-level BPE trained with ``tokenizers``' ByteLevel pre-tokenizer; anything else is refused naming what.
"""

import functools

from littlebaby.errors import BabyError
from littlebaby.tokenizers import BPETokenizer, CharTokenizer, GPT2Tokenizer, unicode_classes
from littlebaby.tokenizers.gpt2 import token_text

# bpe.SPLIT_PATTERN with each class a slot: {L} letters [^\W\d_], {D} digits \d, {S} spaces \s, {W} word \w
SPLIT_TEMPLATE = "'(?:[sdmt]|ll|ve|re)| ?[{L}]+| ?[{D}]{{1,3}}| ?(?:[^{S}{W}]|_)+|[{S}]+(?![^{S}])|[{S}]+"
PYTHON_CLASSES = {"L": r"[^\W\d_]", "D": r"\d", "S": r"\s", "W": r"\w"}
EVERY_CODE_POINT = r"[\x{0}-\x{10ffff}]"          # the char tokenizer's pre-split: one piece per character
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False}


@functools.lru_cache(maxsize=2)
def split_pattern(engine: str) -> str:
    """bpe.SPLIT_PATTERN with \\w, \\d, \\s replaced by the ranges Python's ``re`` gives them, written for
    ``engine`` "onig" (tokenizer.json) or "python" (the twin a test compares with SPLIT_PATTERN itself)."""
    spell = unicode_classes.onig_class if engine == "onig" else unicode_classes.python_class
    return SPLIT_TEMPLATE.format(**{slot: spell(unicode_classes.ranges_of_python_class(cls))
                                    for slot, cls in PYTHON_CLASSES.items()})


def to_tokenizer_json(tok) -> dict:
    """The tokenizer.json of one of our tokenizers; BabyError when it cannot be expressed exactly."""
    if isinstance(tok, CharTokenizer):
        model = {"type": "WordLevel", "vocab": {c: i for i, c in enumerate(tok.chars)}, "unk_token": "[UNK]"}
        pre = {"type": "Split", "pattern": {"Regex": EVERY_CODE_POINT}, "behavior": "Isolated", "invert": False}
        return tokenizer_json(model, pre, {"type": "Fuse"})
    if isinstance(tok, BPETokenizer):
        texts = [token_text(b) for b in tok.vocab_bytes]
        seen = {}
        for i, text in enumerate(texts):
            if text in seen:
                raise BabyError(f"this BPE tokenizer has two tokens for the same bytes (ids {seen[text]} and {i}, "
                                f"{tok.vocab_bytes[i]!r}); tokenizer.json maps each token to one id, so it cannot "
                                f"be exported exactly: retrain the tokenizer with another `vocab_size`")
            seen[text] = i
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split_pattern("onig")}, "behavior": "Isolated", "invert": False},
            {**BYTE_LEVEL, "use_regex": False}]}
        return tokenizer_json(bpe_model(texts, [(texts[a], texts[b]) for a, b in tok.merges]), pre,
                              {**BYTE_LEVEL, "use_regex": False})
    if isinstance(tok, GPT2Tokenizer):
        added = [{"id": i, "content": tok.tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for i in tok.special]
        # the special tokens are in the model's vocabulary too (as in GPT-2's), which keeps their ids
        return tokenizer_json(bpe_model(tok.tokens, [(tok.tokens[a], tok.tokens[b]) for a, b in tok.merges]),
                              {**BYTE_LEVEL, "use_regex": True}, {**BYTE_LEVEL, "use_regex": True}, added)
    raise BabyError(f"a {tok.kind} tokenizer cannot be exported to tokenizer.json")


def bpe_model(vocab, merges) -> dict:
    """A plain BPE model: no unknown token, no dropout, no word prefix or suffix."""
    vocab = vocab if isinstance(vocab, dict) else {text: i for i, text in enumerate(vocab)}
    return {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": [list(m) for m in merges]}


def tokenizer_json(model, pre_tokenizer, decoder, added_tokens=()) -> dict:
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": list(added_tokens),
            "normalizer": None, "pre_tokenizer": pre_tokenizer, "post_processor": None, "decoder": decoder,
            "model": model}


# --- import ------------------------------------------------------------------------------------------------------

def from_tokenizer_json(data, where) -> object:
    """One of our tokenizers from a parsed tokenizer.json; BabyError naming what is not supported."""
    try:
        return read_tokenizer_json(data, where)
    except (AttributeError, TypeError, KeyError, ValueError) as e:   # a value of the wrong JSON type somewhere
        raise BabyError(f"{where} is not a well-formed tokenizer.json ({type(e).__name__}: {e})") from None


def read_tokenizer_json(data, where) -> object:
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise BabyError(f"{where} is not a tokenizer.json: it has no 'model' object")
    model, pre = data["model"], data.get("pre_tokenizer")
    if data.get("normalizer") is not None:
        raise BabyError(f"{where} has a normalizer ({data['normalizer'].get('type')}); only tokenizers without one "
                        "(GPT-2's byte-level BPE) are supported")
    post = data.get("post_processor")
    if post is not None and post.get("type") != "ByteLevel":
        raise BabyError(f"{where} has a {post.get('type')} post-processor, which adds tokens to every text; only "
                        "GPT-2's byte-level BPE (post-processor ByteLevel or none) is supported")
    id_to_text, special = vocabulary(data, model, where)
    if model.get("type") == "WordLevel" and is_split(pre, EVERY_CODE_POINT):
        if special or not all(len(t) == 1 for t in id_to_text):
            raise BabyError(f"{where}: a per-character WordLevel vocabulary must hold single characters only")
        return CharTokenizer(id_to_text)
    if model.get("type") != "BPE":
        raise BabyError(f"{where} holds a {model.get('type')} model; only byte-level BPE (GPT-2's) is supported")
    for key, allowed in (("dropout", (None,)), ("continuing_subword_prefix", (None, "")),
                         ("end_of_word_suffix", (None, "")), ("byte_fallback", (None, False)),
                         ("ignore_merges", (None, False))):
        if model.get(key) not in allowed:
            raise BabyError(f"{where}: BPE option {key} = {model.get(key)!r} is not supported (GPT-2 does not use it)")
    merges = merge_ids(model.get("merges", []), {t: i for i, t in enumerate(id_to_text) if i not in special},
                       where)
    if is_byte_level(pre, use_regex=True):
        return GPT2Tokenizer(id_to_text, merges, sorted(special))
    if (isinstance(pre, dict) and pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 2
            and is_split(pre["pretokenizers"][0], split_pattern("onig"))
            and is_byte_level(pre["pretokenizers"][1], use_regex=False)):
        return our_bpe(id_to_text, merges, special, where)
    raise BabyError(f"{where}: its pre-tokenizer is not GPT-2's byte-level split (ByteLevel with use_regex, no "
                    f"prefix space) nor littlebaby's exported one; this tokenizer cannot be reproduced exactly")


def vocabulary(data, model, where) -> tuple[list[str], set[int]]:
    """(token text of each id 0..n-1, the ids of added tokens): the model's vocabulary plus the added tokens."""
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise BabyError(f"{where}: the model has no vocabulary")
    by_id = {}
    for text, i in vocab.items():
        if type(i) is not int or i in by_id:
            raise BabyError(f"{where}: vocabulary id {i!r} of {text!r} is not a distinct integer")
        by_id[i] = text
    special = set()
    for token in data.get("added_tokens") or []:
        i, text = token.get("id"), token.get("content")
        if type(i) is not int or not isinstance(text, str) or by_id.get(i, text) != text:
            raise BabyError(f"{where}: added token {token!r} disagrees with the vocabulary")
        if token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
            raise BabyError(f"{where}: added token {text!r} strips spaces or matches whole words only, which "
                            "is not supported")
        by_id[i] = text
        special.add(i)
    if sorted(by_id) != list(range(len(by_id))):
        raise BabyError(f"{where}: token ids are not 0 .. {len(by_id) - 1} without gaps")
    return [by_id[i] for i in range(len(by_id))], special


def merge_ids(merges, text_to_id, where) -> list[tuple[int, int]]:
    """Merges as "a b" strings or [a, b] pairs of token texts -> pairs of ids, in rank order."""
    pairs = []
    for rank, merge in enumerate(merges):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in text_to_id for p in pair)):
            raise BabyError(f"{where}: merge {rank} ({merge!r}) does not join two tokens of the vocabulary")
        pairs.append((text_to_id[pair[0]], text_to_id[pair[1]]))
    return pairs


def our_bpe(id_to_text, merges, special, where) -> BPETokenizer:
    """A tokenizer.json that `baby export` wrote from our BPE: ids 0..255 the bytes, merge i making id 256 + i."""
    canonical = (not special and len(id_to_text) == 256 + len(merges)
                 and all(a < 256 + i and b < 256 + i for i, (a, b) in enumerate(merges)))
    tok = BPETokenizer(merges) if canonical else None
    if tok is None or [token_text(b) for b in tok.vocab_bytes] != id_to_text:
        raise BabyError(f"{where}: its ids are not in littlebaby's BPE order (256 bytes, then one per merge)")
    return tok


def is_split(pre, pattern) -> bool:
    return (isinstance(pre, dict) and pre.get("type") == "Split" and pre.get("pattern") == {"Regex": pattern}
            and pre.get("behavior") == "Isolated" and not pre.get("invert"))


def is_byte_level(pre, use_regex) -> bool:
    """ByteLevel without a prefix space; ``use_regex`` as asked (True: GPT-2's split; a missing key means True)."""
    if isinstance(pre, dict) and pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 1:
        pre = pre["pretokenizers"][0]
    return (isinstance(pre, dict) and pre.get("type") == "ByteLevel" and not pre.get("add_prefix_space")
            and pre.get("use_regex", True) == use_regex)
