"""``pii``: find personal data in texts and replace it with placeholders.

Types and how false positives are kept down (precision first: a redacted version number costs little, but a
placeholder in every third code snippet would damage the data):

* ``email``: ``local@domain.tld``; the TLD must be letters and not an image extension (``icon@2x.png`` is kept).
  Only the address is replaced, so text that parsed still parses: the local part is made of the characters real
  addresses use (letters, digits, ``. _ % + -``), not of quotes, backticks, ``#``, ``=`` or ``/`` that RFC 5322
  allows but code and markup put around addresses; and ``name@a.b(`` is a call (``L@D@L.conjugate()``), not an
  address. Decorator references (``@click.command``) have no local part and are never touched.
* ``ip_address``: IPv4 and IPv6, validated with :mod:`ipaddress`. As datatrove's ``PIIFormatter`` does by
  default, only public addresses are replaced (``only_public_ips``): private, loopback, link-local, documentation
  and reserved ranges identify nobody. For IPv6 "public" means global unicast (``2000::/3``). An IPv4-looking
  number glued to other dotted numbers, letters or a hyphen (``1.2.3.4.5``, ``v1.2.3.4``, ``pkg-3.1.1.3``),
  right after "version", "release", "build" or "rev", or made of single-digit parts only (``4.8.1.2``: section
  and version numbers; the addresses this misses, like 8.8.8.8, are public services, not people) is kept.
* ``phone``: international numbers written with a leading ``+`` (8 to 15 digits, as E.164), North American
  numbers with separators (``(555) 123-4567``, ``555-123-4567``, ``+1 555.123.4567``) and the French-style
  ``0X XX XX XX XX``. Bare digit runs are not phone numbers here (too many ids, prices and counts look alike);
  national formats of other countries are missed unless written with ``+``.
* ``iban``: a known country code, that country's exact length, and the ISO 7064 mod-97 checksum.
* ``credit_card``: 13 to 19 digits (optionally grouped by one kind of separator; ungrouped, at most 16: longer
  integers in code are seeds and hashes) with a known issuer prefix and length, and a valid Luhn checksum.

Per record the counts go to ``signals["pii.<type>"]`` (only types found) and to the step counters ``pii.<type>``.
Named-entity PII (people's names, street addresses) is not handled: Presidio/spaCy NER is not built.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, ClassVar, Iterable, Iterator, Literal

from pydantic import Field

from assay.core.step import Batch, Step, StepContext, StepParams

PiiType = Literal["email", "ip_address", "phone", "iban", "credit_card"]
#: replacement order matters: IBANs and card numbers are digit runs a phone pattern could also take
PII_TYPES: tuple[str, ...] = ("email", "iban", "credit_card", "ip_address", "phone")

DEFAULT_REPLACEMENTS: dict[str, str] = {
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
    "phone": "<PHONE>",
    "iban": "<IBAN>",
    "credit_card": "<CREDIT_CARD>",
}


# -- checksums ---------------------------------------------------------------------------------------------------
def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment card numbers. ``digits`` holds digits only."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


#: IBAN length per country (ISO 13616 registry); a country code not listed here is not an IBAN
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}


def iban_valid(iban: str) -> bool:
    """Country known, length right for it, and the mod-97 checksum equal to 1. ``iban`` without spaces."""
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)  # A=10 ... Z=35
    return int(number) % 97 == 1


def card_issuer_plausible(digits: str) -> bool:
    """True if the number's prefix and length belong to a card scheme (Visa, Mastercard, Amex, Discover, JCB,
    Diners, UnionPay, Maestro). Cuts Luhn's 1-in-10 false positives on arbitrary digit runs."""
    n = len(digits)
    p2, p3, p4 = int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # Amex
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65:
        return 16 <= n <= 19  # Discover
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19  # JCB
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):
        return 14 <= n <= 19  # Diners
    if p2 == 62:
        return 16 <= n <= 19  # UnionPay
    if p2 == 50 or 56 <= p2 <= 69:
        return 12 <= n <= 19  # Maestro
    return False


