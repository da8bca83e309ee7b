"""Open a sealed image and serve verified plaintext (engine side; stdlib + cryptography, Python 3.9).

`SealedImage.open` decrypts the manifest with the image key, checks the tag when one is
expected (the CAS pins it), and checks the set of files on disk against the manifest. Reads are
verified lazily, file by file, so start-up costs do not grow with the size of the image.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Dict, Iterator, List, Optional

from citadel.crypto import digests_equal
from citadel.errors import ImageError, TamperedImage
from citadel.seal.format import (
    AUTHENTICATED,
    ENCRYPTED,
    MANIFEST_PATH,
    UNPROTECTED,
    FileEntry,
    Manifest,
    image_tag,
    iter_decrypt,
    open_manifest,
)


class SealedImage:
    """A sealed image opened with its key: the manifest, and verified access to its files."""

    def __init__(self, root: str, manifest: Manifest, tag: str) -> None:
        self.root = os.path.realpath(root)
        self.manifest = manifest
        self.tag = tag
        self._dirs = _directories_of(manifest.files)

    # --- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str, key: bytes, expected_tag: Optional[str] = None) -> SealedImage:
        manifest_file = os.path.join(root, MANIFEST_PATH)
        try:
            with io.FileIO(manifest_file, "r") as fh:
                sealed = fh.read()
        except FileNotFoundError:
            raise ImageError(f"{root!r} is not a sealed image (no {MANIFEST_PATH})",
                             "pass the directory written by `citadel seal -o`") from None
        except OSError as exc:
            raise ImageError(f"cannot read the image manifest: {exc.strerror}",
                             "check the --image path and its permissions") from None
        tag = image_tag(sealed)
        if expected_tag is not None and not digests_equal(tag, expected_tag.lower()):
            raise ImageError(f"the image's tag {tag[:16]}... is not the expected {expected_tag[:16]}...",
                             "the image was changed or replaced; use the image the policy names")
        image = cls(root, open_manifest(sealed, key), tag)
        image.check_file_set()
        return image

    def check_file_set(self) -> None:
        """Every protected file is present and nothing was added to a protected region."""
        present = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            for name in sorted(filenames):
                rel = rel_dir + name
                if rel == MANIFEST_PATH:
                    continue
                if rel in self.manifest.files:
                    present.add(rel)
                elif not self.manifest.is_unprotected(rel):
                    raise TamperedImage(rel, "is not in the image's manifest (a file was added)")
        for rel in self.manifest.files:
            if rel not in present:
                raise TamperedImage(rel, "is missing (deleted or renamed)")

    # --- lookup ------------------------------------------------------------------------------
    def relpath(self, host_path: str) -> Optional[str]:
        """The image-relative POSIX path of a host path inside the image, else None."""
        full = os.path.realpath(host_path)
        if full == self.root:
            return ""
        prefix = self.root + os.sep
        if not full.startswith(prefix):
            return None
        return full[len(prefix):].replace(os.sep, "/")

    def host_path(self, relpath: str) -> str:
        return os.path.join(self.root, *relpath.split("/")) if relpath else self.root

    def entry(self, relpath: str) -> Optional[FileEntry]:
        return self.manifest.files.get(relpath)

    def region_of(self, relpath: str) -> Optional[str]:
        """encrypted, authenticated, unprotected, or None for a path the image does not have."""
        entry = self.manifest.files.get(relpath)
        if entry is not None:
            return entry.region
        if self.manifest.is_unprotected(relpath):
            return UNPROTECTED
        return None

    def is_dir(self, relpath: str) -> bool:
        return relpath in self._dirs

    def listdir(self, relpath: str) -> List[str]:
        """Names directly below a protected directory (files and directories)."""
        return sorted(self._dirs.get(relpath, ()))

    # --- reading -----------------------------------------------------------------------------
    def read(self, relpath: str) -> bytes:
        """The verified plaintext of a protected file; TamperedImage names the path otherwise."""
        return b"".join(self.iter_verified(relpath))

    def iter_verified(self, relpath: str, block_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield a protected file's plaintext piece by piece, as it is verified.

        Encrypted files yield only authenticated chunks. Authenticated files can only be judged
        once their last byte is hashed, so the final piece is held back until the digest matches:
        a consumer that stops at the first TamperedImage has never seen a complete forgery. Use
        the pieces only after the iteration ends without error.
        """
        entry = self.manifest.files.get(relpath)
        if entry is None:
            raise TamperedImage(relpath, "is not part of the sealed image")
        try:
            # io.FileIO, not open(): the engine's file shield patches open() for paths in the image.
            source = io.FileIO(self.host_path(relpath), "r")
        except OSError as exc:
            raise TamperedImage(relpath, f"cannot be read ({exc.strerror})") from None
        with source:
            if entry.region == ENCRYPTED:
                try:
                    yield from iter_decrypt(source, entry.key, entry.file_id, entry.size)
                except ValueError as exc:
                    raise TamperedImage(relpath, str(exc)) from None
            elif entry.region == AUTHENTICATED:
                yield from _iter_authenticated(source, entry, block_size)
            else:
                raise ImageError(f"unknown region for {relpath!r}", "re-seal the application")


def _iter_authenticated(source: io.FileIO, entry: FileEntry, block_size: int) -> Iterator[bytes]:
    digest = hashlib.sha256()
    seen = 0
    held: Optional[bytes] = None
    while True:
        piece = source.read(min(block_size, entry.size - seen + 1))  # one byte past the end shows extension
        if not piece:
            break
        seen += len(piece)
        if seen > entry.size:
            break
        digest.update(piece)
        if held is not None:
            yield held
        held = piece
    if seen != entry.size or not digests_equal(digest.hexdigest(), entry.sha256):
        raise TamperedImage(entry.path, "does not match its recorded SHA-256")
    if held is not None:
        yield held


def _directories_of(files: Dict[str, FileEntry]) -> Dict[str, set]:
    """Directory -> names below it, derived from the protected files' paths."""
    dirs: Dict[str, set] = {"": set()}
    for path in files:
        parts = path.split("/")
        for depth in range(len(parts)):
            parent = "/".join(parts[:depth])
            dirs.setdefault(parent, set()).add(parts[depth])
    return dirs
