"""Quality a person can read: compression against gzip, bz2 and xz, real words, speaker lines, one 0-100 score.

Pure functions of text and numbers, so the same run always gets the same figures (docs/QUALITY.md has the
formula and what each figure can and cannot tell):

    compressor_bpc(text)              bits per character of gzip -9, bz2 -9 and xz -9 on the text
    words(text)                       the words: runs of letters, with inner apostrophes ("o'er", "we'll")
    real_word_share(sample, known)    the share of the sample's words found in the training text
    speaker_share(text)               the share of non-blank lines that look like a speaker's name, "ROMEO:"
    quality_score(...)                the 0-100 score derived from the three figures

The word and speaker figures are rough signals: a sample of real words can still be nonsense, and a model can
get the speaker lines right with no idea of what the speakers say.
"""

import bz2
import gzip
import lzma
import re

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")                     # letters, "we'll" and "o'er" whole
SPEAKER = re.compile(r"[A-Z][A-Za-z'.-]*(?: [A-Z][A-Za-z'.-]*){0,3}:")  # "ROMEO:", "First Citizen:", "KING HENRY V:"
WEIGHTS = {"compression": 0.5, "words": 0.3, "speakers": 0.2}     # of quality_score; see docs/QUALITY.md


def compressor_bpc(text: str) -> dict:
    """Bits per character of the UTF-8 text compressed by gzip -9, bz2 -9 and xz -9, headers included: the
    size of the file each tool would write, times 8, over the number of characters.

    >>> compressor_bpc("ab" * 1000)["gzip"] < 0.3
    True
    """
    data, chars = text.encode("utf-8"), max(len(text), 1)
    sizes = {"gzip": len(gzip.compress(data, compresslevel=9, mtime=0)),
             "bz2": len(bz2.compress(data, compresslevel=9)),
             "xz": len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9))}
    return {name: 8 * size / chars for name, size in sizes.items()}


def words(text: str) -> list[str]:
    """The words of text, lowercased.

    >>> words("O Romeo, we'll go-2 o'er!")
    ['o', 'romeo', "we'll", 'go', "o'er"]
    """
    return [w.lower() for w in WORD.findall(text)]


def real_word_share(sample: str, known: set) -> float | None:
    """The share of the sample's words (``words``) that are in ``known`` (the training text's words); None when
    the sample has no words.

    >>> real_word_share("the cat sat on the mta", {"the", "cat", "on"})
    0.6666666666666666
    """
    found = words(sample)
    return sum(w in known for w in found) / len(found) if found else None


def speaker_share(text: str) -> float:
    """The share of the non-blank lines that look like a speaker's name: up to four capitalised words and a
    colon, alone on the line; 0.0 for text with no non-blank line.

    >>> speaker_share("ROMEO:\\nI will.\\n\\nFirst Citizen:\\nNay: not so.\\n")
    0.5
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return sum(bool(SPEAKER.fullmatch(line)) for line in lines) / len(lines) if lines else 0.0


def compression_term(model_bpc: float, gzip_bpc: float) -> float:
    """0 when the model compresses no better than gzip, 1 when it needs half gzip's bits or fewer, linear in
    between: clamp(2 (1 - model / gzip), 0, 1)."""
    return min(max(2 * (1 - model_bpc / gzip_bpc), 0.0), 1.0)


def speakers_term(sample_share: float | None, corpus_share: float) -> float | None:
    """How close the sample's share of speaker lines is to the training text's: the smaller over the larger,
    1 when equal, 0 when the sample has none; None (n/a) when the training text has none or there is no
    sample (None)."""
    if corpus_share == 0 or sample_share is None:
        return None
    return min(sample_share, corpus_share) / max(sample_share, corpus_share)


def quality_score(model_bpc: float, gzip_bpc: float, word_share: float | None, sample_speakers: float | None,
                  corpus_speakers: float) -> float:
    """100 x the weighted mean of the terms that apply (WEIGHTS; a term that is n/a drops out and the others'
    weights are scaled up to sum to 1), rounded to one decimal.

    >>> quality_score(2.0, 3.0, 0.8, 0.2, 0.25)   # 100 (0.5 * 2/3 + 0.3 * 0.8 + 0.2 * 0.8) = 73.3
    73.3
    """
    terms = {"compression": compression_term(model_bpc, gzip_bpc), "words": word_share,
             "speakers": speakers_term(sample_speakers, corpus_speakers)}
    present = {name: value for name, value in terms.items() if value is not None}
    total = sum(WEIGHTS[name] for name in present)
    return round(100 * sum(WEIGHTS[name] * value for name, value in present.items()) / total, 1)


def figures(model_bpc: float, val_text: str, sample: str, train_text: str) -> dict:
    """Every quality figure of a run: the model's bits per character on ``val_text`` beside the compressors'
    on the same text, the sample's real words and speaker lines against ``train_text``'s, and the score."""
    compressed = compressor_bpc(val_text)
    word_share = real_word_share(sample, set(words(train_text)))
    sample_speakers = speaker_share(sample) if sample.strip() else None      # no sample: n/a, not 0
    corpus_speakers = speaker_share(train_text)
    return {
        "val_chars": len(val_text), "model_bpc": model_bpc, "compressor_bpc": compressed,
        "vs_gzip": compressed["gzip"] / model_bpc, "real_word_share": word_share,
        "speaker_share": sample_speakers if corpus_speakers else None, "corpus_speaker_share": corpus_speakers,
        "score": quality_score(model_bpc, compressed["gzip"], word_share, sample_speakers, corpus_speakers),
    }


def describe(q: dict) -> list[str]:
    """The figures as `baby info` prints them."""
    ratio = q["vs_gzip"]
    better = f"{ratio:.2f}x better than gzip" if ratio >= 1 else f"{1 / ratio:.2f}x worse than gzip"
    c = q["compressor_bpc"]
    words_line = "n/a (no words in the sample)" if q["real_word_share"] is None else f"{q['real_word_share']:.0%}"
    speakers = ("n/a (the training text has no speaker lines)" if not q["corpus_speaker_share"] else
                "n/a (no sample)" if q["speaker_share"] is None else
                f"{q['speaker_share']:.0%} of the sample's lines (the training text: {q['corpus_speaker_share']:.0%})")
    return [f"compression: {q['model_bpc']:.3f} bits/char on {q['val_chars']:,} characters of validation text; "
            f"gzip -9 {c['gzip']:.3f}, bz2 {c['bz2']:.3f}, xz -9 {c['xz']:.3f}: the baby compresses it {better}",
            f"real words (rough signal): {words_line} of the sample's words occur in the training text",
            f"speaker lines (rough signal): {speakers}",
            f"quality score: {q['score']:.1f} / 100 (docs/QUALITY.md)"]
