"""Tamper matrix through the real `citadel run`: whatever the host changes in a sealed image, the
engine refuses with one clear error naming the path, and none of the tampered code runs.

Every sealed module records its own name in a host file when it runs, so "nothing of the tampered
code ran" is observed, not assumed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citadel.seal.format import MANIFEST_PATH
from citadel.seal.sealer import seal_tree

KEY = bytes(range(32))
MODULES = ["app.py", "pkg/__init__.py", "pkg/core.py", "pkg/sub/__init__.py", "pkg/sub/deep.py"]
SOURCES = {
    "app.py": "import sys\n{record}\nimport pkg.core, pkg.sub.deep\nprint('ran', pkg.core.VALUE)\n",
    "pkg/__init__.py": "{record}\n",
    "pkg/core.py": "{record}\nfrom .sub.deep import X\nVALUE = X + 1\n",
    "pkg/sub/__init__.py": "{record}\n",
    "pkg/sub/deep.py": "{record}\nX = 41\n",
    "data/notes.txt": "not code\n",
}
MUTATIONS = ["flip", "truncate", "extend", "delete", "swap", "add", "flip-manifest"]


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tamper")
    src = root / "src"
    for rel, text in SOURCES.items():
        record = f"open({str(root / 'ran.log')!r}, 'a').write({rel!r} + '\\n')"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text.format(record=record))
    seal_tree(str(src), str(root / "pristine.img"), key=KEY)
    key_file = root / "key"
    key_file.write_text(KEY.hex())
    return root, key_file


def _tamper(image: Path, mutation: str, target: str, other: str, offset: int) -> str:
    """Apply one mutation; return the image path the engine must name."""
    path = image / target
    if mutation == "flip":
        data = bytearray(path.read_bytes())
        data[offset % len(data)] ^= 0x01
        path.write_bytes(bytes(data))
    elif mutation == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: offset % len(data)])
    elif mutation == "extend":
        path.write_bytes(path.read_bytes() + b"\0")
    elif mutation == "delete":
        path.unlink()
    elif mutation == "swap":
        a, b = path.read_bytes(), (image / other).read_bytes()
        path.write_bytes(b)
        (image / other).write_bytes(a)
    elif mutation == "add":
        target = "pkg/planted.py"
        (image / target).write_text("print('host code')\n")
    elif mutation == "flip-manifest":
        manifest = image / MANIFEST_PATH
        data = bytearray(manifest.read_bytes())
        data[offset % len(data)] ^= 0x80
        manifest.write_bytes(bytes(data))
        return ""  # the manifest does not open: no file is named, the key/manifest is
    return target


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=st.sampled_from(MUTATIONS), target=st.sampled_from(MODULES), other=st.sampled_from(MODULES),
       offset=st.integers(min_value=0, max_value=10_000))
def test_any_tampering_is_refused_naming_the_path_and_runs_none_of_it(
    sealed: tuple[Path, Path], run_citadel, mutation: str, target: str, other: str, offset: int
) -> None:
    root, key_file = sealed
    if mutation == "swap" and other == target:
        other = MODULES[(MODULES.index(target) + 1) % len(MODULES)]
    image = root / "work.img"
    shutil.rmtree(image, ignore_errors=True)
    shutil.copytree(root / "pristine.img", image)
    (root / "ran.log").write_text("")
    named = _tamper(image, mutation, target, other, offset)

    result = run_citadel(["run", "--image", str(image), "--key-file", str(key_file), "app.py"])

    assert result.returncode == 65, (mutation, target, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("citadel: ")]
    assert lines[-2].startswith("citadel: error: ") and lines[-1].startswith("citadel: hint: ")
    if named:
        assert repr(named) in lines[-2] or (mutation == "swap" and repr(other) in lines[-2]), lines
    ran = (root / "ran.log").read_text().split()
    tampered = {target, other} if mutation == "swap" else {target}
    assert not tampered & set(ran), f"tampered code ran: {ran}"
    assert "ran 42" not in result.stdout


def test_the_pristine_image_runs_every_module(sealed: tuple[Path, Path], run_citadel) -> None:
    root, key_file = sealed
    (root / "ran.log").write_text("")
    result = run_citadel(["run", "--image", str(root / "pristine.img"), "--key-file", str(key_file), "app.py"])
    assert result.returncode == 0, result.stderr
    assert "ran 42" in result.stdout
    assert sorted((root / "ran.log").read_text().split()) == sorted(MODULES)
