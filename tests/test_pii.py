"""The ``pii`` step: replacements with checksums, and the false positives it must not make."""

from __future__ import annotations

import ast
import re
import sys
import time
from pathlib import Path

import pytest
import stdnum
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import luhn as ref_luhn
from stdnum.iban import is_valid as ref_iban_is_valid
from stdnum.iso7064 import mod_97_10

from assay.core.record import Record
from assay.core.step import REGISTRY, StepContext
from assay.harvest.pii import IBAN_LENGTHS, Pii, PiiRedactor, iban_valid, luhn_valid

redact = PiiRedactor().redact

VALID_CARDS = {
    "visa": "4111 1111 1111 1111",
    "visa2": "4012888888881881",
    "mastercard": "5555-5555-5555-4444",
    "mastercard2": "5105 1051 0510 5100",
    "amex": "3782 822463 10005",
    "discover": "6011111111111117",
    "jcb": "3530111333300000",
    "diners": "30569309025904",
}
VALID_IBANS = {
    "DE": "DE89 3704 0044 0532 0130 00",
    "GB": "GB82 WEST 1234 5698 7654 32",
    "FR": "FR14 2004 1010 0505 0001 3M02 606",
    "NL": "NL91ABNA0417164300",
    "BE": "BE71 0961 2345 6769",
    "CH": "CH93 0076 2011 6238 5295 7",
}


def flip_last_digit(number: str) -> str:
    last = number.rstrip()[-1]
    return number[:-1] + str((int(last) + 1) % 10)


# -- checksums, cross-checked with python-stdnum ----------------------------------------------------------------
@given(st.text(alphabet="0123456789", min_size=2, max_size=25))
def test_luhn_agrees_with_stdnum(digits):
    assert luhn_valid(digits) == ref_luhn.is_valid(digits)


@given(st.sampled_from(sorted(IBAN_LENGTHS)), st.data())
@settings(max_examples=300)
def test_iban_checksum_agrees_with_stdnum_mod97(country, data):
    length = IBAN_LENGTHS[country]
    body = data.draw(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=length - 4,
                             max_size=length - 4))
    # half the time, give it the right check digits so valid cases are exercised too
    if data.draw(st.booleans()):
        check = 98 - int(mod_97_10.checksum(body + country + "00"))
        candidate = f"{country}{check:02d}{body}"
    else:
        candidate = f"{country}{data.draw(st.integers(0, 99)):02d}{body}"
    assert iban_valid(candidate) == mod_97_10.is_valid(candidate[4:] + candidate[:4])


def test_iban_lengths_match_the_registry_shipped_with_stdnum():
    registry = {}
    for line in (Path(stdnum.__file__).parent / "iban.dat").read_text().splitlines():
        m = re.match(r'([A-Z]{2}) country=".*?" bban="(.*?)"', line)
        if m:
            registry[m.group(1)] = 4 + sum(int(x) for x in re.findall(r"(\d+)!?[nac]", m.group(2)))
    assert IBAN_LENGTHS == registry


@pytest.mark.parametrize("country", sorted(VALID_IBANS))
def test_known_ibans_valid_and_one_changed_digit_invalid(country):
    compact = VALID_IBANS[country].replace(" ", "")
    assert ref_iban_is_valid(compact) and iban_valid(compact)
    broken = flip_last_digit(compact)
    assert not ref_iban_is_valid(broken) and not iban_valid(broken)


# -- replacement ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(VALID_CARDS))
def test_credit_cards_valid_replaced_invalid_kept(name):
    number = VALID_CARDS[name]
    assert ref_luhn.is_valid(re.sub(r"\D", "", number))
    text, counts = redact(f"Paid with card {number} yesterday.")
    assert text == "Paid with card <CREDIT_CARD> yesterday." and counts == {"credit_card": 1}
    wrong = flip_last_digit(number)
    text, counts = redact(f"Paid with card {wrong} yesterday.")
    assert wrong in text and counts == {}