# -- detectors: each is (pattern, validator(match) -> span to replace or None) -----------------------------------
#: the characters real addresses use in their local part. RFC 5322 also allows ' ` # = / { } | and more, but text
#: around an address uses them as delimiters: with them, ``fromaddr='a@example.com'`` lost its quote,
#: ``#@pytest.mark.slow`` its comment sign and a URL ``https://host/list/dev@python.org`` its path
_EMAIL_LOCAL = r"[a-z0-9_%+-]"
_EMAIL = re.compile(
    rf"(?<![\w.%+-]){_EMAIL_LOCAL}{{1,64}}(?:\.{_EMAIL_LOCAL}{{1,64}}){{0,8}}"
    # not followed by "(": `L@D@L.conjugate()` is matrix products, `@click.command()` a decorator
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,8}([a-z]{2,63})(?![\w(-])",
    re.IGNORECASE,
)
_NOT_EMAIL_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "avif"})

_IPV4 = re.compile(r"(?<![\w.-])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)(?!\w)")
_VERSION_CONTEXT = re.compile(r"\b(?:version|release|build|rev|ver)\.?\s*:?\s*$", re.IGNORECASE)
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9a-f.]*:[0-9a-f.]*:)[0-9a-f:.]{2,45}(?![\w:])", re.IGNORECASE)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

_PHONE = re.compile(
    r"(?<![\w+])(?:"
    # international: +CC, optional (area), groups of digits with one-char separators
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,4}){2,6}"
    # North American with separators (optional leading 1)
    r"|(?:1[ .-])?(?:\(\d{3}\)[ ]?|\d{3}[.-])\d{3}[.-]\d{4}"
    # French style 0X XX XX XX XX
    r"|0[1-9](?:[ .]\d{2}){4}"
    r")(?![\w-])"
)

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")
_CARD = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){11,18}(?![\d-])")


def _email_ok(text: str, m: re.Match) -> tuple[int, int] | None:
    if m.group(1).lower() in _NOT_EMAIL_TLDS:
        return None
    return m.span()


def _ip_public(addr: Any, only_public: bool) -> bool:
    if not only_public:
        return True
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped.is_global
        return addr in _GLOBAL_UNICAST and addr.is_global
    return addr.is_global


def _make_ipv4_check(only_public: bool) -> Callable[[str, re.Match], tuple[int, int] | None]:
    def check(text: str, m: re.Match) -> tuple[int, int] | None:
        try:
            addr = ipaddress.IPv4Address(m.group(0))
        except ValueError:
            return None
        if not _ip_public(addr, only_public):
            return None
        if all(octet < 10 for octet in addr.packed):  # 1.2.0.1, 4.8.1.2: versions and section numbers
            return None
        if _VERSION_CONTEXT.search(text, max(0, m.start() - 12), m.start()):
            return None
        return m.span()

    return check


def _make_ipv6_check(only_public: bool) -> Callable[[str, re.Match], tuple[int, int] | None]:
    def check(text: str, m: re.Match) -> tuple[int, int] | None:
        candidate = m.group(0).rstrip(".")
        try:
            addr = ipaddress.IPv6Address(candidate)
        except ValueError:
            return None
        if not _ip_public(addr, only_public):
            return None
        return m.start(), m.start() + len(candidate)

    return check


def _phone_ok(text: str, m: re.Match) -> tuple[int, int] | None:
    digits = sum(ch.isdigit() for ch in m.group(0))
    return m.span() if 8 <= digits <= 15 else None


def _iban_ok(text: str, m: re.Match) -> tuple[int, int] | None:
    length = IBAN_LENGTHS.get(m.group(0)[:2])
    if length is None:
        return None
    # walk the match until the country's number of characters: whatever follows (a BIC, a word) is not part of it
    seen, end, compact = 0, m.start(), []
    for i in range(m.start(), m.end()):
        if text[i] != " ":
            compact.append(text[i])
            seen += 1
            if seen == length:
                end = i + 1
                break
    if seen < length or (end < len(text) and text[end].isalnum()):
        return None
    return (m.start(), end) if iban_valid("".join(compact)) else None


def _card_ok(text: str, m: re.Match) -> tuple[int, int] | None:
    raw = m.group(0)
    separators = {ch for ch in raw if not ch.isdigit()}
    if len(separators) > 1:
        return None
    if separators:  # grouped like a card: every group 3 to 6 digits
        groups = raw.split(separators.pop())
        if any(not 3 <= len(g) <= 6 for g in groups):
            return None
    digits = "".join(ch for ch in raw if ch.isdigit())
    if not separators and len(digits) > 16:  # 19-digit integers are seeds, hashes and ids; 19-digit cards are rare
        return None
    if len(set(digits)) == 1 or not card_issuer_plausible(digits) or not luhn_valid(digits):
        return None
    return m.span()


