"""The text form of an image key (stdlib only, so the CLI can check a key without loading crypto)."""

from __future__ import annotations

from citadel.errors import WrongKey

KEY_SIZE = 32


def parse_key(text: str) -> bytes:
    """An image key as written by `citadel seal`: 64 hex digits (surrounding space ignored)."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        raise WrongKey("the image key is not 64 hex digits", "pass the key file written by `citadel seal --key-out`")
    return key