@pytest.mark.parametrize("country", sorted(VALID_IBANS))
def test_ibans_valid_replaced_invalid_kept(country):
    iban = VALID_IBANS[country]
    text, counts = redact(f"Please transfer to {iban}, BIC ABCDEFGH, by Friday.")
    assert text == "Please transfer to <IBAN>, BIC ABCDEFGH, by Friday." and counts == {"iban": 1}
    wrong = flip_last_digit(iban)
    text, counts = redact(f"Please transfer to {wrong} by Friday.")
    assert "<IBAN>" not in text and wrong.split()[0] in text


def test_iban_followed_by_more_capitals_is_cut_at_its_length():
    text, counts = redact("IBAN DE89370400440532013000 BIC COBADEFFXXX")
    assert text == "IBAN <IBAN> BIC COBADEFFXXX" and counts == {"iban": 1}


def test_emails():
    text, counts = redact("Write to john.doe+news@mail.example.co.uk or ADMIN@Example.ORG today.")
    assert text == "Write to <EMAIL> or <EMAIL> today." and counts == {"email": 2}
    text, counts = redact("Ping @alice and @bob @ noon; a@example.com,b@example.org;c@example.net")
    assert text == "Ping @alice and @bob @ noon; <EMAIL>,<EMAIL>;<EMAIL>" and counts == {"email": 3}
    kept = "Retina images: logo@2x.png and icon@3x.jpg; decorators like @property; user@localhost"
    assert redact(kept) == (kept, {})


PY_DOC_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")  # the Python manual's reST (python3-doc, PSF)
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
#: packages of this virtualenv whose every .py file is redacted (BSD-3-Clause, Apache-2.0, MIT); numpy's linalg has
#: `#@pytest.mark.slow`, its random tests 19-digit seeds
REAL_PACKAGES = ("flask", "click", "werkzeug", "jinja2", "requests", "urllib3", "attr", "attrs", "rich",
                 "numpy/linalg", "numpy/random")
_DECORATOR_REF = re.compile(r"`+@[A-Za-z_][\w.]*")


def test_only_the_address_is_replaced_in_code_and_docs():
    """The user's cases: the quotes around an address and decorator references in docs were eaten."""
    code = "SMTPHandler(fromaddr='a@example.com', toaddrs=['b@example.com'])"
    assert redact(code) == ("SMTPHandler(fromaddr='<EMAIL>', toaddrs=['<EMAIL>'])", {"email": 2})
    docs = ("Decorate it with `@click.command()`, or ``@app.route('/')``; see :func:`@dataclass <dataclasses.dataclass>`"
            " and `@click.group`.\n#@pytest.mark.slow\ny = L@D@L.conjugate().T\n"
            "Archive: https://mail.python.org/archives/list/python-dev@python.org/message/X/")
    text, counts = redact(docs)
    assert text == docs.replace("python-dev@python.org", "<EMAIL>") and counts == {"email": 1}


def test_decorator_references_in_the_python_manual_survive():
    sources = sorted(PY_DOC_SOURCES.rglob("*.rst.txt"))
    assert len(sources) > 400, "the Python manual's sources are missing: run `make system-deps` as root"
    refs = emails = 0
    for path in sources:
        text = path.read_text(encoding="utf-8")
        out, counts = redact(text)
        assert _DECORATOR_REF.findall(out) == _DECORATOR_REF.findall(text), path
        refs += len(_DECORATOR_REF.findall(text))
        emails += counts.get("email", 0)
    assert refs > 30 and emails > 100  # the manual has both, and its addresses are still found


