"""Tokens and enrolment codes: random, hashed for lookup, sealed with a key only the code gives."""

import hashlib

from teams import tokens


def test_codes_are_long_random_and_url_safe():
    codes = {tokens.enrolment_code_generate() for _ in range(100)}
    assert len(codes) == 100
    assert all(
        len(code) >= 43 and code.replace("-", "").replace("_", "").isalnum() for code in codes
    )


def test_sealing_opens_only_with_its_code():
    code, other = tokens.enrolment_code_generate(), tokens.enrolment_code_generate()
    sealed = tokens.token_seal("tt_secret", code=code)
    assert "tt_secret" not in sealed
    assert tokens.token_unseal(sealed, code=code) == "tt_secret"
    assert tokens.token_unseal(sealed, code=other) is None
    assert tokens.token_unseal("not a sealed token", code=code) is None


def test_the_lookup_hash_is_not_the_sealing_key():
    # Both are SHA-256 of the code, under different prefixes: the stored one must not unseal.
    code = tokens.enrolment_code_generate()
    lookup = tokens.enrolment_code_hash(code)
    key = hashlib.sha256(b"teamtrack-enrolment-key:" + code.encode()).hexdigest()
    assert len(lookup) == 64 and lookup not in (key, tokens.token_hash(code))
    sealed = tokens.token_seal("tt_secret", code=code)
    assert tokens.token_unseal(sealed, code=lookup) is None
