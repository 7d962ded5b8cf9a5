"""Device tokens: long random secrets, of which only a SHA-256 hash is stored.

A fast hash is right here: the tokens carry 256 bits of randomness, so there is nothing to
guess, and a slow password hash per connect would make a reconnect storm cost minutes of CPU.
"""

import hashlib
import secrets

TOKEN_PREFIX = "tt_"  # lets secret scanners and people recognise a leaked TeamTrack token


def token_generate() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