def test_python_files_of_real_packages_still_parse_after_redaction():
    checked = changed = 0
    for package in REAL_PACKAGES:
        for path in sorted((SITE / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            try:
                ast.parse(text)
            except SyntaxError:
                continue  # only code that parsed before is held to parse after
            out, counts = redact(text)
            ast.parse(out, filename=str(path))
            checked += 1
            changed += bool(counts)
    assert checked > 200 and changed >= 3, (checked, changed)


def test_ip_addresses_public_replaced_private_kept():
    text, counts = redact("Hosts 93.184.216.34 and 2001:4860:4860::8888, router 192.168.1.1, local 127.0.0.1, ::1, "
                          "doc range 2001:db8::1, and fe80::1ff:fe23:4567:890a; resolver 8.8.8.8.")
    assert text == ("Hosts <IP_ADDRESS> and <IP_ADDRESS>, router 192.168.1.1, local 127.0.0.1, ::1, "
                    "doc range 2001:db8::1, and fe80::1ff:fe23:4567:890a; resolver 8.8.8.8.")
    assert counts == {"ip_address": 2}  # single-digit-part addresses are kept: see the module docstring
    text, counts = PiiRedactor(only_public_ips=False).redact("router 192.168.1.1 and ::1")
    assert text == "router <IP_ADDRESS> and <IP_ADDRESS>" and counts == {"ip_address": 2}


def test_ipv4_at_end_of_sentence():
    assert redact("My address is 93.184.216.34.") == ("My address is <IP_ADDRESS>.", {"ip_address": 1})


def test_phone_numbers():
    text, counts = redact("Call +1 (555) 123-4567, 555-123-4567, +44 20 7946 0958, +33 6 12 34 56 78, "
                          "1-800-555-0199 or 06 12 34 56 78.")
    assert text == "Call <PHONE>, <PHONE>, <PHONE>, <PHONE>, <PHONE> or <PHONE>."
    assert counts == {"phone": 6}


@pytest.mark.parametrize("text", [
    "Upgrade to version 1.2.3.4 now; v2.0.1.7 and release 10.0.0.7 and build 1.1.1.1 too.",
    "Sections 1.2.3.4.5 and 3.1.4.1.5.9 of the spec.",
    "4.8.1.2. Virtual environments\n\nInstalled novas-3.1.1.3 with zlib 1.2.3.5 (Z_RLE since zlib 1.2.0.1).",
    "Python 3.11.7 on 2023-01-15 at 12:30:45, see RFC 2616.",
    "Prices: $1,234,567.89 and €12.50; pi = 3.14159265358979; x = [1, 2, 3, 4]",
    "ISBN 978-3-16-148410-0, order #123456789012, zip 90210-1234, tracking 1Z999AA10123456784",
    "std::vector<int> v; a::b::c; dead::beef; MAC 00:1a:2b:3c:4d:5e; 10:15:20",
    "Coordinates 48.8566, 2.3522; population 67,390,000; the years 1999 and 2000-2010.",
    "Credit card test string 0000 0000 0000 0000 and 1234 5678 9012 3456.",
])
def test_no_false_positives(text):
    assert redact(text) == (text, {})


def test_custom_placeholders_and_types():
    r = PiiRedactor(types=["email"], replacements={"email": "[mail]"})
    assert r.redact("a@b.example and 8.8.8.8") == ("[mail] and 8.8.8.8", {"email": 1})
    with pytest.raises(ValueError):
        PiiRedactor(types=["passport"])


def test_step_counts_and_signals():
    step = Pii()
    assert REGISTRY.get("pii") is Pii
    batch = [
        Record("a", "mail x@example.com and y@example.com, card 4111111111111111"),
        Record("b", "nothing here"),
        Record("c", {"messages": []}, "conversation"),
    ]
    out = step.process_batch(batch, StepContext())
    assert out[0].content == "mail <EMAIL> and <EMAIL>, card <CREDIT_CARD>"
    assert out[0].signals == {"pii.email": 2, "pii.credit_card": 1}
    assert out[1].signals == {} and out[1].content == "nothing here"
    assert step.stats.counters == {"pii.email": 2, "pii.credit_card": 1, "pii.skipped_non_text": 1}


def test_params_validation():
    with pytest.raises(ValueError):
        Pii(types=["ssn"])
    with pytest.raises(ValueError):
        Pii(replacements={"ssn": "<SSN>"})
    assert Pii(replacements={"phone": "[tel]"}).redactor.redact("+44 20 7946 0958")[0] == "[tel]"


@pytest.mark.parametrize("hostile", [
    "a" * 1_000_000 + "@",
    "a." * 500_000 + "@x",
    "1" * 1_000_000,
    "1." * 500_000,
    "1 " * 500_000,
    "1-" * 500_000,
    "a:" * 500_000 + "1",
    "+1 " * 300_000,
    "DE12 " * 200_000,
])
def test_hostile_inputs_are_linear(hostile):
    started = time.perf_counter()
    redact(hostile)
    assert time.perf_counter() - started < 3.0
