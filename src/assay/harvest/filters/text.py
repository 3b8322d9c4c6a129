"""Word and sentence splitting shared by the heuristic filters.

The published FineWeb/Gopher/C4 filters (datatrove) count *words* as produced by spaCy's rule-based tokenizer for the
document's language, and C4 counts *sentences* with spaCy's punctuation sentencizer. Thresholds such as "at least 80 %
of words contain a letter" or "top 2-gram covers at most 20 % of characters" are sensitive to exactly how ``"(x):"``
or ``"don't"`` is split, so this module reproduces that tokenization's rules (prefix, suffix and infix punctuation,
URLs, English contractions and abbreviations, emoticons) in plain Python instead of loading spaCy.

Speed comes from the same trick spaCy uses: text is first split on whitespace, and the tokens of each distinct
whitespace-separated chunk are computed once and cached, so a document costs one ``str.split`` plus one dict lookup
per chunk. Only the first occurrence of a chunk runs the regular expressions.

Languages other than English use the same punctuation rules without the English exception list (spaCy's shared
defaults); scripts written without spaces (Chinese, Japanese, Thai, ...) are not segmented into words.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from itertools import chain, compress, count
from typing import Any

#: characters datatrove treats as symbols: a word made only of these is not a word for Gopher's counts
PUNCTUATION = (
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, (*range(0, 9), *range(11, 32), *range(127, 160))))
)

#: sentence-ending characters (Unicode Sentence_Terminal as listed by spaCy's sentencizer)
SENTENCE_END = frozenset(
    "!.?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？𐩖𐩗"
    "𑁇𑁈𑂾𑂿𑃀𑃁𑅁𑅂𑅃𑇅𑇆𑇍𑇞𑇟𑈸𑈹𑈻𑈼𑊩𑑋𑑌𑗂𑗃𑗉𑗊𑗋𑗌𑗍𑗎𑗏𑗐𑗑𑗒𑗓𑗔𑗕𑗖𑗗𑙁𑙂𑜼𑜽𑜾𑩂𑩃𑪛𑪜𑱁𑱂𖩮𖩯𖫵𖬷𖬸𖭄𛲟𝪈｡。"
)

#: line-ending punctuation for FineWeb's "lines ending in punctuation" ratio: the sentencizer's set plus the
#: sentence terminators of newer Unicode versions that datatrove also lists
TERMINAL_PUNCTUATION = SENTENCE_END | frozenset(
    "\u061d\u061e\u0837\u0839\u083d\u083e\u17d4\u17d5\u17d6\u17d9\u17da\u1b7d\u1b7e\u2e53\u2e54"
    "\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89"
    "\U00011944\U00011946\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016e98"
)

#: every character that makes up a "symbol word" (datatrove's PUNCTUATION_SET)
SYMBOLS = frozenset(PUNCTUATION) | TERMINAL_PUNCTUATION


# --------------------------------------------------------------------------------------------------------------------
# Tokenizer rules (character classes follow spaCy's shared punctuation rules; see the module docstring)
# --------------------------------------------------------------------------------------------------------------------

_LOWER = r"\p{Ll}\p{Lo}"  # lower-case letters, plus letters of scripts without case
_UPPER = r"\p{Lu}\p{Lo}"
_ALPHA = r"\p{L}"
# dingbats, emoji and other symbols are always split off, except those spaCy's symbol table does not list (mostly
# added to Unicode after 2018, e.g. U+1FAF6 HEART HANDS): for spaCy these are ordinary characters
_UNLISTED_SYMBOLS = (
    "166D 2427-2429 2B96-2B97 2BC9 2BFF 2E50-2E51 2FFC-2FFF 31E4-31E5 31EF 32FF FBC3-FBD2 FD40-FD4F FD90-FD91 "
    "FDC8-FDCF FDFE-FDFF 1019C 10ED1-10ED8 11FD5-11FDC 11FE1-11FF1 1CC00-1CCEF 1CCFA-1CCFC 1CD00-1CEB3 1CEBA-1CED0 "
    "1CED2-1CED4 1CEE0-1CEEF 1CF50-1CFC3 1D1E9-1D1FF 1D253-1D25A 1D25D-1D25E 1D260-1D27F 1E14F 1ED2E 1F10D-1F10F "
    "1F16C-1F16F 1F1AD-1F1AE 1F6D5-1F6D9 1F6DC-1F6DF 1F6FA-1F6FC 1F774-1F77F 1F7D9-1F7DB 1F7E0-1F7EB 1F7F0-1F7FF "
    "1F8B0-1F8BB 1F8C0-1F8C1 1F90C-1F90F 1F93F 1F971-1F972 1F977-1F979 1F97B 1F9A3-1F9AF 1F9BA-1F9BF 1F9C3-1F9CF "
    "1FA00-1FA57 1FA70-1FA7C 1FA80-1FAC6 1FAC8 1FACC-1FADD 1FADF-1FAEB 1FAEF-1FAFA 1FB00-1FB92 1FB94-1FBEF 1FBFA"
)


def _codepoint_class(ranges: str) -> str:
    """Regular-expression class body for hex code points and ranges ("166D 2427-2429")."""
    out = []
    for item in ranges.split():
        low, _, high = item.partition("-")
        out.append(f"\\U{int(low, 16):08X}" + (f"-\\U{int(high, 16):08X}" if high else ""))
    return "".join(out)


_ICON = f"(?:(?![{_codepoint_class(_UNLISTED_SYMBOLS)}])\\p{{So}})"
_PUNCT = "… …… , : ; ! ? ¿ ؟ ¡ ( ) [ ] { } < > _ # * & 。 ？ ！ ， 、 ； ： ～ · । ، ۔ ؛ ٪".split()
_QUOTES = "' \" ” “ ` ‘ ´ ’ ‚ , „ » « 「 」 『 』 （ ） 〔 〕 【 】 《 》 〈 〉 \u2329 \u232a ⟦ ⟧".split()
_CURRENCY = "$ £ € ¥ ฿ US$ C$ A$ ₽ ﷼ ₴ ₠ ₡ ₢ ₣ ₤ ₥ ₦ ₧ ₨ ₩ ₪ ₫ ₭ ₮ ₯ ₰ ₱ ₲ ₳ ₵ ₶ ₷ ₸ ₹ ₺ ₻ ₼ ₾ ₿".split()
_HYPHENS = "- – — -- --- —— ~".split()
# units split from a preceding number ("5km" -> "5", "km"); note "in", "t", "m", "K", "M", "G", "T" and "%"
_UNITS = (
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h kmh mph "
    "hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ мм мм² мм³ нм кг г "
    "мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тбكم كم² كم³ م م² م³ سم سم² سم³ مم مم² مم³ كم غرام "
    "جرام جم كغ ملغ كوب اكواب"
).split()

_EMOTICONS = r"""
:) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] :o) (o: :} :-} 8) 8-) (-8 ;) ;-) (; (-; :( :-( :((
:-(( :((( :-((( ): )-: =( >:( :') :'-) :'( :'-( :/ :-/ =/ =| :| :-| ]= =[ :1 :P :-P :p :-p :O :-O :o :-o :0 :-0
:() >:o :* :-* :3 :-3 =3 :> :-> :X :-X :x :-x :D :-D ;D ;-D =D xD XD xDD XDD 8D 8-D ^_^ ^__^ ^___^ >.< >.> <.<
._. ;_; -_- -__- v.v V.V v_v V_V o_o o_O O_o O_O 0_o o_0 0_0 o.O O.o O.O o.o 0.0 o.0 0.o @_@ <3 <33 <333 </3
(^_^) (-_-) (._.) (>_<) (*_*) (¬_¬) ಠ_ಠ ಠ︵ಠ (ಠ_ಠ) ¯\(ツ)/¯ (╯°□°）╯︵┻━┻ ><(((*>
""".split()


def _shared_exceptions() -> dict[str, tuple[str, ...]]:
    """Strings every language keeps whole (or splits specially): emoticons, "x." initials, "C++"."""
    exc: dict[str, tuple[str, ...]] = {s: (s,) for s in _EMOTICONS}
    for s in ["'", '\\")', "<space>", "''", "C++", "\\t", "\\n", *(c + "." for c in "abcdefghijklmnopqrstuvwxyzäöü")]:
        exc[s] = (s,)
    for unit in "cfkCFK":  # "°C." -> "°", "C", "."
        exc[f"°{unit}."] = ("°", unit, ".")
    return exc


def _english_exceptions() -> dict[str, tuple[str, ...]]:
    """English contractions ("don't" -> "do", "n't"; also the apostrophe-less "dont"), times and abbreviations."""
    exc: dict[str, tuple[str, ...]] = {}

    def both_cases(word: str, *rest: str) -> None:
        for w in (word, word.title()):
            exc[w + "".join(rest)] = (w, *rest)

    def with_and_without_apostrophe(word: str, *clitics: str) -> None:
        both_cases(word, *clitics)
        both_cases(word, *(c.replace("'", "") for c in clitics))

    with_and_without_apostrophe("i", "'m")
    with_and_without_apostrophe("i", "'m", "a")
    for pron in ("i", "you", "he", "she", "it", "we", "they"):
        for clitics in (("'ll",), ("'ll", "'ve"), ("'d",), ("'d", "'ve")):
            with_and_without_apostrophe(pron, *clitics)
    for pron in ("i", "you", "we", "they"):
        with_and_without_apostrophe(pron, "'ve")
    for pron in ("you", "we", "they"):
        with_and_without_apostrophe(pron, "'re")
    for pron in ("he", "she", "it"):
        with_and_without_apostrophe(pron, "'s")
    for word, kind in (("who", ""), ("what", ""), ("when", ""), ("where", ""), ("why", ""), ("how", ""),
                       ("there", ""), ("that", "sing"), ("this", "sing"), ("these", "plur"), ("those", "plur")):
        if kind != "plur":
            with_and_without_apostrophe(word, "'s")
        for clitics in (("'ll",), ("'ll", "'ve"), ("'d",), ("'d", "'ve")):
            with_and_without_apostrophe(word, *clitics)
        if kind != "sing":
            with_and_without_apostrophe(word, "'re")
            with_and_without_apostrophe(word, "'ve")
    for verb in ("ca", "could", "do", "does", "did", "had", "may", "might", "must", "need", "ought", "sha",
                 "should", "wo", "would"):
        with_and_without_apostrophe(verb, "n't")
        with_and_without_apostrophe(verb, "n't", "'ve")
    for verb in ("could", "might", "must", "should", "would"):
        with_and_without_apostrophe(verb, "'ve")
    for verb in ("ai", "are", "is", "was", "were", "have", "has", "dare"):
        with_and_without_apostrophe(verb, "n't")
    for word in ("doin", "goin", "nothin", "nuthin", "ol", "somethin", "lovin", "havin"):
        for w in (word, word.title()):
            exc[w] = (w,)
            exc[w + "'"] = (w + "'",)
    for word in ("em", "ll", "nuff"):
        exc[word] = (word,)
        exc["'" + word] = ("'" + word,)
    for hour in range(1, 13):
        for period in ("a.m.", "am", "p.m.", "pm"):
            exc[f"{hour}{period}"] = (str(hour), period)
    for word, parts in {
        "y'all": ("y'", "all"), "yall": ("y", "all"), "how'd'y": ("how", "'d", "'y"), "How'd'y": ("How", "'d", "'y"),
        "not've": ("not", "'ve"), "notve": ("not", "ve"), "Not've": ("Not", "'ve"), "Notve": ("Not", "ve"),
        "cannot": ("can", "not"), "Cannot": ("Can", "not"), "gonna": ("gon", "na"), "Gonna": ("Gon", "na"),
        "gotta": ("got", "ta"), "Gotta": ("Got", "ta"), "let's": ("let", "'s"), "Let's": ("Let", "'s"),
        "c'mon": ("c'm", "on"), "C'mon": ("C'm", "on"),
    }.items():
        exc[word] = parts
    whole = (
        "'S 's \u2018S \u2018s and/or w/o 're 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz 'bout ma'am Ma'am o'clock "
        "O'clock 'd a.m. p.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. Jr. Ltd. "
        "Md. Messrs. Mo. Mont. Mr. Mrs. Ms. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s. Mt. "
        # months and US states
        "Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. Ak. Ala. Ariz. Ark. Calif. Colo. Conn. Del. "
        "Fla. Ga. Ia. Id. Ill. Ind. Kan. Kans. Ky. La. Mass. Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. "
        "Nebr. Nev. Okla. Ore. Pa. S.C. Tenn. Va. Wash. Wis."
    )
    for word in whole.split():
        exc[word] = (word,)
    # ordinary words that the patterns above would wrongly split ("ill" is not "i'll")
    for word in ("Ill", "ill", "Its", "its", "Hell", "hell", "Shell", "shell", "Shed", "shed", "were", "Were",
                 "Well", "well", "Whore", "whore"):
        exc.pop(word, None)
    return exc


class WordTokenizer:
    """Splits text into words the way spaCy's rule-based tokenizer does for one language (see module docstring)."""

    #: distinct chunks remembered before the cache is reset (bounded memory on endless streams)
    MAX_CACHE = 1_000_000
    #: longer chunks (base64 blobs, minified code) get a linear-time approximation: peeling punctuation one mark at
    #: a time is quadratic, and a hostile "((((...)" of a few MB would stall the worker
    MAX_CHUNK = 1000

    def __init__(self, language: str = "en") -> None:
        import regex

        self.language = language
        exceptions = _shared_exceptions()
        if language.split("_")[0] in ("en", "eng"):
            exceptions.update(_english_exceptions())
        # every exception written with a straight apostrophe also holds with a curly one ("don’t")
        for string, parts in list(exceptions.items()):
            if "'" in string:
                exceptions[string.replace("'", "’")] = tuple(p.replace("'", "’") for p in parts)
        self.exceptions = exceptions
        esc = regex.escape
        punct, quotes = [esc(p) for p in _PUNCT], [esc(q) for q in _QUOTES]
        ellipses = [r"\.\.+", "…"]
        icon = _ICON
        currency = "|".join(esc(c) for c in _CURRENCY)
        units = "|".join(esc(u) for u in _UNITS)
        # characters after which a final "." is split off (spaCy's class, including its literal "|", "(?:" chars)
        period_after = "0-9" + _LOWER + esc("%²-+|(?:)") + "".join(esc(p) for p in _PUNCT) + esc("".join(_QUOTES))
        quote_chars = esc("".join(_QUOTES))
        prefixes = ["§", "%", "=", "—", "–", r"\+(?![0-9])", *punct, *ellipses, *quotes,
                    *(esc(c) for c in _CURRENCY), icon]
        suffixes = [*punct, *ellipses, *quotes, icon, "'s", "'S", "’s", "’S", "—", "–",
                    r"(?<=[0-9])\+", r"(?<=°[FfCcKk])\.", f"(?<=[0-9])(?:{currency})", f"(?<=[0-9])(?:{units})",
                    f"(?<=[{period_after}])\\.", f"(?<=[{_UPPER}][{_UPPER}])\\."]
        english = language.split("_")[0] in ("en", "eng")
        hyphen_infix = "(?<=[{a}0-9])(?:{h})(?=[{a}])" if english else "(?<=[{a}])(?:{h})(?=[{a}])"
        infixes = [*ellipses, icon, r"(?<=[0-9])[+\-\*^](?=[0-9-])",
                   f"(?<=[{_LOWER}{quote_chars}])\\.(?=[{_UPPER}{quote_chars}])",
                   f"(?<=[{_ALPHA}]),(?=[{_ALPHA}])",
                   hyphen_infix.format(a=_ALPHA, h="|".join(esc(h) for h in _HYPHENS)),
                   f"(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])"]
        self._prefix = regex.compile("|".join(prefixes)).match
        self._suffix = regex.compile("|".join(s + "$" for s in suffixes)).search
        self._infixes = regex.compile("|".join(infixes)).finditer
        self._infix_mark = regex.compile(f"[.…+\\-*^,–—~:<>=/\\p{{So}}]").search  # a character some infix needs
        self._url = regex.compile(_URL_PATTERN.format(lower=_LOWER), regex.VERBOSE).match
        self.cache: dict[str, tuple[str, ...]] = _ChunkCache(self._tokenize_chunk)
        #: chunk -> its tokens before exception merges, for chunks where merges happened (see _apply_merges)
        self._fragile: dict[str, tuple[str, ...]] = {}
        self._merges = None
        self._merges = self._special_merges()

    # -- public -------------------------------------------------------------------------------------------------
    def words(self, text: str) -> list[str]:
        """The words of ``text`` (datatrove's ``split_into_words``): punctuation marks are words of their own."""
        return list(chain.from_iterable(self.tokens_by_chunk(text)))

    def count_words(self, text: str) -> int:
        """``len(self.words(text))`` without building the list."""
        return sum(map(len, self.tokens_by_chunk(text)))

    def chunk_tokens(self, chunk: str) -> tuple[str, ...]:
        """The tokens of one whitespace-free chunk, on its own."""
        return self.cache[chunk]

    def context_matters(self, chunks: list[str]) -> bool:
        """Whether a neighbouring chunk may change the tokens of one of ``chunks`` (already tokenized): callers
        that aggregate per chunk then need :meth:`tokens_by_chunk`."""
        return bool(self._fragile) and not self._fragile.keys().isdisjoint(chunks)

    def sentence_count(self, text: str) -> int:
        """How many sentences spaCy's punctuation sentencizer finds in ``text`` (at least 1)."""
        parts = _WHITESPACE_SPLIT(text)
        per_chunk = self.tokens_by_chunk(text, parts)
        sentences, seen_end = 1, False
        is_punct = _is_punct
        j = 0
        for i, part in enumerate(parts):
            if not part:
                continue
            if i % 2:  # whitespace between chunks: a token of its own unless it is a single space
                if part != " ":
                    if seen_end:
                        sentences += 1
                        seen_end = False
                continue
            for token in per_chunk[j]:
                if token in SENTENCE_END:
                    seen_end = True
                elif seen_end and not is_punct(token):
                    sentences += 1
                    seen_end = False
            j += 1
        return sentences

    def tokens_by_chunk(self, text: str, parts: list[str] | None = None) -> list[tuple[str, ...]]:
        """Tokens of each whitespace-separated chunk of ``text``, in order. Entries are the cached tuples of
        :meth:`chunk_tokens` except where a neighbouring chunk changes the tokens (see
        :meth:`_resolve_merges_across_chunks`)."""
        cache = self.cache
        if len(cache) > self.MAX_CACHE:
            cache.clear()
            self._fragile.clear()
        chunks = text.split() if parts is None else [c for c in parts[::2] if c]
        per_chunk = list(map(cache.__getitem__, chunks))
        if self._fragile and not self._fragile.keys().isdisjoint(chunks):
            self._resolve_merges_across_chunks(text if parts is None else parts, chunks, per_chunk)
        return per_chunk

    def _resolve_merges_across_chunks(self, text_or_parts: str | list[str], chunks: list[str],
                                      per_chunk: list[tuple[str, ...]]) -> None:
        """Redo the exception merges of "fragile" chunks with their neighbours in view.

        spaCy looks for split-up exceptions in the token stream of the whole document, where a match may run across
        a single space (it then changes nothing, the text not being the exception) yet still takes precedence over
        a shorter or later match inside a chunk (``"[ :)x"`` keeps ``":", ")"`` apart because ``"[ :"`` matches
        the pattern of ``"[:"`` first). Only chunks whose own tokens were merged can be affected."""
        parts = _WHITESPACE_SPLIT(text_or_parts) if isinstance(text_or_parts, str) else text_or_parts
        seps = parts[1::2]
        if parts[0] == "":  # leading whitespace: drop the empty first chunk and its separator
            seps = seps[1:]
        joined_by_space = list(map(" ".__eq__, seps))  # [j]: chunks j and j + 1 touch in the token stream
        fragile = self._fragile
        reach = self._merge_lengths[0] - 1  # tokens a match can reach beyond a chunk's own

        def plain(j: int) -> tuple[str, ...]:
            return fragile[chunks[j]] if chunks[j] in fragile else per_chunk[j]

        for j in compress(count(), map(fragile.__contains__, chunks)):
            chunk = chunks[j]
            left: list[str] = []
            k = j
            while len(left) < reach and k > 0 and joined_by_space[k - 1]:
                k -= 1
                left[:0] = plain(k)
            right: list[str] = []
            k = j
            while len(right) < reach and k + 1 < len(chunks) and joined_by_space[k]:
                k += 1
                right.extend(plain(k))
            own = list(fragile[chunk])
            per_chunk[j] = tuple(self._apply_merges(own, left, right))

    # -- the rules ----------------------------------------------------------------------------------------------
    def _tokenize_chunk(self, chunk: str) -> tuple[str, ...]:
        exceptions = self.exceptions
        if chunk in exceptions:
            tokens = exceptions[chunk]
            if len(tokens) > 1 and self._merges:
                merged = self._apply_merges(list(tokens))
                if merged != list(tokens):
                    self._fragile[chunk] = tokens
                    return tuple(merged)
            return tokens
        if chunk.isalpha():  # no rule splits a run of letters (the most common chunk by far)
            return (chunk,)
        if len(chunk) > self.MAX_CHUNK:
            return self._split_long_chunk(chunk)
        prefixes: list[str] = []
        suffixes: list[str] = []
        rest = chunk
        last_len = 0
        # peel punctuation off both ends until nothing changes or what is left is an exception
        while rest and len(rest) != last_len:
            if rest in exceptions:
                break
            last_len = len(rest)
            pre_len = self._prefix_len(rest)
            if pre_len:
                without_prefix = rest[pre_len:]
                if without_prefix and without_prefix in exceptions:
                    prefixes.append(rest[:pre_len])
                    rest = without_prefix
                    break
            suf_len = self._suffix_len(rest[pre_len:])
            if suf_len:
                without_suffix = rest[:-suf_len]
                if without_suffix and without_suffix in exceptions:
                    suffixes.append(rest[-suf_len:])
                    rest = without_suffix
                    break
            if pre_len and suf_len and pre_len + suf_len <= len(rest):
                prefixes.append(rest[:pre_len])
                suffixes.append(rest[-suf_len:])
                rest = rest[pre_len:-suf_len]
            elif pre_len:
                prefixes.append(rest[:pre_len])
                rest = rest[pre_len:]
            elif suf_len:
                suffixes.append(rest[-suf_len:])
                rest = rest[:-suf_len]
        tokens = prefixes
        if rest:
            if rest in exceptions:
                tokens.extend(exceptions[rest])
            elif rest.isalnum():  # every infix rule needs a mark, and a URL needs a "."
                tokens.append(rest)
            elif "." in rest and self._url(rest):
                tokens.append(rest)
            elif not self._infix_mark(rest):
                tokens.append(rest)
            else:
                tokens.extend(self._split_infixes(rest))
        tokens.extend(reversed(suffixes))
        if len(tokens) > 1 and self._merges:
            merged = self._apply_merges(tokens)
            if merged is not tokens:
                self._fragile[chunk] = tuple(tokens)
                tokens = merged
        return tuple(tokens)

    def _split_long_chunk(self, chunk: str) -> tuple[str, ...]:
        """Approximation for very long chunks: runs of letters/digits are words, other marks are words of their
        own. Such chunks are garbage for the filters anyway (C4 drops lines with a word over 1000 characters)."""
        return tuple(_LONG_CHUNK_TOKENS(chunk))

    def _prefix_len(self, s: str) -> int:
        first = s[0]
        if first in _ONE_CHAR_PREFIXES:
            return 1
        if first in _ASCII_ALNUM and not s.startswith(("US$", "C$", "A$")):  # no other rule starts with one
            return 0
        m = self._prefix(s)
        return m.end() if m is not None else 0

    def _suffix_len(self, s: str) -> int:
        """Length of the leftmost suffix match. Every suffix rule is at most 5 characters long except runs of dots,
        so the search starts near the end instead of trying every position of ``s``."""
        if not s:
            return 0
        last = s[-1]
        if last in _ONE_CHAR_SUFFIXES:
            return 1
        if last in _ASCII_ALNUM:
            # only "'s" and units after a number ("5km") end in an ASCII letter or digit
            if last in _ASCII_DIGITS:
                return 0
            tail = s[-7:]
            if not (tail[-2:-1] in ("'", "’") or any(c in _ASCII_DIGITS for c in tail)):
                return 0
        start = len(s) - 8
        if start <= 0:
            m = self._suffix(s)
        else:
            start -= len(s) - len(s.rstrip("."))
            m = self._suffix(s, max(start, 0))
        return len(s) - m.start() if m is not None else 0

    @staticmethod
    def _match_len(search: Any, s: str) -> int:
        m = search(s)
        return m.end() - m.start() if m is not None else 0

    def _split_infixes(self, s: str) -> list[str]:
        out = []
        start = 0
        for m in self._infixes(s):
            a, b = m.span()
            if a == 0:  # an infix at the very start is not a split point
                continue
            if a != start:
                out.append(s[start:a])
            if a != b:
                out.append(s[a:b])
            start = b
        if start < len(s):
            out.append(s[start:])
        return out

    def _plain_tokens(self, s: str) -> list[str]:
        """Tokens of ``s`` by the punctuation rules alone, ignoring the exception list."""
        saved, self.exceptions = self.exceptions, {}
        merges, self._merges = getattr(self, "_merges", None), None
        try:
            return list(self._tokenize_chunk(s))
        finally:
            self.exceptions, self._merges = saved, merges

    def _special_merges(self) -> dict[tuple[str, ...], str]:
        """Exceptions that the punctuation rules would split (":)" -> ":", ")"): when such a token sequence shows
        up inside a chunk ("f(x):" -> "f(x", ")", ":"), spaCy glues it back into the exception ("f(x", "):")."""
        merges = {}
        for s in self.exceptions:
            plain = self._plain_tokens(s)
            if len(plain) > 1:
                merges[tuple(plain)] = s
        self._merge_firsts = {k[0] for k in merges}
        self._merge_lengths = sorted({len(k) for k in merges}, reverse=True)
        return merges

    def _apply_merges(self, tokens: list[str], left: list[str] = (), right: list[str] = ()) -> list[str]:
        """Glue split-up exceptions back together in ``tokens`` (one chunk), the way spaCy's special-case matcher
        does: every match is found, then taken longest first and leftmost first, and a match is used only if no
        match taken before it (used or not) covers its first or last token. ``left``/``right`` are the tokens of
        the neighbouring chunks that touch this one across a single space: their matches count as obstacles."""
        if self._merge_firsts.isdisjoint(tokens):
            return tokens
        firsts = self._merge_firsts
        window = [*left, *tokens, *right]
        own_start, own_end = len(left), len(left) + len(tokens)
        n = len(window)
        matches = []  # (start, end) in window
        for i in range(n):
            if window[i] not in firsts:
                continue
            for length in self._merge_lengths:
                if i + length <= n and tuple(window[i:i + length]) in self._merges:
                    matches.append((i, i + length))
        if not matches:
            return tokens
        matches.sort(key=lambda m: (m[0] - m[1], m[0]))
        taken: set[int] = set()
        chosen = []
        for a, b in matches:
            if a not in taken and b - 1 not in taken and own_start <= a and b <= own_end:
                chosen.append((a - own_start, b - own_start))
            taken.update(range(a, b))
        if not chosen:
            return tokens
        chosen.sort()
        out: list[str] = []
        i = 0
        for a, b in chosen:
            out.extend(tokens[i:a])
            out.extend(self.exceptions["".join(tokens[a:b])])
            i = b
        out.extend(tokens[i:])
        return out


class _ChunkCache(dict):
    """chunk -> tokens; computes missing entries on lookup so ``map(cache.__getitem__, chunks)`` runs in C."""

    def __init__(self, compute: Any) -> None:
        super().__init__()
        self._compute = compute

    def __missing__(self, chunk: str) -> tuple[str, ...]:
        tokens = self[chunk] = self._compute(chunk)
        return tokens


_URL_PATTERN = r"""
^
(?:[\w+\-.]{{2,}}://)?                          # scheme
(?:\S+(?::\S*)?@)?                              # user[:password]@
(?:
    (?!(?:10|127)(?:\.\d{{1,3}}){{3}})          # public IPv4 addresses only
    (?!(?:169\.254|192\.168)(?:\.\d{{1,3}}){{2}})
    (?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{{1,3}}){{2}})
    (?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])
    (?:\.(?:1?\d{{1,2}}|2[0-4]\d|25[0-5])){{2}}
    (?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))
  |
    (?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{{0,62}})?[A-Za-z0-9\u00a1-\uffff]\.)+   # host labels
    (?:[{lower}]{{2,63}})                       # lower-case top-level domain
)
(?::\d{{2,5}})?                                 # port
(?:[/?\#]\S*)?                                  # path, query, fragment
$
"""


def _whitespace_splitter() -> Any:
    import re

    return re.compile(r"(\s+)").split


_WHITESPACE_SPLIT = _whitespace_splitter()
_ASCII_DIGITS = frozenset("0123456789")
# marks that are a whole prefix (suffix) on their own whenever they start (end) a chunk: no longer or conditional rule
# starts (ends) with them, so the regular expression need not run
_ONE_CHAR_PREFIXES = frozenset("§%=—–" + "".join(p for p in _PUNCT if len(p) == 1) + "".join(
    q for q in _QUOTES if len(q) == 1) + "".join(c for c in _CURRENCY if len(c) == 1))
_ONE_CHAR_SUFFIXES = frozenset("—–" + "".join(p for p in _PUNCT if len(p) == 1 and p != "…") + "".join(
    q for q in _QUOTES if len(q) == 1))
_ASCII_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _long_chunk_tokenizer() -> Any:
    import re

    return re.compile(r"[^\W_]+|.", re.DOTALL).findall


_LONG_CHUNK_TOKENS = _long_chunk_tokenizer()


@lru_cache(maxsize=100_000)
def _is_punct(token: str) -> bool:
    """spaCy's ``Token.is_punct``: every character is Unicode punctuation (category P*)."""
    return all(unicodedata.category(c)[0] == "P" for c in token)


@lru_cache(maxsize=None)
def get_tokenizer(language: str = "en") -> WordTokenizer:
    """The shared tokenizer of ``language`` (built on first use, ~50 ms)."""
    return WordTokenizer(language)


def split_into_words(text: str, language: str = "en") -> list[str]:
    return get_tokenizer(language).words(text)


def count_sentences(text: str, language: str = "en") -> int:
    return get_tokenizer(language).sentence_count(text)
