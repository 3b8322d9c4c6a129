"""code_secrets: planted credentials are replaced, ordinary code is left alone; detect-secrets (Yelp) is the
reference for what counts as a secret line."""

from __future__ import annotations

import sys
from pathlib import Path

from assay.core.record import Record
from assay.harvest.code.secrets import CodeSecrets, SecretRedactor, plausible_secret

SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

# a private key made of random base64 (not a real key; the shape is what matters)
PEM_BODY = "\n".join(["MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpF",
                      "oC8oFyeNjj1YyPbeGm1x0vPxqU8KBlR2aDO9ZeaK5kRMsJcyFWuLXBI7XzN0dUk4",
                      "Lq3vAJb4fh6V9aGdxWgHIwO1cT8yMsZrQp2Jf3EHnK4x8PbWvYwmD5tLu7Ra0NcQ"])
PRIVATE_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
AWS_ID = "AKIAQYLPMN5HFIQR7XYZ"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKX"

PLANTED = {
    "aws_access_key": f'AWS_ACCESS_KEY_ID = "{AWS_ID}"',
    "aws_secret_key": f'aws_secret_access_key = "{AWS_SECRET}"',
    "github_token": 'token = "ghp_4fXq8ZrT2mN7vB1cL9kW3pJ6hD0sY5aE2uGi"',
    "slack_token": 'SLACK = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"',
    "stripe_key": 'stripe.api_key = "sk_live_4eC39HqLyjWDarjtT1zdp7dcXYZ"',
    "jwt": 'auth = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"',
    "password": 'db_password = "Xk9#mP2$vL7qR4wZ"',
    "npm_token": 'NPM = "npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"',
}


def redact(text: str, language: str | None = "Python") -> tuple[str, dict[str, int]]:
    return SecretRedactor(pii_types=["email", "ip_address"]).redact(text, language)


def test_planted_aws_key_and_private_key_are_redacted_through_the_step():
    code = (f'import boto3\n\nclient = boto3.client("s3", aws_access_key_id="{AWS_ID}",\n'
            f'                      aws_secret_access_key="{AWS_SECRET}")\n\n'
            f'KEY = """{PRIVATE_KEY}"""\n\ndef main():\n    return client\n')
    r = Record("f", code, "code", {"language": "Python"})
    step = CodeSecrets()
    step.process_batch([r], None)  # type: ignore[arg-type]
    assert AWS_ID not in r.content and AWS_SECRET not in r.content
    assert "PRIVATE KEY" not in r.content and PEM_BODY.splitlines()[1] not in r.content
    assert 'aws_access_key_id="<KEY>"' in r.content and 'KEY = """<PRIVATE_KEY>"""' in r.content
    assert "def main():\n    return client\n" in r.content  # the code around is untouched
    assert r.signals == {"secrets.aws_access_key": 1, "secrets.aws_secret_key": 1, "secrets.private_key": 1}
    assert step.stats.counters["secrets.private_key"] == 1 and step.stats.counters["secrets.records_changed"] == 1


def test_private_key_forms():
    escaped = 'PEM = "-----BEGIN PRIVATE KEY-----\\n' + PEM_BODY.replace("\n", "\\n") + '\\n-----END PRIVATE KEY-----"'
    out, counts = redact(escaped)
    assert out == 'PEM = "<PRIVATE_KEY>"' and counts == {"private_key": 1}
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + PEM_BODY + "\n\nnext = 1\n"
    out, counts = redact(truncated)
    assert out.startswith("<PRIVATE_KEY>") and out.endswith("next = 1\n") and counts == {"private_key": 1}
    # PEM markers as constants in a parser are not a key
    parser = 'BEGIN = "-----BEGIN RSA PRIVATE KEY-----"\nEND = "-----END RSA PRIVATE KEY-----"\n'
    assert redact(parser) == (parser, {})


def test_each_planted_type_is_found_and_replaced():
    for kind, line in PLANTED.items():
        out, counts = redact(line + "\n")
        assert counts == {kind: 1}, (kind, counts, out)
        assert ("<PASSWORD>" if kind == "password" else "<KEY>") in out


