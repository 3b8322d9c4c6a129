"""Each heuristic filter rule on texts built to trip it, the signals the filters write, and their edge cases."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.core.record import Record
from assay.core.step import REGISTRY, StepContext
from assay.harvest.filters import C4Quality, FineWebQuality, GopherQuality, GopherRepetition, URLFilter
from assay.harvest.filters.gopher import NgramStats, repeated_ngram_chars, top_ngram_chars

SENTENCE = "The quick brown fox jumps over the lazy dog and then it runs to the river with the other animals."
GOOD = "\n".join(f"{SENTENCE} This is sentence number {i} of a perfectly ordinary paragraph." for i in range(12))
# varied prose for the repetition rules (GOOD repeats its first sentence on every line)
PROSE = """Rivers carve valleys slowly, grinding stone into sand over thousands of years.
The old lighthouse keeper kept a journal of every storm that passed the northern cape.
Most bakers agree that good bread depends more on patience than on any secret recipe.
When the library reopened, children queued outside with armfuls of overdue books.
Astronomers measured the faint wobble of the star and inferred a planet twice as massive as Jupiter.
Our neighbour repairs bicycles in his garage and refuses payment in anything except coffee.
The committee postponed its decision because two members were stuck in traffic on the bridge.
A single oak tree can support hundreds of species of insects, birds and fungi.
She learned to sail on a lake so small that every tack brought her back to the same dock.
Engineers tested the new alloy at temperatures far below anything found on Earth.
In the market square, musicians played until the lanterns were lit and the stalls closed.
Nobody remembered who had planted the roses, but everyone agreed they were the finest in town."""


def run(step, *texts: str, **meta) -> list[Record]:
    records = [Record(f"r{i}", t, meta=dict(meta)) for i, t in enumerate(texts)]
    return step.process_batch(records, StepContext())


def reason(step, text: str, **meta) -> str | None:
    r = run(step, text, **meta)[0]
    return r.drop[1] if r.drop else None


def test_steps_are_registered_under_their_recipe_names():
    for name, cls in [("url_filter", URLFilter), ("c4_quality", C4Quality), ("gopher_quality", GopherQuality),
                      ("gopher_repetition", GopherRepetition), ("fineweb_quality", FineWebQuality)]:
        assert REGISTRY.get(name) is cls


# -- Gopher quality --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    (GOOD, None),
    ("Too short to be a document. It has the words the and of.", "gopher_short_doc"),
    (" ".join(["a"] * 60 + ["the", "of"]), "gopher_below_avg_threshold"),
    (" ".join(["incomprehensibilities"] * 60 + ["the", "of"]), "gopher_above_avg_threshold"),
    (" ".join(f"#tag{i} the word of the day" for i in range(80)), "gopher_too_many_hashes"),
    (" ".join(f"the wonderful adventures continue on day {i}..." for i in range(60)), "gopher_too_many_ellipsis"),
    ("\n".join(f"- item {i} of the list with some words" for i in range(60)), "gopher_too_many_bullets"),
    ("\n".join(f"• remember the important things number {i} with care" for i in range(60)), "gopher_too_many_bullets"),
    ("\n".join(f"The story of the day number {i} goes on and on and on…" for i in range(40)) + "\n" + GOOD,
     "gopher_too_many_end_ellipsis"),
    (" ".join(str(1000 + i) for i in range(400)) + " the of", "gopher_below_alpha_threshold"),
    (" ".join(["Cats sit quietly near windows"] * 20), "gopher_few_stop_words"),
    ("", "gopher_short_doc"),
])
def test_gopher_quality_rules(text, expected):
    assert reason(GopherQuality(), text) == expected


def test_gopher_quality_signals_and_thresholds():
    r = run(GopherQuality(), GOOD)[0]
    s = r.signals
    words = GOOD.split()
    assert s["gopher.word_count"] == len(words)  # punctuation marks are words, but not counted here
    assert s["gopher.stop_words"] == 5  # the, to, of, and, with
    n_tokens = len(words) + GOOD.count(".")  # every "." ending a word is a word of its own
    assert s["gopher.alpha_words_ratio"] == pytest.approx((n_tokens - 12 - 24) / n_tokens)  # 12 numbers, 24 "."
    # a looser threshold keeps what the default drops
    short = "Too short to be a document. It has the words the and of."
    assert reason(GopherQuality(min_doc_words=5), short) is None


PIECES = ["the", "of", "and", "x", "(", ")", ":", "[", "]", ":)", "8", "-", "...", "…", "#", "•", "e.g.", "don't",
          "f(x):", "a.", "1", "%", "U.S.", "http://a.com/b", "🫶", "Zürich", "'s", '"']


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(PIECES), min_size=1, max_size=4),
                          st.sampled_from([" ", " ", "  ", "\n", "\t", "\n\n", " - "])), max_size=80))
def test_gopher_quality_signals_equal_the_formulas_on_the_word_list(parts):
    """The per-chunk cached statistics give what datatrove's formulas give on the full word list."""
    from assay.harvest.filters.text import SYMBOLS, split_into_words

    text = "".join("".join(chunk) + sep for chunk, sep in parts)
    s = run(GopherQuality(), text)[0].signals
    words = split_into_words(text)
    non_symbol = [w for w in words if any(c not in SYMBOLS for c in w)]
    assert s["gopher.word_count"] == len(non_symbol)
    assert s["gopher.mean_word_length"] == pytest.approx(
        sum(map(len, non_symbol)) / len(non_symbol) if non_symbol else 0.0)
    assert s["gopher.alpha_words_ratio"] == pytest.approx(
        sum(any(c.isalpha() for c in w) for w in words) / len(words) if words else 0.0)
    assert s["gopher.stop_words"] == len(set(words) & {"the", "be", "to", "of", "and", "that", "have", "with"})


