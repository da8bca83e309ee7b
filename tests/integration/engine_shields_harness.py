"""Run sealed code under the engine's shields in a real `python -I -S` process, and unsealed for comparison.

The engine's main is written elsewhere; these helpers do what it does for the shields: open the
image, install the file shield and the sealed importer, then run the script as ``__main__`` with
runpy. The interpreter sees only the standard library, ``src/`` and a directory holding just
``cryptography`` (+ its ``_cffi_backend``), so nothing from the development venv leaks in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

from citadel.seal.format import (
    DEFAULT_CHUNK_SIZE,
    ENCRYPTED,
    MANIFEST_PATH,
    FileEntry,
    Manifest,
    encrypt_chunks,
    seal_manifest,
)
from citadel.seal.sealer import seal_tree

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
PYTHON = sys.executable

Files = Dict[str, Union[str, bytes]]


def write_tree(root: Path, files: Files) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))
    return root


def trusted_site(root: Path) -> Path:
    """A site directory holding only what the engine's trusted base needs: cryptography."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in SITE_PACKAGES.iterdir():
        if entry.name == "cryptography" or entry.name.startswith("_cffi_backend"):
            target = root / entry.name
            if not target.exists():
                target.symlink_to(entry)
    return root


def seal(
    src: Path,
    out: Path,
    *,
    rules: Sequence[Tuple[str, str]] = (),
    python_paths: Iterable[Path] = (),
    key: bytes = bytes(range(32)),
) -> str:
    """Seal ``src`` into ``out``; returns the key as hex."""
    seal_tree(str(src), str(out), rules=list(rules), python_paths=[str(p) for p in python_paths], key=key)
    return key.hex()


ENGINE_PRELUDE = """
import sys
sys.path += {paths!r}
from citadel.seal.image import SealedImage
from citadel.engine import fileshield, importer
image = SealedImage.open({image!r}, bytes.fromhex({key!r}))
fileshield.install(image)
importer.install(image, entry_dir={entry_dir!r})
"""

RUN_SCRIPT = """
import runpy
sys.argv = [{script!r}] + {args!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def seal_files_directly(src: Path, out: Path, key: bytes = bytes(range(32))) -> str:
    """Seal every file of ``src`` (``__pycache__`` included, which the sealer leaves out) as encrypted,
    with the image format's own primitives; returns the key as hex."""
    manifest = Manifest(files={})
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src).as_posix()
        data, file_key, file_id = path.read_bytes(), os.urandom(32), os.urandom(16)
        pieces = [data[i : i + DEFAULT_CHUNK_SIZE] for i in range(0, len(data), DEFAULT_CHUNK_SIZE)] or [b""]
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"".join(encrypt_chunks(file_key, file_id, len(data), iter(pieces))))
        manifest.files[rel] = FileEntry(rel, ENCRYPTED, len(data), file_id=file_id, key=file_key)
    (out / MANIFEST_PATH).parent.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_PATH).write_bytes(seal_manifest(manifest, key))
    return key.hex()


def python(code: str, *, cwd: Optional[Path] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -I -S -c code` with a clean environment; returns the finished process (text)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    return subprocess.run(
        [PYTHON, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(cwd) if cwd else None,
        timeout=timeout,
    )


def engine_code(image: Path, key: str, site: Path, *, entry_dir: Optional[str] = "", body: str = "") -> str:
    prelude = ENGINE_PRELUDE.format(paths=[str(SRC), str(site)], image=str(image), key=key, entry_dir=entry_dir)
    return prelude + textwrap.dedent(body)


def run_sealed(
    image: Path,
    key: str,
    site: Path,
    script: str,
    args: Sequence[str] = (),
    *,
    entry_dir: str = "",
    cwd: Optional[Path] = None,
) -> subprocess.CompletedProcess:
    """Run the image's ``script`` (image-relative) as __main__ under the shields."""
    host_script = str(image / script)
    body = RUN_SCRIPT.format(script=host_script, args=list(args))
    return python(engine_code(image, key, site, entry_dir=entry_dir, body=body), cwd=cwd)


def run_unsealed(
    src: Path,
    script: str,
    args: Sequence[str] = (),
    *,
    python_paths: Sequence[Path] = (),
    cwd: Optional[Path] = None,
) -> subprocess.CompletedProcess:
    """Run ``src/script`` as __main__ the way `python script` would (no bytecode written)."""
    host_script = str(src / script)
    code = (
        f"import sys\nsys.dont_write_bytecode = True\n"
        f"sys.path.insert(0, {str(Path(host_script).parent)!r})\n"
        f"sys.path += {[str(p) for p in python_paths]!r}\n" + RUN_SCRIPT.format(script=host_script, args=list(args))
    )
    return python(code, cwd=cwd)


def normalised(text: str, *roots: Path) -> str:
    """Output with each root directory replaced by <ROOT>, so sealed and unsealed runs compare."""
    for root in sorted((str(r) for r in roots), key=len, reverse=True):
        text = text.replace(root, "<ROOT>")
    return text


def last_json(stdout: str) -> dict:
    """The JSON document on the last line of a run's output."""
    return json.loads(stdout.strip().splitlines()[-1])
