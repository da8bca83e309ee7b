"""examples/cairo-drawing, end to end, by running the shell commands of its README as they stand.

The README's first block installs pycairo into `site` with pip; the test makes the same directory by
copying the test environment's pycairo (no network). Its second block seals the drawing program
with `site` as a python path (the sealer bundles libcairo and its dependencies), runs it with the
real `citadel run` writing into an encrypted output volume, and exports the picture. The test then
parses the PNG itself (chunks, CRCs, IHDR, zlib, scanline filters) and checks the reference's
gradient and stroke colours, and that the host's copy of the volume holds no plaintext.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import pytest

from tests.conftest import CITADEL_BIN, REPO, citadel_cmd, clean_env

EXAMPLE = REPO / "examples" / "cairo-drawing"
SIZE = 256
Pixel = Tuple[int, int, int, int]

# --- PNG, parsed by hand (RFC 2083): signature, chunks, IHDR, zlib stream, scanline filters --------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHUNK_HEAD = struct.Struct(">I4s")  # data length, chunk type; then the data, then CRC-32 (type + data)
CHUNK_CRC = struct.Struct(">I")
IHDR = struct.Struct(">IIBBBBB")  # width, height, bit depth, colour type, compression, filter, interlace
RGBA = 6


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    compression: int
    filter_method: int
    interlace: int


def png_chunks(data: bytes) -> List[Tuple[bytes, bytes]]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG: bad signature"
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = CHUNK_HEAD.unpack_from(data, pos)
        body = data[pos + CHUNK_HEAD.size: pos + CHUNK_HEAD.size + length]
        (crc,) = CHUNK_CRC.unpack_from(data, pos + CHUNK_HEAD.size + length)
        assert len(body) == length and crc == zlib.crc32(kind + body), f"chunk {kind!r} is damaged"
        chunks.append((kind, body))
        pos += CHUNK_HEAD.size + length + CHUNK_CRC.size
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", "IHDR first, IEND last"
    return chunks


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_rgba8(data: bytes) -> Tuple[Header, List[bytes]]:
    """A non-interlaced 8-bit RGBA PNG -> its header and its rows of unfiltered RGBA bytes."""
    chunks = png_chunks(data)
    header = Header(*IHDR.unpack(chunks[0][1]))
    assert (header.bit_depth, header.colour_type, header.compression, header.filter_method, header.interlace) == (
        8, RGBA, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    bpp, stride = 4, header.width * 4
    assert len(raw) == header.height * (stride + 1)
    rows: List[bytes] = []
    prior = bytearray(stride)
    for y in range(header.height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        assert kind <= 4, f"row {y}: unknown filter type {kind}"
        for i in range(stride):
            left, up = (line[i - bpp] if i >= bpp else 0), prior[i]
            upper_left = prior[i - bpp] if i >= bpp else 0
            predictor = (0, left, up, (left + up) // 2, paeth(left, up, upper_left))[kind]
            line[i] = (line[i] + predictor) & 0xFF
        rows.append(bytes(line))
        prior = line
    return header, rows


def pixel(rows: Sequence[bytes], x: int, y: int) -> Pixel:
    r, g, b, a = rows[y][4 * x: 4 * x + 4]
    return r, g, b, a


# --- what cairo gives for the reference's drawing -----------------------------------------------
TOP, BOTTOM = (0.9, 0.7, 0.2, 1.0), (0.7, 0.0, 0.0, 0.5)  # colour stops at 0 and 1 (y = 0 and y = 1)
STROKE = (0.3, 0.2, 0.5)


def expected_gradient(y: int) -> Pixel:
    """Row y of the gradient as PNG bytes: pixman interpolates the stops' straight (not premultiplied)
    colours at the pixel's centre and stores ARGB32 premultiplied in 8 bits; cairo's PNG writer
    un-premultiplies each channel as (c * 255 + a / 2) / a."""
    t = (y + 0.5) / SIZE
    r, g, b, a = (lo + (hi - lo) * t for lo, hi in zip(TOP, BOTTOM))
    a8 = round(a * 255)
    r8, g8, b8 = ((round(c * a * 255) * 255 + a8 // 2) // a8 for c in (r, g, b))
    return r8, g8, b8, a8


def close(actual: Pixel, expected: Pixel, tolerance: int = 2) -> bool:
    return all(abs(p - q) <= tolerance for p, q in zip(actual, expected))


def off_the_stroke(x: int, y: int) -> bool:
    """The stroked path (translated by 0.1, line width 0.02) spans x, y in [0.1, 0.6] x [0.1, 0.9]
    of the unit square, plus half the line width, plus its mitred corners: the sharpest, where the
    curve meets the closing line at (0.3, 0.9), reaches y = 0.923 (pixel row 236). Outside
    pixels 20..169 by 20..239 only the gradient shows."""
    return x < 20 or x >= 170 or y < 20 or y >= 240


# --- running the README --------------------------------------------------------------------------
def readme_blocks() -> List[str]:
    text = (EXAMPLE / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2, "the README has two sh blocks: installing pycairo, then the workflow"
    return blocks


def pycairo_dir() -> Path:
    spec = importlib.util.find_spec("cairo")
    if spec is None or spec.origin is None:
        pytest.fail("pycairo is not installed: `pip install -e '.[dev]'` installs it (it needs Debian's "
                    "libcairo2-dev and pkg-config, which scripts/test.sh installs)")
    return Path(spec.origin).resolve().parent


def make_site(work: Path) -> Path:
    """What `python -m pip install --target site pycairo` makes, from the pycairo the tests run with."""
    shutil.copytree(pycairo_dir(), work / "site" / "cairo", ignore=shutil.ignore_patterns("__pycache__"))
    return work / "site"


def shell(work: Path, script: str) -> subprocess.CompletedProcess:
    if not CITADEL_BIN.exists():  # a source checkout without the console script
        script = 'citadel() { python -m citadel.cli.main "$@"; }\n' + script
    env = clean_env(CITADEL_MODE="sim")
    assert "CITADEL_ALLOW_DLOPEN" not in env
    env["PATH"] = f"{CITADEL_BIN.parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("cairo") / "cairo-drawing"
    shutil.copytree(EXAMPLE, work)
    make_site(work)
    proc = shell(work, readme_blocks()[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, proc


def test_the_readme_installs_cairos_headers_and_pycairo_for_the_engines_python() -> None:
    assert readme_blocks()[0].strip().splitlines() == [
        "sudo apt-get install -y libcairo2-dev pkg-config", "python -m pip install --target site pycairo"]


def test_readme_seals_pycairo_with_libcairo_and_the_run_writes_the_volume(
    workflow: Tuple[Path, subprocess.CompletedProcess]
) -> None:
    work, proc = workflow
    natives = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("native:")}
    assert {"libcairo.so.2", "libpixman-1.so.0", "libpng16.so.16", "libfreetype.so.6", "libfontconfig.so.1"} <= natives
    assert "wrote /data/out/example.png (256x256)" in proc.stdout.splitlines()
    assert re.search(r"^verified:\s+every chunk of every file", proc.stdout, flags=re.M)
    assert re.search(r"^\s+\d+\s+example\.png$", proc.stdout, flags=re.M)  # `volume show` lists the file
    assert "Traceback" not in proc.stderr
    assert oct(os.stat(work / "out.key").st_mode & 0o777) == "0o600"
    assert not Path("/data/out/example.png").exists()  # the program wrote into the volume, not this host


def test_the_exported_picture_is_the_references_gradient_and_stroke(
    workflow: Tuple[Path, subprocess.CompletedProcess]
) -> None:
    work, _ = workflow
    header, rows = decode_rgba8((work / "results" / "example.png").read_bytes())
    assert (header.width, header.height) == (SIZE, SIZE)
    # top row near opaque (0.9, 0.7, 0.2), bottom row near (0.7, 0, 0) at 50% alpha, and every row between
    assert close(pixel(rows, 200, 0), (230, 179, 51, 255))
    assert close(pixel(rows, 200, SIZE - 1), (178, 0, 0, 128))
    wrong = [(x, y, pixel(rows, x, y), expected_gradient(y)) for y in range(SIZE) for x in range(SIZE)
             if off_the_stroke(x, y) and not close(pixel(rows, x, y), expected_gradient(y))]
    assert wrong == []
    # the path is stroked, not filled: its inside shows the gradient
    assert close(pixel(rows, 77, 102), expected_gradient(102))
    # the stroke's straight segment from (0.4, 0.2) to (0.6, 0.2), 5 pixels wide: opaque (0.3, 0.2, 0.5)
    purple = (round(STROKE[0] * 255), round(STROKE[1] * 255), round(STROKE[2] * 255), 255)
    segment = [pixel(rows, x, y) for y in range(49, 53) for x in range(110, 146)]
    assert all(close(p, purple) for p in segment), segment[:4]


def test_the_hosts_copy_of_the_volume_holds_no_plaintext(workflow: Tuple[Path, subprocess.CompletedProcess]) -> None:
    work, _ = workflow
    png = (work / "results" / "example.png").read_bytes()
    stored = {p.relative_to(work): p.read_bytes() for p in (work / "vol-out").rglob("*") if p.is_file()}
    assert any(p.parts[1] == "segments" for p in stored) and sum(map(len, stored.values())) > len(png)
    for rel, data in stored.items():
        assert PNG_SIGNATURE not in data and b"IHDR" not in data and b"IDAT" not in data, rel
        assert b"example.png" not in data and png[100:132] not in data, rel
        assert "example.png" not in str(rel)


# --- the extension and its libraries in the engine ------------------------------------------------
PROBE = r'''
import cairo
mapped = set()
with open("/proc/self/maps") as maps:
    for line in maps:
        parts = line.split(None, 5)
        if len(parts) == 6 and ".so" in parts[5]:
            mapped.add(parts[5].strip())
print(cairo.cairo_version_string())
for name in sorted(mapped):
    print(name)
'''
CAIRO_LIBRARIES = ("_cairo.", "libcairo.so", "libpixman", "libfontconfig", "libfreetype", "libpng16", "libX11",
                   "libxcb", "libexpat", "libbrotli")


def test_pycairo_and_every_library_it_needs_load_from_verified_memfds(tmp_path: Path) -> None:
    """Without CITADEL_ALLOW_DLOPEN the guard admits only the engine's libraries and the image's:
    cairo's whole dependency tree comes from sealed memfds, none of it from the host's files."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "probe.py").write_text(PROBE)
    site = make_site(tmp_path)
    env = clean_env(CITADEL_MODE="sim")
    sealed = subprocess.run(citadel_cmd() + ["seal", str(tmp_path / "app"), "-o", str(tmp_path / "probe.img"),
                                             "--python-path", str(site), "--key-out", str(tmp_path / "probe.key")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert sealed.returncode == 0, sealed.stderr
    done = subprocess.run(citadel_cmd() + ["run", "--image", str(tmp_path / "probe.img"), "--key-file",
                                           str(tmp_path / "probe.key"), "probe.py"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    version, *libraries = done.stdout.splitlines()
    assert re.fullmatch(r"1\.\d+\.\d+", version)
    memfds = {lib for lib in libraries if lib.startswith("/memfd:")}
    for name in CAIRO_LIBRARIES:
        assert any(name in lib for lib in memfds), (name, libraries)
        assert not any(name in lib for lib in libraries if lib not in memfds), (name, libraries)
    assert all(lib.endswith(" (deleted)") for lib in memfds)


def test_the_unsealed_program_draws_the_same_pixels(
    workflow: Tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """The program is ordinary Python: run by python on a plain directory, it draws the same picture."""
    pycairo_dir()
    proc = subprocess.run([sys.executable, str(EXAMPLE / "app" / "draw.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    work, _ = workflow
    _, sealed_rows = decode_rgba8((work / "results" / "example.png").read_bytes())
    _, plain_rows = decode_rgba8((tmp_path / "example.png").read_bytes())
    assert sealed_rows == plain_rows
