"""``code_secrets``: find credentials in source code and replace them with placeholders, counted per type.

Why our own rules rather than detect-secrets: detect-secrets (Yelp) scans line by line, so for a private key it
reports the ``BEGIN ... PRIVATE KEY`` line but not the key's body, which is what must go; its entropy plugins flag
hashes and test vectors in code (BigCode added a gibberish detector on top); and it runs at ~0.1 MB/s. The rules
here are the same families (written afresh from the providers' documented token formats), matched over the whole
text in one pass per rule after a cheap literal pre-check, and the generic rules require randomness:

* provider tokens with a fixed shape: AWS access key ids (``AKIA…``), AWS secret keys next to an ``aws`` keyword,
  GitHub (``ghp_…``, ``github_pat_…``), GitLab (``glpat-…``), Slack tokens and webhooks, Stripe live keys,
  Google API keys (``AIza…``), OpenAI, Anthropic, Hugging Face, npm, PyPI, SendGrid, Twilio, Telegram bot tokens,
  Azure storage account keys, JSON Web Tokens;
* private keys: the whole ``-----BEGIN … PRIVATE KEY-----`` … ``-----END …-----`` block, also when written as a
  string with ``\\n`` escapes; a block without its END line is redacted up to the end of its base64 body;
* passwords and secrets assigned to a variable, key or option named like one (``password = "…"``,
  ``"api_key": "…"``, ``client_secret: …``) and passwords in URLs (``scheme://user:pass@host``). The value
  must look random: at least 8 characters, Shannon entropy ≥ ``min_entropy`` bits per character, two kinds of
  characters (lower, upper, digit, symbol) and a digit unless it is long or very random, and not a placeholder
  (``changeme``, ``<your-key>``, ``${VAR}``, ``xxxx``, ``os.environ``…).

Emails and public IP addresses are replaced by the ``pii`` module's :class:`~assay.harvest.pii.PiiRedactor`.

Placeholders: ``<KEY>`` for tokens and keys, ``<PRIVATE_KEY>``, ``<PASSWORD>``, ``<SECRET>``, ``<EMAIL>``,
``<IP_ADDRESS>``. Per record the counts go to ``signals["secrets.<type>"]``; the step counts ``secrets.<type>``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Callable, ClassVar, Iterator

from pydantic import Field

from assay.core.step import Batch, Step, StepContext, StepParams


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s character distribution."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


_PLACEHOLDER_WORDS = re.compile(
    r"example|sample|dummy|fake|placeholder|changeme|change_me|your[_-]?|my[_-]?(?:pass|secret|key|token)|"
    r"redacted|secret|password|passwd|test|xxxx|\*\*\*|\.\.\.|<|>|\{|\}|\$\{|\$\(|^\$|%s|%\(|os\.environ|getenv|env\[|"
    r"process\.env|none|null|undefined|true|false|todo|fixme|insert|replace|dummy",
    re.IGNORECASE,
)


class SecretRule:
    """One kind of secret: a regex, which group is the secret (0 = the whole match), and an optional check."""

    def __init__(self, kind: str, pattern: str, group: int = 0, needles: tuple[str, ...] = (),
                 check: Callable[[str], bool] | None = None, flags: int = 0,
                 window: tuple[int, int] | None = None) -> None:
        self.kind = kind
        self.window = window  # (chars before, chars after) a needle that can hold a match: search only there
        self.regex = re.compile(pattern, flags)
        # case-insensitive parts are written (?i:...) in lower case: on lower-cased text the same pattern
        # without the flag finds the same spans ~6x faster (Python's re is slow at case-folding alternations)
        self.regex_lower = re.compile(pattern.replace("(?i:", "(?:"), flags) if "(?i:" in pattern else None
        self.group = group
        self.needles = needles  # literal substrings one of which must be present (fast pre-check)
        self.check = check

    def applies(self, text: str, lower: str) -> bool:
        return not self.needles or any(n in (lower if n.islower() else text) for n in self.needles)

    def finditer(self, text: str, lower: str) -> Iterator[re.Match]:
        """Matches in ``text``; spans index ``text`` (group values must be sliced from ``text`` by span)."""
        # lower() keeps positions when it keeps the length (each character maps to one character)
        if self.regex_lower is not None and len(lower) == len(text):
            if self.window:
                return self._around_needles(lower)
            return self.regex_lower.finditer(lower)
        return self.regex.finditer(text)

    def _around_needles(self, lower: str) -> Iterator[re.Match]:
        """Matches found by searching small windows around each needle occurrence (``str.find`` is far faster
        than the regex engine's scan over text that mostly cannot match)."""
        assert self.regex_lower is not None
        before, after = self.window
        starts = set()
        for needle in self.needles:
            i = lower.find(needle)
            while i >= 0:
                starts.add(max(0, i - before))
                i = lower.find(needle, i + 1)
        seen_end = -1
        for lo in sorted(starts):
            m = self.regex_lower.search(lower, max(lo, seen_end), lo + before + after)
            if m is not None:
                seen_end = m.end()
                yield m


def plausible_secret(value: str, min_entropy: float = 3.0) -> bool:
    """Whether an assigned value looks like a real credential rather than a name, a placeholder or prose."""
    if len(value) < 8 or len(value) > 200 or any(c.isspace() for c in value):
        return False
    if _PLACEHOLDER_WORDS.search(value):
        return False
    if re.fullmatch(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*", value):  # a lower-case identifier or dotted name
        return False
    if re.fullmatch(r"(?:[A-Za-z]+[_-])*[A-Za-z]+", value):  # words: "SomeSetting", "some-value"
        return False
    if value.startswith(("/", "./", "../", "http://", "https://", "file:")):
        return False
    has_digit = any(c.isdigit() for c in value)
    classes = has_digit + any(c.islower() for c in value) + any(c.isupper() for c in value) + \
        any(not c.isalnum() for c in value)
    if classes < 2:
        return False
    entropy = shannon_entropy(value)
    if not (has_digit or len(value) >= 12 or entropy >= min_entropy + 0.5):  # "#bygroup", "Release!"
        return False
    return entropy >= min_entropy


_PEM_BODY = r"""(?:[A-Za-z0-9+/=\s"'\\,]|Proc-Type:[^\n]*|DEK-Info:[^\n]*)"""
_B = r"(?<![A-Za-z0-9_])"  # no identifier character before
_E = r"(?![A-Za-z0-9_])"  # ... or after

#: provider tokens: fixed shapes, no further checks needed
TOKEN_RULES: list[SecretRule] = [
    SecretRule("aws_access_key", _B + r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}" + _E,
               needles=("AKIA", "ASIA", "ABIA", "ACCA", "A3T")),
    SecretRule("aws_secret_key", r"(?i:aws)[\w\-. ]{0,25}?(?i:secret|key|token|pwd|pass)\w*\W{0,4}\s*(?:[:=]|=>|,)\s*"
               r"[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])", group=1, needles=("aws",),
               check=lambda v: shannon_entropy(v) >= 3.5),
    SecretRule("github_token", _B + r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}" + _E,
               needles=("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    SecretRule("github_token", _B + r"github_pat_[A-Za-z0-9_]{22,255}" + _E, needles=("github_pat_",)),
    SecretRule("gitlab_token", _B + r"glpat-[A-Za-z0-9_\-]{20,}", needles=("glpat-",)),
    SecretRule("slack_token", _B + r"xox[abposr]-(?:\d+-)+[A-Za-z0-9\-]+", needles=("xox",)),
    SecretRule("slack_webhook", r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+",
               needles=("hooks.slack.com",)),
    SecretRule("stripe_key", _B + r"(?:sk|rk)_live_[0-9a-zA-Z]{24,}", needles=("_live_",)),
    SecretRule("google_api_key", _B + r"AIza[0-9A-Za-z_\-]{35}" + _E, needles=("AIza",)),
    SecretRule("openai_key", _B + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}T3BlbkFJ[A-Za-z0-9_\-]{20,}",
               needles=("T3BlbkFJ",)),
    SecretRule("anthropic_key", _B + r"sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_\-]{80,}", needles=("sk-ant-",)),
    SecretRule("huggingface_token", _B + r"hf_[A-Za-z]{34}" + _E, needles=("hf_",),
               check=lambda v: shannon_entropy(v) >= 3.5),
    SecretRule("npm_token", _B + r"npm_[A-Za-z0-9]{36}" + _E, needles=("npm_",)),
    SecretRule("pypi_token", _B + r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}", needles=("pypi-AgEI",)),
    SecretRule("sendgrid_key", _B + r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}" + _E, needles=("SG.",)),
    SecretRule("twilio_key", _B + r"SK[0-9a-f]{32}" + _E, needles=("SK",),
               check=lambda v: shannon_entropy(v) >= 3.3),
    SecretRule("telegram_token", _B + r"\d{8,10}:AA[0-9A-Za-z_\-]{33}" + _E, needles=(":AA",)),
    SecretRule("azure_storage_key", r"AccountKey=([A-Za-z0-9+/]{86}==)", group=1, needles=("AccountKey=",)),
    SecretRule("jwt", _B + r"eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}", needles=("eyJ",)),
]

_PEM_HEADER = r"-----BEGIN[A-Z0-9 ]{0,30} PRIVATE KEY(?: BLOCK)?-----"
_PEM_END = r"-----END[A-Z0-9 ]{0,30} PRIVATE KEY(?: BLOCK)?-----"
#: without its END line (a truncated file): the header and the base64 lines that follow it
_PEM_LINES = r"(?:[ \t]*(?:\\n|\r?\n)[ \t\"']*[A-Za-z0-9+/=]{16,}[\"',]*)+"
PRIVATE_KEY_RULE = SecretRule(
    "private_key",
    _PEM_HEADER + r"(?:(" + _PEM_BODY + r"{64,65536}?)" + _PEM_END + r"|(" + _PEM_LINES + r"))",
    needles=("PRIVATE KEY",),
)

#: words that name a credential; matched where the name ends, right before the assignment (``db_password =``)
_SECRET_NAME = (r"(?:password|passwd|passphrase|pwd|secret(?:[_\-]?key)?|api[_\-]?key|apikey|access[_\-]?key|"
                r"auth[_\-]?token|access[_\-]?token|refresh[_\-]?token|bearer[_\-]?token|client[_\-]?secret|"
                r"private[_\-]?key|secret[_\-]?token|credentials?|token)")
#: ``name = "value"``, ``"name": "value"``, ``name: 'value'``, ``--name="value"``, ``name => "value"``
ASSIGNED_RULE = SecretRule(
    "assigned",
    r"(?i:" + _SECRET_NAME + r")[\"']?\s*(?:[:=]|:=|=>|==|\+=)\s*[rbuf]?([\"'])([^\"'\s\\]{8,200})\1",
    group=2,
    # every name above contains one of these ("key" alone is far too common in code to be a needle)
    needles=("pass", "pwd", "secret", "api_key", "api-key", "apikey", "access_key", "access-key", "accesskey",
             "private_key", "private-key", "privatekey", "token", "credential"),
    window=(16, 260),  # longest name start before a needle ("refresh_" + "token"), value up to 200 characters
)
#: ``NAME=value`` without quotes, in configuration and shell files only
UNQUOTED_RULE = SecretRule(
    "assigned",
    r"(?m)^[ \t]*(?:export[ \t]+)?[\"']?[A-Za-z0-9_.\-]{0,40}?(?i:" + _SECRET_NAME +
    r")[\"']?[ \t]*[:=][ \t]*([^\s\"'#;,]{8,200})[ \t]*$",
    group=1,
    needles=("pass", "pwd", "secret", "key", "token", "credential"),
)
UNQUOTED_LANGUAGES = frozenset({"INI", "TOML", "YAML", "Shell", "Dockerfile", "Makefile", "Text", "Properties",
                                "HCL", "PowerShell", "Batchfile", None})
URL_PASSWORD_RULE = SecretRule(  # scheme://user:password@host (starts at the literal "://", which is fast to find)
    "password", r"://[^:/\s\"'@]{1,64}:([^@/\s\"']{3,128})@[A-Za-z0-9.\-\[]", group=1, needles=("://",),
)

_IPV4_HINT = re.compile(r"\.\d{1,3}\.\d{1,3}\.")  # every dotted quad has ".d.d." inside
_IPV6_HINT = re.compile(r"::|:[0-9A-Fa-f]{1,4}:")  # every IPv6 address has "::" or ":h:" inside
#: ... and a public one (2000::/3, the only ones replaced) starts "2xxx:" or "3xxx:"; IPv4-mapped ones hold a
#: dotted quad, found by the IPv4 hint
_IPV6_PUBLIC_HINT = re.compile(r"[23][0-9A-Fa-f]{0,3}:[0-9A-Fa-f]{0,4}:")
#: x@domain. with x a character an email's local part may end with (a decorator has none before its "@")
_EMAIL_HINT = re.compile(r"@(?<=[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]@)[A-Za-z0-9\-]+\.")


def _always(text: str) -> bool:
    return True


#: necessary conditions for a PII type to be present (the pii module's checks are costly on code, where "@",
#: dots and colons are everywhere); literal-led patterns that the regex engine scans fast
_PII_PRECHECK: dict[str, Callable[[str], bool]] = {
    "email": lambda t: "@" in t and _EMAIL_HINT.search(t) is not None,
    "ip_address": lambda t: _IPV4_HINT.search(t) is not None or (
        _IPV6_HINT.search(t) is not None and _IPV6_PUBLIC_HINT.search(t) is not None),
}

DEFAULT_PLACEHOLDERS: dict[str, str] = {
    "private_key": "<PRIVATE_KEY>",
    "password": "<PASSWORD>",
    "secret": "<SECRET>",
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
}
KEY_PLACEHOLDER = "<KEY>"


class SecretRedactor:
    """Detection and replacement, usable on plain strings (the step wraps it)."""

    def __init__(self, placeholders: dict[str, str] | None = None, min_entropy: float = 3.0,
                 pii_types: list[str] | None = None) -> None:
        self.placeholders = {**DEFAULT_PLACEHOLDERS, **(placeholders or {})}
        self.min_entropy = min_entropy
        # one redactor per PII type, each run only when a cheap necessary condition holds for the text
        self.pii: list[tuple[Callable[[str], bool], Any]] = []
        if pii_types:
            from assay.harvest.pii import PiiRedactor

            for t in pii_types:
                # only public IPs are replaced (the prechecks rely on it)
                redactor = PiiRedactor(types=[t], replacements={t: self.placeholder(t)}, only_public_ips=True)
                self.pii.append((_PII_PRECHECK.get(t, _always), redactor))

    def placeholder(self, kind: str) -> str:
        return self.placeholders.get(kind, self.placeholders.get("key", KEY_PLACEHOLDER))

    def find(self, text: str, language: str | None = None) -> list[tuple[int, int, str]]:
        """Spans ``(start, end, kind)`` of secrets in ``text``, non-overlapping, in order."""
        lower = text.lower()
        spans: list[tuple[int, int, str]] = []
        if PRIVATE_KEY_RULE.applies(text, lower):
            for m in PRIVATE_KEY_RULE.regex.finditer(text):
                body = m.group(1) if m.group(1) is not None else m.group(2)
                if sum(c.isalnum() for c in body) >= 64:
                    spans.append((m.start(), m.end(), "private_key"))
        for rule in TOKEN_RULES:
            if not rule.applies(text, lower):
                continue
            for m in rule.finditer(text, lower):
                value = text[m.start(rule.group):m.end(rule.group)]
                if rule.check is None or rule.check(value):
                    spans.append((m.start(rule.group), m.end(rule.group), rule.kind))
        rules = [ASSIGNED_RULE, URL_PASSWORD_RULE]
        if language in UNQUOTED_LANGUAGES:
            rules.append(UNQUOTED_RULE)
        for rule in rules:
            if not rule.applies(text, lower):
                continue
            for m in rule.finditer(text, lower):
                value = text[m.start(rule.group):m.end(rule.group)]
                if not plausible_secret(value, self.min_entropy):
                    continue
                kind = rule.kind
                if kind == "assigned":
                    name = lower[m.start(0):m.start(rule.group)]
                    kind = "password" if ("pass" in name or "pwd" in name) else "secret"
                spans.append((m.start(rule.group), m.end(rule.group), kind))
        return _non_overlapping(spans)

    def redact(self, text: str, language: str | None = None) -> tuple[str, dict[str, int]]:
        """``text`` with secrets replaced, and the number of replacements per type."""
        counts: Counter = Counter()
        spans = self.find(text, language)
        if spans:
            parts: list[str] = []
            last = 0
            for start, end, kind in spans:
                parts.append(text[last:start])
                parts.append(self.placeholder(kind))
                counts[kind] += 1
                last = end
            parts.append(text[last:])
            text = "".join(parts)
        for precheck, redactor in self.pii:
            if precheck(text):
                text, pii_counts = redactor.redact(text)
                counts.update(pii_counts)
        return text, dict(counts)


def _non_overlapping(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Keep the earliest-starting (then longest) span of overlapping ones."""
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    out: list[tuple[int, int, str]] = []
    for s in spans:
        if out and s[0] < out[-1][1]:
            continue
        out.append(s)
    return out


class CodeSecretsParams(StepParams):
    #: placeholder per type (``key`` sets the one for provider tokens)
    placeholders: dict[str, str] = Field(default_factory=dict)
    #: minimal Shannon entropy (bits per character) of an assigned password/secret
    min_entropy: float = Field(3.0, ge=0, le=8)
    #: PII types replaced too (see the ``pii`` step): emails and public IP addresses, as BigCode's pipeline
    pii_types: list[str] = Field(default_factory=lambda: ["email", "ip_address"])


class CodeSecrets(Step):
    """Replace API keys, tokens, private keys, passwords, emails and IP addresses in code with placeholders."""

    name = "code_secrets"
    version = "1"
    Params: ClassVar = CodeSecretsParams

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        p: CodeSecretsParams = self.params  # type: ignore[assignment]
        self.redactor = SecretRedactor(dict(p.placeholders), p.min_entropy, list(p.pii_types))

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        for record in batch:
            if record.drop is not None:
                continue
            if not isinstance(record.content, str):
                self.count("secrets.skipped_non_text")
                continue
            record.content, counts = self.redactor.redact(record.content, record.meta.get("language"))
            for kind, n in counts.items():
                record.signals[f"secrets.{kind}"] = n
                self.count(f"secrets.{kind}", n)
            if counts:
                self.count("secrets.records_changed")
        return batch
