"""Character classes spelled out as code point ranges, so that two regex engines read a pre-split the same way.

Python's ``re`` and Oniguruma (the engine of Hugging Face ``tokenizers``) disagree on what ``\\w``, ``\\d`` and
``\\s`` mean (Python counts U+001C..U+001F as spaces and '²' as a word character; Oniguruma counts combining marks
as word characters) and each uses its own version of the Unicode database. A class written as explicit ranges,
``[\\x{41}-\\x{5a}\\x{61}-\\x{7a}...]``, means the same code points to both, whatever their Unicode versions.

    ranges_of_python_class(r"\\d")[:2]  -> [(0x30, 0x39), (0x660, 0x669)]
    onig_class([(0x41, 0x5a)])          -> "\\x{41}-\\x{5a}"      (to put between [ and ])
"""

import functools
import re
import unicodedata

import numpy as np

SURROGATES = (0xD800, 0xDFFF)     # not characters: no str of valid text holds them
# Unicode's White_Space property, what Oniguruma's \s matches (Python's \s adds U+001C..U+001F)
WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
               (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]


@functools.lru_cache(maxsize=1)
def every_character() -> str:
    """All 1,112,064 code points that are not surrogates, in order (4.4 MB, built once)."""
    return "".join(map(chr, range(SURROGATES[0]))) + "".join(map(chr, range(SURROGATES[1] + 1, 0x110000)))


def ranges_of(chars: str) -> tuple[tuple[int, int], ...]:
    """Inclusive code point ranges of ``chars`` (sorted, distinct): "abcx" -> ((0x61, 0x63), (0x78, 0x78))."""
    points = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)  # (N,)
    breaks = np.flatnonzero(np.diff(points) != 1)                   # (R - 1,) where a run ends
    starts = np.concatenate([points[:1], points[breaks + 1]])       # (R,)
    ends = np.concatenate([points[breaks], points[-1:]])            # (R,)
    return tuple(zip(starts.tolist(), ends.tolist()))


@functools.lru_cache(maxsize=16)
def ranges_of_python_class(char_class: str) -> tuple[tuple[int, int], ...]:
    """Ranges of the characters that the Python ``re`` class ``char_class`` (one character, such as ``\\d`` or
    ``[^\\W\\d_]``) matches."""
    return ranges_of("".join(re.findall(f"(?:{char_class})+", every_character())))


@functools.lru_cache(maxsize=2)
def ranges_of_letters() -> tuple[tuple[int, int], ...]:
    """What ``\\p{L}`` means, in Python's Unicode database: general category L* (exactly ``str.isalpha``)."""
    return ranges_of("".join(filter(str.isalpha, every_character())))


@functools.lru_cache(maxsize=2)
def ranges_of_numbers() -> tuple[tuple[int, int], ...]:
    """What ``\\p{N}`` means: general category N*. Every such character is ``str.isnumeric`` (a test checks), which
    is a fast first filter; CJK ideographs with a numeric value are numeric too but letters (Lo), hence the second."""
    numeric = filter(str.isnumeric, every_character())
    return ranges_of("".join(c for c in numeric if unicodedata.category(c)[0] == "N"))


def onig_class(ranges) -> str:
    """The body of an Oniguruma character class: ``\\x{lo}-\\x{hi}`` per range."""
    return "".join(f"\\x{{{lo:x}}}" if lo == hi else f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi in ranges)


def python_class(ranges) -> str:
    """The body of a Python ``re`` character class: ``\\Ulo-\\Uhi`` per range."""
    return "".join(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)
