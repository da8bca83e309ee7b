"""The CITV manifest and chunk layouts: round trips, strict parsing, keys and nonces."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.volume import VolumeError, VolumeWrongKey
from citadel.volume.format import (
    BODY_HEADER,
    HOLE,
    MANIFEST_HEADER,
    FileRecord,
    ManifestState,
    chunk_aad,
    chunk_count,
    chunk_length,
    chunk_nonce,
    decode_body,
    encode_body,
    open_manifest,
    parse_key,
    seal_manifest,
    volume_tag,
)

from .conftest import KEY, OTHER_KEY

NAME = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters="/"), min_size=1,
               max_size=8).filter(lambda s: s not in (".", ".."))


@st.composite
def states(draw: st.DrawFn) -> ManifestState:
    chunk_size = draw(st.sampled_from([1, 16, 4096, 65536]))
    segments = draw(st.lists(st.binary(min_size=16, max_size=16), max_size=4, unique=True))
    dirs = sorted(set(draw(st.lists(NAME, max_size=3))))
    files = {}
    for name in draw(st.lists(NAME, max_size=4, unique=True)):
        if name in dirs:
            continue
        path = f"{dirs[0]}/{name}" if dirs and draw(st.booleans()) else name
        size = draw(st.integers(0, 5 * chunk_size))
        refs = [(draw(st.integers(0, len(segments) - 1)) if segments and draw(st.booleans()) else HOLE,
                 draw(st.integers(0, 2**40))) for _ in range(chunk_count(size, chunk_size))]
        refs = [(s, 0 if s == HOLE else o) for s, o in refs]
        files[path] = FileRecord(os.urandom(16), size, draw(st.integers(0, 2**62)), 0o644, refs)
    prev = draw(st.sampled_from(["", hashlib.sha256(b"x").hexdigest()]))
    return ManifestState(os.urandom(16), draw(st.integers(0, 2**63)), prev, chunk_size, segments, dirs, files)


@settings(max_examples=150, deadline=None)
@given(states())
def test_manifest_round_trip(state: ManifestState) -> None:
    sealed = seal_manifest(state, KEY)
    back = open_manifest(sealed, KEY, "test")
    assert back == state
    assert volume_tag(sealed) == hashlib.sha256(sealed).hexdigest()
    assert decode_body(encode_body(state), state.volume_id, state.generation) == state


def test_each_seal_uses_a_fresh_key_and_nonce() -> None:
    state = ManifestState(os.urandom(16), 1, "", 65536, [], [], {})
    a, b = seal_manifest(state, KEY), seal_manifest(state, KEY)
    assert a[: MANIFEST_HEADER.size] != b[: MANIFEST_HEADER.size]
    assert volume_tag(a) != volume_tag(b)


def test_wrong_key_is_one_opaque_error() -> None:
    sealed = seal_manifest(ManifestState(os.urandom(16), 0, "", 65536, [], [], {}), KEY)
    with pytest.raises(VolumeWrongKey):
        open_manifest(sealed, OTHER_KEY, "m")


def test_header_is_authenticated() -> None:
    sealed = bytearray(seal_manifest(ManifestState(os.urandom(16), 7, "", 65536, [], [], {}), KEY))
    sealed[20] ^= 1  # inside the generation field
    with pytest.raises(VolumeWrongKey):
        open_manifest(bytes(sealed), KEY, "m")


@pytest.mark.parametrize("defect, body", [
    ("trailing_bytes", lambda b: b + b"\0"),
    ("truncated", lambda b: b[:-1]),
    ("zero_chunk_size", lambda b: BODY_HEADER.pack(bytes(32), 0, 0, 0, 0)),
])
def test_malformed_bodies_are_refused(defect: str, body: object) -> None:
    state = ManifestState(os.urandom(16), 0, "", 16, [os.urandom(16)], ["d"],
                          {"d/f": FileRecord(os.urandom(16), 20, 0, 0o644, [(0, 0), (0, 32)])})
    raw = body(encode_body(state))  # type: ignore[operator]
    with pytest.raises(ValueError):
        decode_body(raw, state.volume_id, 0)


@pytest.mark.parametrize("defect, state", [
    ("segment_index_out_of_range", ManifestState(b"v" * 16, 0, "", 16, [], [],
                                                 {"f": FileRecord(b"i" * 16, 1, 0, 0o644, [(0, 0)])})),
    ("file_without_its_directory", ManifestState(b"v" * 16, 0, "", 16, [], [],
                                                 {"d/f": FileRecord(b"i" * 16, 0, 0, 0o644, [])})),
    ("dot_dot_path", ManifestState(b"v" * 16, 0, "", 16, [], ["..", "a"], {})),
])
def test_inconsistent_manifests_are_refused(defect: str, state: ManifestState) -> None:
    with pytest.raises(VolumeError):
        open_manifest(seal_manifest(state, KEY), KEY, "m")


def test_chunk_binding_fields_differ() -> None:
    vid, fid = os.urandom(16), os.urandom(16)
    aads = {chunk_aad(vid, fid, 0, False), chunk_aad(vid, fid, 0, True), chunk_aad(vid, fid, 1, False),
            chunk_aad(vid, os.urandom(16), 0, False), chunk_aad(os.urandom(16), fid, 0, False)}
    assert len(aads) == 5
    assert chunk_nonce(0) != chunk_nonce(16) and len(chunk_nonce(2**63)) == 12


def test_chunk_arithmetic() -> None:
    assert chunk_count(0, 10) == 0 and chunk_count(10, 10) == 1 and chunk_count(11, 10) == 2
    assert [chunk_length(i, 25, 10) for i in range(4)] == [10, 10, 5, 0]


def test_key_parsing() -> None:
    assert parse_key(KEY.hex() + "\n") == KEY
    for bad in ("", "zz" * 32, KEY.hex()[:-2]):
        with pytest.raises(VolumeWrongKey):
            parse_key(bad)
