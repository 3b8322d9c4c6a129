"""Word and sentence splitting of the heuristic filters (assay.harvest.filters.text).

The expected tokens below are spaCy 3.8's (what datatrove's ``split_into_words`` returns for English); the fuzz tests
compare against spaCy itself, run through datatrove in the peer venv (``make peers``).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

from assay.harvest.filters.text import WordTokenizer, count_sentences, get_tokenizer, split_into_words

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))
from filters_corpus import run_datatrove  # noqa: E402

CASES = {
    "def foo(x):": ["def", "foo(x", "):"],
    "x[1:] (8) e.g., U.S. Mr. 5pm 5km well-known": ["x[1", ":]", "(", "8)", "e.g.", ",", "U.S.", "Mr.", "5", "pm",
                                                    "5", "km", "well", "-", "known"],
    "os.path.join() self.Foo http://example.com/a-b.": ["os.path.join", "(", ")", "self", ".", "Foo",
                                                         "http://example.com/a-b", "."],
    "dont id Id. hes its": ["do", "nt", "i", "d", "Id.", "he", "s", "its"],
    "a.b.c A.B. foo--bar 1-2 a/b x=y <tag>": ["a.b.c", "A.B.", "foo", "--", "bar", "1", "-", "2", "a", "/", "b", "x",
                                             "=", "y", "<", "tag", ">"],
    "\"quoted\" it's I'm can't 3.14 $5 5$ 100% #hash @user": ['"', "quoted", '"', "it", "'s", "I", "'m", "ca", "n't",
                                                            "3.14", "$", "5", "5", "$", "100", "%", "#", "hash",
                                                            "@user"],
    "don’t they’re": ["do", "n’t", "they", "’re"],
    # split-up exceptions are glued back inside a chunk, unless a match across a single space comes first
    "x~:)": ["x~", ":)"],
    "x~:) )": ["x~", ":", ")", ")"],
    "\\[ :)Ahttp://": ["\\", "[", ":", ")", "Ahttp://"],
    "\\[  :)Ahttp://": ["\\", "[", ":)", "Ahttp://"],
    "I……'s ……": ["I", "……", "'s", "…", "…"],
    "great🫶 ok😀": ["great🫶", "ok", "😀"],
    "  \n\t ": [],
    "": [],
}


@pytest.mark.parametrize("text", list(CASES))
def test_words_match_spacy_on_hand_checked_examples(text):
    assert split_into_words(text) == CASES[text]


def test_sentence_counts_follow_the_punctuation_sentencizer():
    assert count_sentences("One. Two! Three? four") == 4
    assert count_sentences("Dr. Smith met Mr. Jones at 5 p.m. today.") == 1  # abbreviations are not sentence ends
    assert count_sentences("It costs 3.50 dollars.") == 1
    assert count_sentences("Wait... what?! Really.") == 2  # "..." is not a sentence end; "?!" ends one
    assert count_sentences("a .  . b") == 3  # an extra space is a token of its own and starts a sentence after "."
    assert count_sentences("") == 1


def test_hostile_chunks_are_split_in_linear_time():
    tok = WordTokenizer("en")
    t0 = time.perf_counter()
    for chunk in ["(" * 200_000, "a." * 100_000, "x@" * 100_000, "-" * 300_000, "\ud800" * 1000, "\x00" * 5000]:
        words = tok.words(chunk + " end")
        assert words[-1] == "end"
        assert "".join(words[:-1]) == chunk  # nothing lost
    assert time.perf_counter() - t0 < 5


def test_cache_is_bounded():
    tok = WordTokenizer("en")
    tok.MAX_CACHE = 100
    for i in range(1000):
        tok.words(f"word{i}, other{i}.")
    assert len(tok.cache) <= 100 + 4
    assert tok.words("word1, other1.") == ["word1", ",", "other1", "."]


def test_count_words_equals_len_words():
    text = "Hello, world! Don't stop (x): it's 5km... e.g. U.S.A."
    tok = get_tokenizer("en")
    assert tok.count_words(text) == len(tok.words(text)) == 17


def _random_chunks(n: int, seed: int) -> list[str]:
    """Whitespace-free strings mixing letters, digits and every kind of mark the rules care about."""
    rng = random.Random(seed)
    alphabet = list("aAbBxXsSmMtTiIdDnN019.,;:!?'\"()[]{}<>-–—_/\\=+*^#%&$€£@~`’“”«»…§°©😀🫶中é")
    pieces = ["n't", "'s", "'ll", "'re", "'ve", "e.g.", "U.S.", "Mr.", "http://", "www.", ".com", "km", "pm", ":)",
              "...", "--", "C++", "Ph.D.", "don", "can", "it", "id", "we", "i", "p.m.", "10", "3.14"]
    out = []
    for _ in range(n):
        parts = [rng.choice(pieces) if rng.random() < 0.3 else rng.choice(alphabet) for _ in range(rng.randint(1, 8))]
        out.append("".join(parts))
    return out


def test_fuzzed_words_match_datatrove():
    chunks = _random_chunks(3000, seed=7)
    texts = [" ".join(chunks[i:i + 5]) for i in range(0, len(chunks), 5)]
    texts += ["\t".join(chunks[:50]), "  ".join(chunks[50:100]), "\n".join(chunks[100:150])]
    reference = run_datatrove({"mode": "words", "docs": [{"id": str(i), "text": t} for i, t in enumerate(texts)]})
    mismatches = [(t, ref, split_into_words(t)) for t, ref in zip(texts, reference) if split_into_words(t) != ref]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} texts differ, e.g. {mismatches[:3]}"


def test_fuzzed_sentence_counts_match_datatrove():
    chunks = _random_chunks(4000, seed=11)
    rng = random.Random(3)
    lines = []
    for i in range(0, len(chunks), 8):
        seps = [rng.choice([" ", " ", " ", "  ", "\t"]) for _ in range(7)]
        lines.append("".join(c + s for c, s in zip(chunks[i:i + 8], seps + [""])).strip())
    reference = run_datatrove({"mode": "sentences", "docs": [{"id": str(i), "text": t} for i, t in enumerate(lines)]})
    mismatches = [(t, ref, count_sentences(t)) for t, ref in zip(lines, reference) if count_sentences(t) != ref]
    assert not mismatches, f"{len(mismatches)} of {len(lines)} lines differ, e.g. {mismatches[:3]}"
