"""Round trips and tamper checks of the image format: CITF files, the CITM manifest, SealedImage.

The format promises that any change to a sealed file's bytes, its name, or the set of files is
refused with TamperedImage naming the path, and that any key but the right one is WrongKey.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citadel.crypto import GCM_TAG_SIZE, KEY_SIZE
from citadel.errors import ImageError, TamperedImage, WrongKey
from citadel.seal.format import (
    AUTHENTICATED,
    ENCRYPTED,
    FILE_HEADER,
    MANIFEST_HEADER,
    MANIFEST_PATH,
    REGIONS,
    UNPROTECTED,
    FileEntry,
    Manifest,
    chunk_count,
    decrypt_file,
    encrypt_chunks,
    image_tag,
    open_manifest,
    parse_key,
    seal_manifest,
)
from citadel.seal.image import SealedImage
from citadel.seal.sealer import seal_tree

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEY = bytes(range(32))
FILE_ID = b"F" * 16


def pieces(data: bytes, chunk_size: int) -> Iterator[bytes]:
    if not data:
        yield b""
    for start in range(0, len(data), chunk_size):
        yield data[start : start + chunk_size]


def citf(data: bytes, chunk_size: int, key: bytes = KEY, file_id: bytes = FILE_ID) -> bytes:
    return b"".join(encrypt_chunks(key, file_id, len(data), pieces(data, chunk_size), chunk_size))


# --- CITF -------------------------------------------------------------------------------------------
@FAST
@given(data=st.binary(max_size=3000), chunk_size=st.integers(min_value=1, max_value=700))
def test_citf_round_trip(data: bytes, chunk_size: int) -> None:
    sealed = citf(data, chunk_size)
    chunks = chunk_count(len(data), chunk_size)
    assert len(sealed) == FILE_HEADER.size + len(data) + chunks * GCM_TAG_SIZE
    assert decrypt_file(sealed, KEY, FILE_ID, len(data)) == data


@FAST
@given(data=st.binary(min_size=1, max_size=800), chunk_size=st.integers(1, 200), where=st.data())
def test_citf_any_flipped_bit_is_refused(data: bytes, chunk_size: int, where: st.DataObject) -> None:
    sealed = bytearray(citf(data, chunk_size))
    index = where.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= 1 << where.draw(st.integers(0, 7))
    with pytest.raises(ValueError):
        decrypt_file(bytes(sealed), KEY, FILE_ID, len(data))


@FAST
@given(data=st.binary(max_size=800), chunk_size=st.integers(1, 200), where=st.data())
def test_citf_truncated_or_extended_is_refused(data: bytes, chunk_size: int, where: st.DataObject) -> None:
    sealed = citf(data, chunk_size)
    cut = where.draw(st.integers(0, len(sealed) - 1))
    with pytest.raises(ValueError):
        decrypt_file(sealed[:cut], KEY, FILE_ID, len(data))
    extra = where.draw(st.binary(min_size=1, max_size=64))
    with pytest.raises(ValueError):
        decrypt_file(sealed + extra, KEY, FILE_ID, len(data))


def test_citf_reordered_chunks_are_refused() -> None:
    data = bytes(range(200)) * 3
    sealed = citf(data, 100)
    body = sealed[FILE_HEADER.size :]
    unit = 100 + GCM_TAG_SIZE
    swapped = sealed[: FILE_HEADER.size] + body[unit : 2 * unit] + body[:unit] + body[2 * unit :]
    with pytest.raises(ValueError, match="chunk 0"):
        decrypt_file(swapped, KEY, FILE_ID, len(data))


def test_citf_dropping_the_last_chunk_is_refused_even_with_a_matching_size() -> None:
    # Two sealings of a prefix: the last-chunk flag in the AAD is what catches the cut.
    data = b"a" * 300
    long_form = citf(data, 100)
    cut = long_form[: FILE_HEADER.size + 2 * (100 + GCM_TAG_SIZE)]
    with pytest.raises(ValueError):
        decrypt_file(cut, KEY, FILE_ID, 300)


def test_citf_from_another_file_or_key_is_refused() -> None:
    sealed = citf(b"hello", 64)
    with pytest.raises(ValueError, match="header"):
        decrypt_file(sealed, KEY, b"G" * 16, 5)
    with pytest.raises(ValueError, match="header"):
        decrypt_file(sealed, KEY, FILE_ID, 6)
    with pytest.raises(ValueError, match="authentication"):
        decrypt_file(sealed, bytes(32), FILE_ID, 5)


def test_citf_plaintext_must_match_the_declared_size() -> None:
    with pytest.raises(ValueError, match="declared size"):
        b"".join(encrypt_chunks(KEY, FILE_ID, 10, iter([b"12345"]), 64))
    with pytest.raises(ValueError, match="more plaintext"):
        b"".join(encrypt_chunks(KEY, FILE_ID, 3, iter([b"abc", b"def"]), 3))


# --- CITM -------------------------------------------------------------------------------------------
paths = st.lists(
    st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"), min_size=1, max_size=12
    ),
    min_size=1,
    max_size=3,
).map("/".join)


@st.composite
def entries(draw: st.DrawFn, path: str) -> FileEntry:
    size = draw(st.integers(0, 2**40))
    if draw(st.booleans()):
        return FileEntry(
            path,
            ENCRYPTED,
            size,
            file_id=draw(st.binary(min_size=16, max_size=16)),
            key=draw(st.binary(min_size=32, max_size=32)),
        )
    return FileEntry(path, AUTHENTICATED, size, sha256=draw(st.binary(min_size=32, max_size=32)).hex())


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    names = draw(st.lists(paths, max_size=8, unique=True))
    files = {name: draw(entries(name)) for name in names}
    return Manifest(
        files=files,
        rules=draw(st.lists(st.tuples(paths, st.sampled_from(REGIONS)), max_size=3)),
        python_path=draw(st.lists(paths, max_size=2)),
        chunk_size=draw(st.integers(1, 2**32 - 1)),
        created_by=draw(st.text(max_size=20)),
    )


@FAST
@given(manifest=manifests())
def test_manifest_json_round_trip(manifest: Manifest) -> None:
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest


@FAST
@given(manifest=manifests(), key=st.binary(min_size=32, max_size=32))
def test_sealed_manifest_round_trip(manifest: Manifest, key: bytes) -> None:
    sealed = seal_manifest(manifest, key)
    assert open_manifest(sealed, key) == manifest
    assert seal_manifest(manifest, key) != sealed, "each sealing uses a fresh salt and nonce"


@FAST
@given(manifest=manifests(), where=st.data())
def test_sealed_manifest_any_flipped_bit_is_refused(manifest: Manifest, where: st.DataObject) -> None:
    sealed = bytearray(seal_manifest(manifest, KEY))
    index = where.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= 1 << where.draw(st.integers(0, 7))
    # header fields the parser reads first (magic, version) give ImageError; all else is WrongKey
    with pytest.raises(ImageError):
        open_manifest(bytes(sealed), KEY)


@FAST
@given(manifest=manifests(), other=st.binary(min_size=32, max_size=32))
def test_sealed_manifest_with_another_key_is_wrong_key(manifest: Manifest, other: bytes) -> None:
    if other == KEY:
        return
    with pytest.raises(WrongKey):
        open_manifest(seal_manifest(manifest, KEY), other)


def test_sealed_manifest_truncated_or_not_a_manifest() -> None:
    sealed = seal_manifest(Manifest(files={}), KEY)
    with pytest.raises(ImageError, match="truncated"):
        open_manifest(sealed[: MANIFEST_HEADER.size + GCM_TAG_SIZE - 1], KEY)
    with pytest.raises(ImageError, match="bad magic"):
        open_manifest(b"XXXX" + sealed[4:], KEY)
    with pytest.raises(WrongKey):
        open_manifest(sealed, KEY[:16])


def test_manifest_with_unknown_format_is_an_image_error() -> None:
    for raw in (
        b"not json",
        b'{"format": "other", "version": 1}',
        b'{"format": "citadel-manifest", "version": 1}',
    ):
        with pytest.raises(ImageError, match="malformed"):
            Manifest.from_bytes(raw)


@FAST
@given(key=st.binary(min_size=32, max_size=32), space=st.sampled_from(["", " ", "\n", "\r\n\t"]))
def test_key_text_round_trip(key: bytes, space: str) -> None:
    assert parse_key(space + key.hex() + space) == key
    assert parse_key(key.hex().upper()) == key


@pytest.mark.parametrize("text", ["", "00" * 31, "00" * 33, "zz" * 32, "0" * 63])
def test_key_text_that_is_not_64_hex_digits_is_refused(text: str) -> None:
    with pytest.raises(WrongKey, match="64 hex digits"):
        parse_key(text)


# --- SealedImage: tamper checks ------------------------------------------------------------------
@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """One sealed image (small chunks so files span several), shared read-only by the tests."""
    base = tmp_path_factory.mktemp("pristine")
    src = base / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "static").mkdir()
    (src / "cache").mkdir()
    (src / "main.py").write_bytes(b"print('main')\n" * 40)
    (src / "pkg" / "a.py").write_bytes(b"A" * 700)
    (src / "pkg" / "b.py").write_bytes(b"B" * 700)
    (src / "pkg" / "empty.py").write_bytes(b"")
    (src / "static" / "one.css").write_bytes(b"1" * 300)
    (src / "static" / "two.css").write_bytes(b"2" * 300)
    (src / "cache" / "c.tmp").write_bytes(b"scratch")
    result = seal_tree(
        str(src),
        str(base / "image"),
        chunk_size=128,
        rules=[("static", AUTHENTICATED), ("cache", UNPROTECTED)],
    )
    return base / "image", result.key, result.tag


@pytest.fixture
def image(pristine: tuple, tmp_path: Path) -> tuple:
    """A private copy of the pristine image for one test to damage."""
    root, key, tag = pristine
    copy = tmp_path / "image"
    shutil.copytree(root, copy)
    return copy, key, tag


SEALED = ["main.py", "pkg/a.py", "pkg/b.py", "pkg/empty.py", "static/one.css", "static/two.css"]


def sealed_files(root: Path) -> List[str]:
    return [p for p in SEALED if (root / p).exists()]


def test_the_pristine_image_opens_and_reads(image: tuple) -> None:
    root, key, tag = image
    opened = SealedImage.open(str(root), key, expected_tag=tag)
    assert opened.read("pkg/a.py") == b"A" * 700
    assert opened.read("pkg/empty.py") == b""
    assert opened.read("static/one.css") == b"1" * 300
    assert opened.region_of("main.py") == ENCRYPTED
    assert opened.region_of("static/two.css") == AUTHENTICATED
    assert opened.region_of("cache/c.tmp") == UNPROTECTED
    assert (root / "static/one.css").read_bytes() == b"1" * 300, "authenticated files stay readable"
    assert b"AAAA" not in (root / "pkg/a.py").read_bytes(), "encrypted files are not plaintext"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.data())
def test_any_flipped_byte_of_a_sealed_file_names_the_path(pristine: tuple, where: st.DataObject) -> None:
    root, key, _ = pristine
    rel = where.draw(st.sampled_from(SEALED))
    path = root / rel
    original = path.read_bytes()
    index = where.draw(st.integers(0, len(original) - 1))
    opened = SealedImage.open(str(root), key)
    damaged = bytearray(original)
    damaged[index] ^= 1 << where.draw(st.integers(0, 7))
    try:
        path.write_bytes(bytes(damaged))
        with pytest.raises(TamperedImage) as caught:
            opened.read(rel)
        assert caught.value.path == rel and rel in caught.value.cause
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("rel", SEALED)
def test_truncated_sealed_file_names_the_path(image: tuple, rel: str) -> None:
    root, key, _ = image
    data = (root / rel).read_bytes()
    (root / rel).write_bytes(data[: len(data) // 2])
    with pytest.raises(TamperedImage) as caught:
        SealedImage.open(str(root), key).read(rel)
    assert caught.value.path == rel


@pytest.mark.parametrize("rel", SEALED)
def test_extended_sealed_file_names_the_path(image: tuple, rel: str) -> None:
    root, key, _ = image
    with open(root / rel, "ab") as fh:
        fh.write(b"\0" * 17)
    with pytest.raises(TamperedImage) as caught:
        SealedImage.open(str(root), key).read(rel)
    assert caught.value.path == rel


@pytest.mark.parametrize(
    "pair", [("pkg/a.py", "pkg/b.py"), ("static/one.css", "static/two.css"), ("main.py", "pkg/a.py")]
)
def test_swapped_sealed_files_name_the_path(image: tuple, pair: tuple) -> None:
    root, key, _ = image
    first, second = (root / pair[0]), (root / pair[1])
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    opened = SealedImage.open(str(root), key)
    for rel in pair:
        with pytest.raises(TamperedImage) as caught:
            opened.read(rel)
        assert caught.value.path == rel


@pytest.mark.parametrize("rel", SEALED)
def test_deleted_sealed_file_names_the_path(image: tuple, rel: str) -> None:
    root, key, _ = image
    os.remove(root / rel)
    with pytest.raises(TamperedImage, match="missing") as caught:
        SealedImage.open(str(root), key)
    assert caught.value.path == rel


@pytest.mark.parametrize("rel", ["extra.py", "pkg/extra.py", "static/extra.css", ".citadel/extra"])
def test_added_file_names_the_path(image: tuple, rel: str) -> None:
    root, key, _ = image
    (root / rel).write_bytes(b"print('injected')")
    with pytest.raises(TamperedImage, match="added") as caught:
        SealedImage.open(str(root), key)
    assert caught.value.path == rel


def test_renamed_sealed_file_is_refused(image: tuple) -> None:
    root, key, _ = image
    os.rename(root / "pkg/a.py", root / "pkg/c.py")
    with pytest.raises(TamperedImage):
        SealedImage.open(str(root), key)


def test_unprotected_region_may_change(image: tuple) -> None:
    root, key, _ = image
    (root / "cache/c.tmp").write_bytes(b"changed by the host")
    (root / "cache/new.tmp").write_bytes(b"added by the host")
    opened = SealedImage.open(str(root), key)
    assert opened.region_of("cache/new.tmp") == UNPROTECTED


def test_wrong_key_is_wrong_key(image: tuple) -> None:
    root, key, _ = image
    with pytest.raises(WrongKey):
        SealedImage.open(str(root), bytes(KEY_SIZE))


def test_changed_manifest_is_wrong_key_or_wrong_tag(image: tuple) -> None:
    root, key, tag = image
    manifest = root / MANIFEST_PATH
    data = bytearray(manifest.read_bytes())
    data[-1] ^= 1
    manifest.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="tag"):
        SealedImage.open(str(root), key, expected_tag=tag)
    with pytest.raises(WrongKey):
        SealedImage.open(str(root), key)


def test_manifest_of_another_sealing_with_the_same_key_fails_the_pinned_tag(
    image: tuple, tmp_path: Path
) -> None:
    root, key, tag = image
    src = tmp_path / "src2"
    src.mkdir()
    (src / "main.py").write_bytes(b"print('evil')\n")
    evil = seal_tree(str(src), str(tmp_path / "evil"), key=key)
    shutil.copy(tmp_path / "evil" / MANIFEST_PATH, root / MANIFEST_PATH)
    with pytest.raises(ImageError, match="tag"):
        SealedImage.open(str(root), key, expected_tag=tag)
    assert evil.tag != tag
    assert image_tag((root / MANIFEST_PATH).read_bytes()) == evil.tag
