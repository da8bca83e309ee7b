"""`citadel volume create|show|import|export` as the data owner runs them (real processes)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def test_owner_round_trip(tmp_path: Path, run_citadel: Any) -> None:
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    vol, key = str(tmp_path / "vol"), str(tmp_path / "vol.key")
    created = run_citadel(["volume", "create", vol, "--key-file", key])
    assert created.returncode == 0, created.stderr
    assert len(created.stdout.strip()) == 64 and "wrote a new volume key" in created.stderr
    assert oct(os.stat(key).st_mode & 0o777) == "0o600" and len(Path(key).read_text().strip()) == 64
    imported = run_citadel(["volume", "import", vol, str(src), "--key-file", key, "--to", "in"])
    assert imported.returncode == 0, imported.stderr
    shown = run_citadel(["volume", "show", vol, "--key-file", key, "--verify", "--json"])
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert {f["path"]: f["size"] for f in doc["files"]} == {"in/data/a.txt": 6, "in/data/sub/b.bin": 200_000}
    assert doc["verified_bytes"] == 200_006 and doc["tag"] == imported.stdout.strip()
    out = tmp_path / "out"
    exported = run_citadel(["volume", "export", vol, str(out), "--key-file", key, "--path", "in/data"])
    assert exported.returncode == 0, exported.stderr
    assert (out / "a.txt").read_text() == "alpha\n"
    assert (out / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()


def test_rollback_is_refused_with_a_plain_message(tmp_path: Path, run_citadel: Any) -> None:
    vol, key, tags = str(tmp_path / "vol"), str(tmp_path / "k"), str(tmp_path / "tags.json")
    (tmp_path / "f.txt").write_text("v1")
    assert run_citadel(["volume", "create", vol, "--key-file", key, "--tag-store", tags]).returncode == 0
    assert run_citadel(["volume", "import", vol, str(tmp_path / "f.txt"), "--key-file", key,
                        "--tag-store", tags]).returncode == 0
    shutil.copytree(vol, str(tmp_path / "backup"))
    (tmp_path / "f.txt").write_text("v2")
    assert run_citadel(["volume", "import", vol, str(tmp_path / "f.txt"), "--key-file", key,
                        "--tag-store", tags]).returncode == 0
    shutil.rmtree(vol)
    shutil.copytree(str(tmp_path / "backup"), vol)
    refused = run_citadel(["volume", "export", vol, str(tmp_path / "out"), "--key-file", key, "--tag-store", tags])
    assert refused.returncode != 0
    assert "not at its latest state" in refused.stderr and "older copy" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stderr.count("citadel: ") == 2
    assert not (tmp_path / "out").exists()


def test_wrong_key_and_tampering_give_one_clear_error(tmp_path: Path, run_citadel: Any) -> None:
    vol, key, other = str(tmp_path / "vol"), str(tmp_path / "k"), str(tmp_path / "other")
    (tmp_path / "f.txt").write_bytes(b"x" * 100_000)
    assert run_citadel(["volume", "create", vol, "--key-file", key]).returncode == 0
    assert run_citadel(["volume", "import", vol, str(tmp_path / "f.txt"), "--key-file", key]).returncode == 0
    Path(other).write_text(os.urandom(32).hex())
    wrong = run_citadel(["volume", "show", vol, "--key-file", other])
    assert wrong.returncode != 0 and "does not open the volume manifest" in wrong.stderr
    seg = next((Path(vol) / "segments").iterdir())
    data = bytearray(seg.read_bytes())
    data[70_000] ^= 1
    seg.write_bytes(bytes(data))
    tampered = run_citadel(["volume", "show", vol, "--key-file", key, "--verify"])
    assert tampered.returncode != 0 and "'f.txt'" in tampered.stderr and "changed outside Citadel" in tampered.stderr
    assert "Traceback" not in tampered.stderr
    failed = run_citadel(["volume", "export", vol, str(tmp_path / "out"), "--key-file", key])
    assert failed.returncode != 0 and not (tmp_path / "out").exists()  # no half export
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".citadel-export-")]