def _email_candidates(text: str) -> Iterator[re.Match]:
    """Matches of the email pattern, searched only in a window around each ``@`` (the pattern itself would try
    every word start of the text: 5x slower on ordinary prose)."""
    pos = 0
    at = text.find("@")
    while at != -1:
        m = _EMAIL.search(text, max(pos, at - 600), at + 300)
        if m is not None and m.start() <= at < m.end():
            yield m
            pos = m.end()
            at = text.find("@", pos)
        else:
            at = text.find("@", at + 1)


def _substitute(text: str, matches: Iterable[re.Match], check: Callable, placeholder: str) -> tuple[str, int]:
    """Replace every validated match in ``text`` by ``placeholder``; return the text and the count."""
    out: list[str] = []
    pos = count = 0
    for m in matches:
        if m.start() < pos:
            continue
        span = check(text, m)
        if span is None:
            continue
        start, end = span
        out.append(text[pos:start])
        out.append(placeholder)
        pos = end
        count += 1
    if not count:
        return text, 0
    out.append(text[pos:])
    return "".join(out), count


_HAS_DIGIT = re.compile(r"\d")
_HAS_COLON_HEX = re.compile(r"[0-9a-f]:|:[0-9a-f]", re.IGNORECASE)


class PiiParams(StepParams):
    types: list[PiiType] = Field(list(DEFAULT_REPLACEMENTS), description="kinds of PII to replace")
    replacements: dict[PiiType, str] = Field({}, description="placeholder per type (others keep the default, "
                                                             "e.g. <EMAIL>)")
    only_public_ips: bool = Field(True, description="replace only public IPs (private/loopback/reserved ones "
                                                    "identify nobody), as datatrove")


class PiiRedactor:
    """The detection and replacement logic of the ``pii`` step, usable on plain strings."""

    def __init__(self, types: list[str] | None = None, replacements: dict[str, str] | None = None,
                 only_public_ips: bool = True) -> None:
        wanted = set(types if types is not None else PII_TYPES)
        unknown = wanted - set(PII_TYPES)
        if unknown:
            raise ValueError(f"unknown PII types: {sorted(unknown)}; known: {list(PII_TYPES)}")
        self.placeholders = {**DEFAULT_REPLACEMENTS, **(replacements or {})}
        self.types = [t for t in PII_TYPES if t in wanted]
        self._ipv4 = _make_ipv4_check(only_public_ips)
        self._ipv6 = _make_ipv6_check(only_public_ips)

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """Return ``text`` with PII replaced and the number of replacements per type (types found only)."""
        counts: dict[str, int] = {}
        has_digit = _HAS_DIGIT.search(text) is not None  # everything but email needs digits: skip the rest fast
        for kind in self.types:
            placeholder = self.placeholders[kind]
            n = 0
            if kind == "email":
                if "@" in text:
                    text, n = _substitute(text, _email_candidates(text), _email_ok, placeholder)
            elif not has_digit:
                continue
            elif kind == "iban":
                text, n = _substitute(text, _IBAN.finditer(text), _iban_ok, placeholder)
            elif kind == "credit_card":
                text, n = _substitute(text, _CARD.finditer(text), _card_ok, placeholder)
            elif kind == "ip_address":
                text, n = _substitute(text, _IPV4.finditer(text), self._ipv4, placeholder)
                if _HAS_COLON_HEX.search(text):
                    text, n6 = _substitute(text, _IPV6.finditer(text), self._ipv6, placeholder)
                    n += n6
            elif kind == "phone":
                text, n = _substitute(text, _PHONE.finditer(text), _phone_ok, placeholder)
            if n:
                counts[kind] = n
        return text, counts


class Pii(Step):
    """Replace emails, IP addresses, phone numbers, IBANs and credit card numbers with placeholders."""

    name = "pii"
    version = "1"
    Params: ClassVar[type[StepParams]] = PiiParams

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        p: PiiParams = self.params  # type: ignore[assignment]
        self.redactor = PiiRedactor(list(p.types), dict(p.replacements), p.only_public_ips)

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        for record in batch:
            if record.drop is not None:
                continue
            if not isinstance(record.content, str):
                self.count("pii.skipped_non_text")
                continue
            record.content, counts = self.redactor.redact(record.content)
            for kind, n in counts.items():
                record.signals[f"pii.{kind}"] = n
                self.count(f"pii.{kind}", n)
        return batch
