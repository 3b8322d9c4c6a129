"""normalize_text: mojibake repair checked against ftfy.fix_text on Debian's manuals made into mojibake, the
whitespace and punctuation stages on real text and on each character class they handle."""

from __future__ import annotations

import unicodedata

import ftfy
import ftfy.bad_codecs  # noqa: F401  (registers sloppy-windows-1252)
from operator_support import real_texts

from assay.core.record import Record
from assay.core.step import REGISTRY
from assay.harvest.normalize import PUNCTUATION, normalize_whitespace


def _mojibake(text: str) -> str:
    """UTF-8 read as Windows-1252: the commonest mojibake on the web."""
    return text.encode("utf-8").decode("sloppy-windows-1252")


def test_mojibake_repair_on_real_text_agrees_with_ftfy():
    # pages with non-ASCII characters (on the others mojibake cannot happen)
    docs = [d["text"] for d in real_texts(every=16) if not d["text"].isascii()][:40]
    assert len(docs) >= 20
    step = REGISTRY.get("normalize_text")(unicode="NFC", whitespace=False)
    broken = [_mojibake(t) for t in docs]
    records = [Record(str(i), b) for i, b in enumerate(broken)]
    step.process_batch(records, None)
    ours = [r.content for r in records]
    assert ours == [ftfy.fix_text(b) for b in broken]  # the step is ftfy.fix_text with this configuration
    repaired = sum(o == ftfy.fix_text(t) for o, t in zip(ours, docs)) / len(docs)
    print(f"mojibake repaired as ftfy repairs the original: {repaired:.1%} of {len(docs)} pages")
    assert repaired >= 0.9, repaired  # 95.0% (38 of 40) when written
    assert step.stats.counters["changed:ftfy"] >= 20


def test_whitespace_stage_keeps_the_words_of_real_text_and_is_idempotent():
    for d in real_texts(every=16):
        text = d["text"]
        out = normalize_whitespace(text)
        assert normalize_whitespace(out) == out
        assert "\n\n\n" not in out and not any(line.endswith(" ") for line in out.split("\n"))
        if not any(c in text for c in "\u200b\u2060\ufeff\u00ad\ufffc"):
            assert out.split() == text.split()


def test_each_kind_of_space_and_break():
    text = "a\u00a0b\u2009c\u3000d\te\u200bf\u00adg\u200dh \r\ni\rj\u2028k\x0cl  \n\n\n\n m\ufeff"
    # zero-width space, soft hyphen and BOM go; the zero-width joiner stays; indentation stays
    assert normalize_whitespace(text) == "a b c d efg\u200dh\ni\nj\nk\nl\n\n m"
    assert normalize_whitespace("x\n\n\n\ny", max_blank_lines=0) == "x\ny"


def test_unicode_and_punctuation_stages():
    step = REGISTRY.get("normalize_text")(fix_mojibake=False, punctuation=True)
    r = Record("r", "ＡＢＣ１２３ ﬁne… 「引用」，“quoted” — ‘single’ 4–5")
    step.process_batch([r], None)
    assert r.content == "ABC123 fine... \"引用\",\"quoted\" - 'single' 4-5"
    assert step.stats.counters["changed:unicode"] == 1 and step.stats.counters["changed:punctuation"] == 1
    # every replacement is ASCII and NFKC leaves it alone
    assert all(v.isascii() and unicodedata.normalize("NFKC", v) == v for v in PUNCTUATION.values())


def test_non_text_content_and_dropped_records_are_left_alone():
    step = REGISTRY.get("normalize_text")()
    a = Record("a", {"prompt": "cafÃ©"}, modality="conversation")
    b = Record("b", "cafÃ©")
    b.drop = ("x", "y")
    step.process_batch([a, b], None)
    assert a.content == {"prompt": "cafÃ©"} and b.content == "cafÃ©"
