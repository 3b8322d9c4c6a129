"""Ed25519 key pairs for publishers and reviewers: generate, save, load, and name them.

* A key's id is the first 16 hex digits of the SHA-256 of its 32-byte raw public key: short enough to print, long
  enough (64 bits) that two keys of one deployment never collide by accident.
* Private keys are written as PKCS#8 PEM with mode 0600 (created with that mode, never world-readable for an
  instant), optionally encrypted with a passphrase; public keys as SubjectPublicKeyInfo PEM next to them (``.pub``).
* Public keys travel as raw 32 bytes in code (``dict[key_id, bytes]``), and are accepted from PEM, hex or base64
  text when a user hands one over (:func:`parse_public_key`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PURPOSES = ("publisher", "reviewer")
ALL_PURPOSES = ("root", *PURPOSES)   # a root key certifies the others and is never registered to a user


class KeyFileError(ValueError):
    """A key file or key text that cannot be used (wrong type, damaged, wrong passphrase)."""


def key_dir() -> Path:
    """Where key files live by default: ``$ASSAY_HOME/keys``, ``ASSAY_HOME`` defaulting to ``~/.assay``."""
    return Path(os.environ.get("ASSAY_HOME") or "~/.assay").expanduser() / "keys"


def resolve_key_path(path: str | Path) -> Path:
    """``path`` as given when it exists or names a folder; a bare file name that does not exist here is looked up
    in :func:`key_dir` (so ``--key rita.key.pub`` finds what ``keygen`` wrote)."""
    p = Path(path).expanduser()
    if p.exists() or p.parent != Path("."):
        return p
    return key_dir() / p


def generate() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the operating system's random source."""
    return Ed25519PrivateKey.generate()


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The 32-byte raw public key of a private or public key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey | bytes) -> str:
    """sha256(raw public key) as hex, first 16 digits."""
    raw = key if isinstance(key, bytes) else raw_public(key)
    if len(raw) != 32:
        raise KeyFileError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
    return hashlib.sha256(raw).hexdigest()[:16]


def public_from_raw(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != 32:
        raise KeyFileError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey | bytes) -> str:
    pub = public_from_raw(key) if isinstance(key, bytes) else (
        key.public_key() if isinstance(key, Ed25519PrivateKey) else key)
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _write_private(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)  # in case the umask or the filesystem widened it


def save(key: Ed25519PrivateKey, path: str | Path, *, passphrase: bytes | None = None,
         overwrite: bool = False) -> tuple[Path, Path]:
    """Write the private key (PEM, 0600) to ``path`` and the public key to ``path + '.pub'``; returns both paths.
    An existing file is refused unless ``overwrite`` (losing a publisher key cannot be undone)."""
    path = Path(path).expanduser()
    pub_path = path.with_name(path.name + ".pub")
    if not overwrite and (path.exists() or pub_path.exists()):
        raise FileExistsError(f"{path} or {pub_path} exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    if overwrite and path.exists():
        path.unlink()
    _write_private(path, pem)
    pub_path.write_text(public_pem(key), encoding="ascii")
    return path, pub_path


def load_private(path: str | Path, *, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Read a private key written by :func:`save` (or any PKCS#8 / OpenSSH Ed25519 PEM)."""
    data = Path(path).expanduser().read_bytes()
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY"):
            key = serialization.load_ssh_private_key(data, passphrase)
        else:
            key = serialization.load_pem_private_key(data, passphrase)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: cannot read the private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def parse_public_key(text: str | bytes) -> bytes:
    """Raw public key bytes from PEM, 64 hex digits, or base64 of the 32 bytes."""
    if isinstance(text, bytes):
        if len(text) == 32:
            return text
        text = text.decode("ascii", "replace")
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            pub = serialization.load_pem_public_key(text.encode("ascii"))
        except ValueError as e:
            raise KeyFileError(f"cannot read the public key PEM ({e})") from None
        if not isinstance(pub, Ed25519PublicKey):
            raise KeyFileError(f"not an Ed25519 public key ({type(pub).__name__})")
        return raw_public(pub)
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError("a public key must be PEM, 64 hex digits or base64 of 32 bytes") from None
    if len(raw) != 32:
        raise KeyFileError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
    return raw


def load_public(path: str | Path) -> bytes:
    """Raw public key bytes from a file (PEM, hex or base64); a private key file gives its public half."""
    data = Path(path).expanduser().read_bytes()
    if b"PRIVATE KEY" in data:
        return raw_public(load_private(path))
    return parse_public_key(data)