def test_gopher_quality_stop_words_are_case_sensitive_like_datatrove():
    text = " ".join(["The cat And the dog"] * 20)
    assert run(GopherQuality(), text)[0].signals["gopher.stop_words"] == 1  # only "the"; "The" and "And" differ


# -- Gopher repetition ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    (PROSE, None),
    (GOOD, "duplicated_5_n_grams"),
    ("\n\n".join([PROSE] * 4), "dup_para_frac"),
    ("\n".join([SENTENCE] * 30 + [PROSE]), "dup_line_frac"),
    (" ".join(["the cat sat on the mat and the dog"] * 40), "top_2_gram"),
    ("", "empty"),
])
def test_gopher_repetition_rules(text, expected):
    assert reason(GopherRepetition(), text) == expected


def test_gopher_repetition_repeated_ngrams():
    rng = random.Random(0)
    vocab = [f"word{i}" for i in range(500)]
    fresh = " ".join(rng.choice(vocab) for _ in range(300))
    block = " ".join(rng.choice(vocab) for _ in range(40))
    assert reason(GopherRepetition(), fresh) is None
    assert reason(GopherRepetition(), fresh + " " + block + " " + block + " " + block) == "duplicated_5_n_grams"


def _reference_top(words: list[str], n: int) -> int:
    """datatrove's definition, written out: count " ".join n-grams, most common first-seen, length x count."""
    from collections import Counter

    grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0
    gram, c = Counter(grams).most_common(1)[0]
    return len(gram) * c


def _reference_repeated(words: list[str], n: int) -> int:
    unique, repeated, i = set(), 0, 0
    while i < len(words) - n + 1:
        gram = "".join(words[i:i + n])
        if gram in unique:
            repeated += len(gram)
            i += n
        else:
            unique.add(gram)
            i += 1
    return repeated


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "ab", "ba", "c", "abc", "the", "x"]), max_size=60),
       st.integers(min_value=1, max_value=10))
def test_ngram_statistics_equal_the_reference_definitions(words, n):
    """The array version (hashes of concatenated n-grams) and the plain version agree with datatrove's loops,
    including n-grams equal only once concatenated ("a"+"bc" == "ab"+"c")."""
    stats = NgramStats(words)
    assert top_ngram_chars(words, n) == stats.top_chars(n) == _reference_top(words, n)
    assert repeated_ngram_chars(words, n) == stats.repeated_chars(n) == _reference_repeated(words, n)


# -- C4 ---------------------------------------------------------------------------------------------------------------

def test_c4_keeps_punctuated_lines_and_rewrites_the_content():
    text = "\n".join(["Menu", "Home | About", GOOD, "Enable JavaScript to see this page properly.",
                      "We use cookies. See our privacy policy for details.", "Read more...",
                      "This line is fine but cited.[1] Really.[citation needed]", "Two words."])
    r = run(C4Quality(), text)[0]
    assert r.drop is None
    assert r.content == GOOD + "\nThis line is fine but cited. Really."
    assert r.signals["c4.lines"] == 8 + GOOD.count("\n")
    assert r.signals["c4.lines_kept"] == 13


