"""flagged_words: Data-Juicer's ratio (whitespace words, lower-cased, special characters stripped, flagged share),
per-language lists, and its effect on Debian's manuals with and without planted profanity."""

from __future__ import annotations

import pytest
from operator_support import real_texts

from assay.core.record import Record
from assay.core.step import REGISTRY
from assay.harvest.filters.flagged_words import available_languages, document_words, load_word_list


def test_words_follow_data_juicers_splitting_and_stripping():
    # split on space/newline/tab only; lower-cased; punctuation, digits and emoji stripped at both ends only
    assert document_words("Hello,  WORLD!\n\t(42) don't\u00a0stop 😀yes😀 --- x-ray") == [
        "hello", "world", "don't\u00a0stop", "yes", "x-ray"]
    assert document_words("a b c", aug_sizes=(2,)) == ["a", "b", "c", "ab", "bc"]
    assert document_words("") == [] and document_words(" \n\t ") == []


def test_ratio_and_decision():
    flagged = sorted(load_word_list("en"))
    bad = [w for w in flagged if " " not in w and w.isalpha()][:2]
    text = f"{bad[0].upper()}! this is a text about {bad[1]}, written to test the filter"  # 2 of 12 words
    step = REGISTRY.get("flagged_words")()
    rec = Record("r", text)
    step.process_batch([rec], None)
    assert rec.signals["flagged_words.ratio"] == pytest.approx(2 / 12)
    assert rec.drop == ("flagged_words", "too_many_flagged_words")
    flag = REGISTRY.get("flagged_words")(action="flag", max_ratio=0.2)
    rec = Record("r", text)
    flag.process_batch([rec], None)
    assert rec.drop is None and "flagged_words.flag" not in rec.signals


def test_real_manuals_pass_and_planted_profanity_is_caught():
    docs = real_texts(every=16)
    step = REGISTRY.get("flagged_words")()
    records = [Record(d["id"], d["text"]) for d in docs]
    step.process_batch(records, None)
    assert all(r.drop is None for r in records), [r.id for r in records if r.drop]
    bad = [w for w in sorted(load_word_list("en")) if " " not in w and w.isalpha()]
    planted = []
    for d in docs[:20]:
        words = d["text"].split()
        for i in range(0, len(words), 10):  # one word in ten: ratio about 0.1 > 0.045
            words[i] = bad[i % len(bad)]
        planted.append(Record(d["id"], " ".join(words)))
    step.process_batch(planted, None)
    assert all(r.drop == ("flagged_words", "too_many_flagged_words") for r in planted)


def test_language_auto_uses_each_records_language():
    assert {"en", "de", "fr", "ru", "zh"} <= set(available_languages())
    de_word = next(w for w in sorted(load_word_list("de")) if w.isalpha() and w not in load_word_list("en"))
    step = REGISTRY.get("flagged_words")(language="auto", max_ratio=0.1)
    german = Record("de", f"{de_word} und so weiter", meta={"language": "de"})
    english = Record("en", f"{de_word} and so on", meta={"language": "en"})
    unknown = Record("xx", f"{de_word} x y z", meta={"language": "sw"})
    step.process_batch([german, english, unknown], None)
    assert german.drop and german.signals["flagged_words.language"] == "de"
    assert english.drop is None and english.signals["flagged_words.ratio"] == 0
    assert unknown.drop is None and step.stats.counters["no_list:sw"] == 1
    with pytest.raises(ValueError, match="no flagged-word list"):
        REGISTRY.get("flagged_words")(language="xx")


def test_own_word_file(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("# my list\nFoo\nbar\n")
    step = REGISTRY.get("flagged_words")(words_file=str(f), max_ratio=0.3)
    rec = Record("r", "foo bar baz")
    step.process_batch([rec], None)
    assert rec.signals["flagged_words.ratio"] == pytest.approx(2 / 3) and rec.drop