def test_emails_and_public_ips_through_pii_module():
    out, counts = redact('__author_email__ = "jane.doe@example.org"\nHOST = "93.184.216.34"\nLOCAL = "127.0.0.1"\n')
    assert counts == {"email": 1, "ip_address": 1}
    assert "<EMAIL>" in out and "<IP_ADDRESS>" in out and "127.0.0.1" in out


def test_ordinary_code_is_left_alone():
    code = '''
password = input("Password: ")
token = get_token(user)
api_key = os.environ["API_KEY"]
secret = "changeme"
PASSWORD_FIELD = "password_confirmation"
TOKEN_TYPE = "bearer_token_type"
hash = "d41d8cd98f00b204e9800998ecf8427e"
url = "https://user:${PASSWORD}@host/db"
sha = "3f786850e387550fdab836ed7e6dc881de23001b"
version_key = "v1.2.3-beta"
'''
    assert redact(code) == (code, {})
    assert not plausible_secret("my_module.settings") and not plausible_secret("SomeSettingName")
    assert not plausible_secret("#bygroup")  # jinja2's lexer: token == "#bygroup"
    assert plausible_secret("Xk9#mP2$vL7qR4wZ")


def test_unquoted_values_only_in_config_languages():
    env = "DATABASE_PASSWORD=Xk9mP2vL7qR4wZ8n\nDEBUG=true\n"
    out, counts = redact(env, "Shell")
    assert out == "DATABASE_PASSWORD=<PASSWORD>\nDEBUG=true\n" and counts == {"password": 1}
    py = "DATABASE_PASSWORD = compute_password_value_from_settings\n"
    assert redact(py, "Python") == (py, {})


def _our_flagged_lines(text: str) -> set[int]:
    """1-based numbers of the lines where a secret of ours starts."""
    return {text.count("\n", 0, start) + 1 for start, _, _ in SecretRedactor(pii_types=[]).find(text, "Python")}


def test_flagged_lines_agree_with_detect_secrets_on_planted_and_real_code(tmp_path: Path):
    """detect-secrets' own file scan (as `detect-secrets scan` runs it) and ours flag the same lines: every planted
    secret, and nothing in real library code."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    planted = tmp_path / "config.py"
    planted.write_text("\n".join(PLANTED.values()) + f'\nKEY = """{PRIVATE_KEY}"""\n')
    files = [planted]
    if SITE.is_dir():
        files += [p for p in sorted((SITE / "requests").rglob("*.py")) if p.stat().st_size < 30_000]
    with default_settings():
        found = SecretsCollection()
        for f in files:
            found.scan_file(str(f))
    theirs = {(Path(name).resolve(), s.line_number) for name, s in found}
    ours = {(f.resolve(), line) for f in files for line in _our_flagged_lines(f.read_text(errors="replace"))}
    assert len({line for f, line in theirs if f == planted.resolve()}) == len(PLANTED) + 1
    assert ours == theirs


def test_pii_prechecks_never_hide_what_the_pii_module_finds():
    """Emails and IPs are only looked for when a cheap necessary condition holds: the counts must equal the pii
    module's own on real code with planted addresses."""
    from assay.harvest.pii import PiiRedactor

    planted = ("contact = 'jane.o+x@mail.example.co.uk'\n@decorator.attr\n"
               "HOSTS = ['93.184.216.34', '2001:db8:85a3::8a2e:370:7334', '2606:4700:4700::1111']\n"
               "version = '1.2.3.4'\nslice = a[1:2:3]\n")
    texts = [planted] + [p.read_text(errors="replace") for pkg in ("requests", "urllib3", "email_validator", "idna")
                         for p in sorted((SITE / pkg).rglob("*.py"))]
    ours = SecretRedactor(pii_types=["email", "ip_address"])
    ref = PiiRedactor(types=["email", "ip_address"])
    for text in texts:
        got = {k: v for k, v in ours.redact(text, "Python")[1].items() if k in ("email", "ip_address")}
        assert got == ref.redact(text)[1]
    # 2001:db8::/32 is the documentation range: not a public address
    assert ours.redact(planted, "Python")[1] == {"email": 1, "ip_address": 2}
