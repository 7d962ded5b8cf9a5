"""Device tokens and enrolment codes: long random secrets, of which only hashes are stored.

A fast hash is right here: the tokens carry 256 bits of randomness, so there is nothing to
guess, and a slow password hash per connect would make a reconnect storm cost minutes of CPU.

An enrolment link carries a one-time code instead of the token. The server keeps the token only
sealed (encrypted) with a key derived from that code, so a copy of the database opens nothing:
whoever holds the code, and only they, can unseal the token.
"""

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken

TOKEN_PREFIX = "tt_"  # lets secret scanners and people recognise a leaked TeamTrack token
# Different prefixes keep the stored lookup hash of a code unrelated to the key that seals the
# token: knowing the hash (from the database) must not give the key.
_ENROLMENT_LOOKUP_DOMAIN = b"teamtrack-enrolment-lookup:"
_ENROLMENT_KEY_DOMAIN = b"teamtrack-enrolment-key:"


def token_generate() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def enrolment_code_generate() -> str:
    return secrets.token_urlsafe(32)


def enrolment_code_hash(code: str) -> str:
    return hashlib.sha256(_ENROLMENT_LOOKUP_DOMAIN + code.encode()).hexdigest()


def token_seal(token: str, *, code: str) -> str:
    """Encrypt a device token so that only the holder of the enrolment code can read it."""
    return _fernet(code).encrypt(token.encode()).decode()


def token_unseal(sealed: str, *, code: str) -> str | None:
    """Return the sealed token, or None if this code does not open it."""
    try:
        return _fernet(code).decrypt(sealed.encode()).decode()
    except InvalidToken:
        return None


def _fernet(code: str) -> Fernet:
    # The code has 256 bits of randomness, so one SHA-256 is a sound key derivation.
    key = hashlib.sha256(_ENROLMENT_KEY_DOMAIN + code.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))
