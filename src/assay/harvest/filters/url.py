"""URL blocklist filter: drop pages whose address names a blocked domain or contains banned words.

Same rules as datatrove's ``URLFilter`` (the one FineWeb used), with lists that are small and bundled by default
(``url_blocklist.txt``) and extensible from files:

* the host or any of its parent domains is listed (``a.b.example.com`` is blocked by ``example.com``); datatrove
  uses the Public Suffix List to find the registered domain, this walks the parents instead (no list to download);
* the exact URL is listed;
* a word of the URL (lower-cased, split on non-alphanumerics) is a banned word;
* at least ``soft_word_threshold`` soft-banned words occur among the URL's words;
* a banned subword occurs in the URL once every non-alphanumeric is removed (``"xx-porn-site"`` -> ``xxpornsite``).

Words are matched case-insensitively (datatrove compares the URL's words without lower-casing them).
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from assay.core.record import Record
from assay.core.step import Filter, FilterParams, Threshold

DEFAULT_LISTS = Path(__file__).with_name("url_blocklist.txt")
LIST_KINDS = ("domains", "urls", "banned_words", "soft_banned_words", "banned_subwords")
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")


class URLFilterParams(FilterParams):
    use_default_lists: bool = True
    soft_word_threshold: int = 2
    extra_domains: list[str] = []
    extra_urls: list[str] = []
    banned_words: list[str] = []
    soft_banned_words: list[str] = []
    banned_subwords: list[str] = []
    #: files with one entry a line ("#" starts a comment), added to the lists above
    domains_file: str | None = None
    urls_file: str | None = None
    banned_words_file: str | None = None
    soft_banned_words_file: str | None = None
    banned_subwords_file: str | None = None


def _normalize_word(word: str) -> str:
    return _NON_ALNUM.sub("", word).lower()


def read_list_file(path: str | Path) -> list[str]:
    """Entries of a one-per-line list file (blank lines and ``#`` comments skipped)."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def read_sectioned_lists(path: str | Path) -> dict[str, list[str]]:
    """The ``[section]``-headed lists of the bundled blocklist file."""
    lists: dict[str, list[str]] = {kind: [] for kind in LIST_KINDS}
    section = None
    for line in read_list_file(path):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            if section not in lists:
                raise ValueError(f"{path}: unknown section [{section}]")
        elif section is not None:
            lists[section].append(line)
    return lists


class URLBlocklist:
    """The compiled lists and the decision for one URL."""

    def __init__(self, lists: dict[str, list[str]], soft_word_threshold: int) -> None:
        self.domains = {d.lower().strip(".") for d in lists["domains"]}
        self.urls = set(lists["urls"])
        self.banned_words = {w for w in map(_normalize_word, lists["banned_words"]) if w}
        self.soft_banned_words = {w for w in map(_normalize_word, lists["soft_banned_words"]) if w}
        subwords = sorted({w for w in map(_normalize_word, lists["banned_subwords"]) if w})
        self.subword_search = re.compile("|".join(map(re.escape, subwords))).search if subwords else None
        self.soft_word_threshold = soft_word_threshold

    def reason(self, url: str) -> str | None:
        try:
            host = (urlsplit(url).hostname or "").strip(".")
        except ValueError:  # e.g. an unbalanced "[" in the host
            host = ""
        if host and self.domains:
            labels = host.split(".")
            if any(".".join(labels[i:]) in self.domains for i in range(len(labels))):
                return "domain"
        if url in self.urls:
            return "url"
        words = set(_NON_ALNUM.split(url.lower()))
        if not self.banned_words.isdisjoint(words):
            return "banned_word"
        if self.soft_banned_words and len(self.soft_banned_words & words) >= self.soft_word_threshold:
            return "soft_banned_words"
        if self.subword_search is not None and self.subword_search(_normalize_word(url)):
            return "banned_subword"
        return None


class URLFilter(Filter):
    """Drops pages whose URL (``meta["url"]``) is on a domain/URL blocklist or contains banned words."""

    name = "url_filter"
    version = "1"
    Params: ClassVar[type[FilterParams]] = URLFilterParams
    signals = ("url.blocked",)

    def thresholds(self) -> list[Threshold]:
        return [Threshold("url.blocked", "set")]  # the blocklist rule that matched: domain, url, banned_word, …

    @cached_property
    def blocklist(self) -> URLBlocklist:
        p = self.params
        lists = read_sectioned_lists(DEFAULT_LISTS) if p.use_default_lists else {k: [] for k in LIST_KINDS}
        lists["domains"] += p.extra_domains
        lists["urls"] += p.extra_urls
        lists["banned_words"] += p.banned_words
        lists["soft_banned_words"] += p.soft_banned_words
        lists["banned_subwords"] += p.banned_subwords
        for kind, path in (("domains", p.domains_file), ("urls", p.urls_file), ("banned_words", p.banned_words_file),
                           ("soft_banned_words", p.soft_banned_words_file),
                           ("banned_subwords", p.banned_subwords_file)):
            if path:
                lists[kind] += read_list_file(path)
        return URLBlocklist(lists, p.soft_word_threshold)

    def setup(self, ctx) -> None:
        self.blocklist  # noqa: B018 - load the lists once per worker, before the first record

    def score(self, record: Record) -> None:
        url = record.meta.get("url")
        if not isinstance(url, str) or not url:
            record.signals.pop("url.blocked", None)
            self.count("skipped:no_url")
            return
        reason = self.blocklist.reason(url)
        if reason is None:
            record.signals.pop("url.blocked", None)
        else:
            record.signals["url.blocked"] = reason

    def decide(self, record: Record) -> str | None:
        reason = record.signals.get("url.blocked")
        return f"url_{reason}" if reason else None