@pytest.mark.parametrize("text,expected", [
    (GOOD + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", "lorem_ipsum"),
    (GOOD + "\nThe function body is { return x; } and that is the end.", "curly_bracket"),
    ("Only one sentence here. And a second one. Third.", "too_few_sentences"),
    ("\n".join(["No punctuation at the end of these lines"] * 20), "too_few_sentences"),
    ("", "too_few_sentences"),
])
def test_c4_document_rules(text, expected):
    assert reason(C4Quality(), text) == expected


def test_c4_curly_bracket_only_counts_in_kept_lines():
    # the bracket sits on a line that is removed anyway (no terminal punctuation): the document stays
    assert reason(C4Quality(), GOOD + "\nconfig = {a: 1}") is None


def test_c4_flag_mode_keeps_the_record_and_its_content():
    text = "Only one sentence here."
    r = run(C4Quality(action="flag"), text)[0]
    assert r.drop is None and r.content == text
    assert r.signals["c4_quality.flag"] == "too_few_sentences"


def test_c4_optional_terminal_punctuation():
    text = "\n".join(f"line number {i} has no full stop but enough words" for i in range(6)) + "\n" + GOOD
    r = run(C4Quality(require_terminal_punct=False), text)[0]
    assert r.drop is None and r.content.startswith("line number 0")


# -- FineWeb ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    (GOOD, None),
    ("\n".join(f"the list of the things number {i} in a row" for i in range(40)), "line_punct_ratio"),
    ("\n".join(f"Line {i}." for i in range(80)) + "\n" + SENTENCE, "short_line_ratio"),
    (GOOD + "\n" + "\n".join([SENTENCE] * 3), "char_dup_ratio"),
    ("\n".join(f"Supercalifragilistic{i} extraordinarily." for i in range(30)), "list_ratio"),
    ("  \n\n \t ", "empty"),
])
def test_fineweb_rules(text, expected):
    assert reason(FineWebQuality(), text) == expected


def test_fineweb_signals():
    r = run(FineWebQuality(), GOOD)[0]
    assert r.signals["fineweb.line_punct_ratio"] == 1.0
    assert r.signals["fineweb.char_dup_ratio"] == 0.0
    n_tokens = len(GOOD.split()) + GOOD.count(".")  # every "." ending a word is a word of its own
    assert r.signals["fineweb.new_line_ratio"] == pytest.approx(11 / n_tokens)


# -- URL --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url,expected", [
    ("https://docs.python.org/3/library/re.html", None),
    ("https://www.pornhub.com/view?x=1", "url_domain"),
    ("https://cdn.images.xvideos.com/a.jpg", "url_domain"),
    ("https://example.com/free-porn-videos", "url_banned_word"),
    ("https://example.com/hot-girls-here", "url_soft_banned_words"),
    ("https://example.com/hot-coffee", None),  # one soft word is below the threshold of 2
    ("https://myxhamsterfan.example/", "url_banned_subword"),
    ("https://example.com/PORN", "url_banned_word"),  # case-insensitive
])
def test_url_filter_default_lists(url, expected):
    assert reason(URLFilter(), "text", url=url) == expected


def test_url_filter_user_lists_and_files(tmp_path):
    domains = tmp_path / "domains.txt"
    domains.write_text("# my list\nbad.example\n\n")
    step = URLFilter(use_default_lists=False, domains_file=str(domains), extra_urls=["https://ok.example/x"],
                     banned_words=["casino"], soft_word_threshold=1, soft_banned_words=["bet"])
    assert reason(step, "t", url="https://sub.bad.example/page") == "url_domain"
    assert reason(step, "t", url="https://ok.example/x") == "url_url"
    assert reason(step, "t", url="https://ok.example/online-casino") == "url_banned_word"
    assert reason(step, "t", url="https://ok.example/place-a-bet") == "url_soft_banned_words"
    assert reason(step, "t", url="https://www.pornhub.com/") is None  # defaults turned off


def test_url_filter_skips_records_without_a_usable_url():
    step = URLFilter()
    records = run(step, "a", "b")  # no url at all
    records += step.process_batch([Record("x", "c", meta={"url": 42}), Record("y", "d", meta={"url": "http://[::1"})],
                                  StepContext())
    assert all(r.drop is None for r in records)
    assert step.stats.counters["skipped:no_url"] == 3


# -- shared edge cases ------------------------------------------------------------------------------------------------

HOSTILE = ["", "\x00" * 1000, "\ud800 broken surrogate \udfff " * 50, "(" * 100_000, "a" * 2_000_000,
           "\n" * 10_000, "🫶" * 5000, "x " * 200_000, "Ω≈ç√∫˜µ≤≥÷ " * 1000, "\u202e\u200b\ufeff" * 1000]


@pytest.mark.parametrize("cls", [GopherQuality, GopherRepetition, C4Quality, FineWebQuality])
def test_filters_survive_hostile_text(cls):
    step = cls()
    records = run(step, *HOSTILE)
    assert len(records) == len(HOSTILE)
    assert all(r.drop is not None for r in records[:1])  # the empty document is dropped by every rule set


def test_filters_accept_structured_records():
    r = Record("c", {"messages": [{"role": "user", "content": GOOD}]}, modality="conversation")
    step = C4Quality()
    out = step.process_batch([r], StepContext())[0]
    assert out.drop is None and isinstance(out.content, dict)  # judged on its text, content not rewritten
    assert step.stats.counters["not_edited:non_text_content"] == 1
