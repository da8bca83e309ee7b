"""Volumes and the CAS, end to end: a real CAS over TLS on loopback (SQLite and PostgreSQL), real
volumes on disk, the engine's client library and the owner's CLI as real processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest

from citadel.attest import client, volume_client
from citadel.cas.admin_client import AdminClient
from citadel.cas.auth import default_client_key_path, load_or_create_client_key
from citadel.volume import Volume, VolumeConflict, VolumeRollback

from . import engine
from .policies import MEASUREMENT


def volume_policy(name: str, readers: str = "[CREATOR]") -> str:
    return f"""\
name: {name}
version: "1"
access_policy:
  read: {readers}
services:
  - name: app
    command: app.py
    image:
      key: $$citadel:image_key$$
    attestation:
      tee: [sim]
      measurements: [{MEASUREMENT}]
      tolerate: [sim]
    volumes:
      - {{name: results, path: /data/out}}
      - {{name: inputs}}
      - {{name: scratch}}
secrets:
  - {{name: image_key, kind: binary, size: 32}}
volumes:
  - {{name: results}}
  - {{name: inputs, path: /data/in}}
  - {{name: scratch, path: /scratch, update_policy: ephemeral}}
"""


def _admin(deployment: Any, home: Path) -> AdminClient:
    key, _ = load_or_create_client_key(default_client_key_path({"HOME": str(home)}))
    return AdminClient(deployment.server.url, deployment.server.fingerprint, key)


def _session(deployment: Any, name: str, **kw: Any) -> None:
    with _admin(deployment, deployment.alice) as admin:
        admin.create_session(volume_policy(name, **kw))


def _release(deployment: Any, config_id: str) -> client.ReleasedConfig:
    server = deployment.server
    return engine.attest(server.url, server.fingerprint, config_id, deployment.platform_key)


def _volumes(config: client.ReleasedConfig) -> Dict[str, volume_client.ReleasedVolume]:
    return {v.name: v for v in config.released_volumes()}


def _store(deployment: Any, config: client.ReleasedConfig) -> volume_client.CasVolumeTagStore:
    server = deployment.server
    return volume_client.CasVolumeTagStore.from_release(server.url, server.fingerprint, config)


def _tag(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _audit(deployment: Any) -> List[Dict[str, Any]]:
    with _admin(deployment, deployment.alice) as admin:
        return list(admin.audit_page(after=0, limit=1000)["entries"])


def test_first_release_creates_the_key_and_commits_advance_the_latest_tag(deployment: Any) -> None:
    _session(deployment, "vrel")
    first = _release(deployment, "vrel/app")
    vols = _volumes(first)
    results, inputs, scratch = vols["results"], vols["inputs"], vols["scratch"]
    assert (results.mount, results.policy, results.expected_tag, results.generation) == (
        "/data/out",
        "rollback-protected",
        None,
        0,
    )
    assert inputs.mount == "/data/in" and len(results.key) == 32 and results.key != inputs.key
    assert scratch.policy == "ephemeral" and scratch.token is None and scratch.expected_tag is None
    with _store(deployment, first) as store:
        assert store.current("results") is None
        store.compare_and_swap("results", "", _tag("a"))
        store.compare_and_swap("results", _tag("a"), _tag("b"))
        assert store.current("results") == _tag("b")
    later = _volumes(_release(deployment, "vrel/app"))
    assert later["results"].key == results.key and later["scratch"].key == scratch.key
    assert (later["results"].expected_tag, later["results"].generation) == (_tag("b"), 2)
    assert later["inputs"].expected_tag is None
    commits = [e for e in _audit(deployment) if e["event"] == "volume.commit" and e["subject"] == "vrel:results"]
    assert [(e["outcome"], e["details"]["new_tag"]) for e in commits] == [
        ("allowed", _tag("a")),
        ("allowed", _tag("b")),
    ]
    assert commits[0]["actor"] == "engine@host-1"


def test_stale_old_tag_is_refused_with_the_rollback_message(deployment: Any) -> None:
    _session(deployment, "vstale")
    with _store(deployment, _release(deployment, "vstale/app")) as store:
        store.compare_and_swap("results", "", _tag("1"))
        store.compare_and_swap("results", _tag("1"), _tag("2"))
    # an engine attested now (latest: tag 2) whose host gives it the state of tag 1
    with (
        _store(deployment, _release(deployment, "vstale/app")) as store,
        pytest.raises(volume_client.VolumeTagRefused) as info,
    ):
        store.compare_and_swap("results", _tag("1"), _tag("3"))
    refused = info.value
    assert refused.status == 409 and refused.code == "rollback" and refused.latest_tag == _tag("2")
    assert "the host restored an older copy" in refused.cause and f"latest tag is {_tag('2')}" in refused.cause
    last = _audit(deployment)[-1]
    assert (last["event"], last["outcome"], last["reason"]) == ("volume.commit", "refused", "rollback")


def _race(stores: List[volume_client.CasVolumeTagStore], old: str, round_: int) -> List[str]:
    barrier = threading.Barrier(len(stores))
    outcomes: List[str] = []

    def commit(i: int) -> None:
        barrier.wait()
        try:
            stores[i].compare_and_swap("results", old, _tag(f"{round_}-{i}"))
            outcomes.append(f"won:{i}")
        except volume_client.VolumeTagRefused as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def _winner(outcomes: List[str]) -> int:
    won = [o for o in outcomes if o.startswith("won:")]
    assert len(won) == 1, outcomes
    assert sorted(o for o in outcomes if not o.startswith("won:")) == ["committed_elsewhere"] * (len(outcomes) - 1)
    return int(won[0].split(":")[1])


def test_concurrent_commits_exactly_one_wins(deployment: Any) -> None:
    """Two engines (separate attestations, separate connections) commit from the same tag, ten times."""
    _session(deployment, "vrace")
    stores = [_store(deployment, _release(deployment, "vrace/app")) for _ in range(2)]
    try:
        old = ""
        for round_ in range(10):
            winner = _winner(_race(stores, old, round_))
            old = _tag(f"{round_}-{winner}")
            assert stores[0].current("results") == old
    finally:
        for store in stores:
            store.close()
    allowed = [e for e in _audit(deployment) if e["subject"] == "vrace:results" and e["outcome"] == "allowed"]
    assert [e["details"]["generation"] for e in allowed] == list(range(1, 11))


@pytest.mark.slow
def test_two_replicas_one_winner(deployment: Any, tmp_path: Path) -> None:
    """A second CAS process on the same database and master key: commits through both, one winner."""
    from .server import CasServer

    first = deployment.server
    replica = CasServer(first.state_dir, first.home, db_url=first.db_url)
    replica.stderr_path = tmp_path / "replica.stderr"
    replica.start()
    try:
        _session(deployment, "vrepl")
        config = _release(deployment, "vrepl/app")
        stores = [
            volume_client.CasVolumeTagStore.from_release(url, first.fingerprint, config)
            for url in (first.url, replica.url)
        ]
        try:
            old = ""
            for round_ in range(8):
                old = _tag(f"{round_}-{_winner(_race(stores, old, round_))}")
        finally:
            for store in stores:
                store.close()
    finally:
        replica.stop()


def _write(vol: Volume, path: str, data: bytes) -> None:
    with vol.open_file(path, "wb") as fh:
        fh.write(data)


def test_volume_committed_through_the_cas_refuses_a_restored_older_copy(deployment: Any, tmp_path: Path) -> None:
    _session(deployment, "vroll")
    host_dir = tmp_path / "results"
    config = _release(deployment, "vroll/app")
    results = _volumes(config)["results"]
    with _store(deployment, config) as store:
        vol = Volume.open(
            str(host_dir),
            results.key,
            expected_tag=results.expected_tag,
            on_commit=store.on_commit("results"),
            create=True,
        )
        _write(vol, "report.txt", b"first\n")
        vol.commit()
        vol.close()
    shutil.copytree(host_dir, tmp_path / "backup")

    config = _release(deployment, "vroll/app")
    results = _volumes(config)["results"]
    with _store(deployment, config) as store:
        with Volume.open(
            str(host_dir), results.key, expected_tag=results.expected_tag, on_commit=store.on_commit("results")
        ) as vol:
            _write(vol, "report.txt", b"second\n")
        latest = vol.tag

    shutil.rmtree(host_dir)
    shutil.copytree(tmp_path / "backup", host_dir)  # the host restores the older copy
    config = _release(deployment, "vroll/app")
    results = _volumes(config)["results"]
    assert results.expected_tag == latest
    with pytest.raises(VolumeRollback) as info:
        Volume.open(str(host_dir), results.key, expected_tag=results.expected_tag)
    assert "older copy" in info.value.cause

    # an engine that skipped the check at open is stopped by the CAS at its first commit
    with _store(deployment, config) as store:
        vol = Volume.open(str(host_dir), results.key, on_commit=store.on_commit("results"))
        with pytest.raises(VolumeConflict) as conflict:
            _write(vol, "report.txt", b"third\n")  # closing the last writer commits
        vol.close()
    assert "restored an older copy" in conflict.value.cause and conflict.value.kept_as
    assert (host_dir / "conflicts" / conflict.value.kept_as).exists()  # nothing is lost


def _cli(deployment: Any, args: List[str], home: Any = None) -> Any:
    return deployment.server.cli(["volume", *args], home=home)


def test_owner_import_and_export_through_the_cas(deployment: Any, tmp_path: Path) -> None:
    _session(deployment, "vown")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("x,y\n1,2\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 300)
    vol = str(tmp_path / "inputs")
    cas = ["--config-id", "vown/app", "--volume", "inputs"]
    created = _cli(deployment, ["create", vol, *cas])
    assert created.returncode == 0, created.stderr
    again = _cli(deployment, ["create", str(tmp_path / "other"), *cas])
    assert again.returncode == 1 and "already exists" in again.stderr
    imported = _cli(deployment, ["import", vol, str(src), "--to", "in", *cas, "--json"])
    assert imported.returncode == 0, imported.stderr
    tag = json.loads(imported.stdout)["tag"]
    assert "the CAS recorded" in imported.stderr

    shown = _cli(deployment, ["show", vol, *cas, "--json", "--verify"])
    assert shown.returncode == 0, shown.stderr and json.loads(shown.stdout)["tag"] == tag
    out = tmp_path / "out"
    exported = _cli(deployment, ["export", vol, str(out), "--path", "in/src", *cas])
    assert exported.returncode == 0, exported.stderr
    assert (out / "a.csv").read_text() == "x,y\n1,2\n"
    assert (out / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()

    # the engine receives the owner's latest tag and reads the files
    inputs = _volumes(_release(deployment, "vown/app"))["inputs"]
    assert inputs.expected_tag == tag
    with Volume.open(vol, inputs.key, expected_tag=inputs.expected_tag, read_only=True) as opened:
        assert opened.open_file("in/src/a.csv").read() == "x,y\n1,2\n"

    # a restored older copy is refused to the owner too
    backup = tmp_path / "backup"
    shutil.copytree(vol, backup)
    (src / "a.csv").write_text("changed\n")
    assert _cli(deployment, ["import", vol, str(src / "a.csv"), *cas]).returncode == 0
    shutil.rmtree(vol)
    shutil.copytree(backup, vol)
    stale = _cli(deployment, ["export", vol, str(tmp_path / "out2"), *cas])
    assert stale.returncode != 0 and "older copy" in stale.stderr and "Traceback" not in stale.stderr
    keys = [e for e in _audit(deployment) if e["event"] == "volume.key" and e["subject"] == "vown:inputs"]
    assert [e["details"]["access"] for e in keys][:3] == ["update", "update", "update"]


def test_outsiders_are_refused_and_audited(deployment: Any, tmp_path: Path) -> None:
    _session(deployment, "vout")
    vol = str(tmp_path / "results")
    cas = ["--config-id", "vout/app", "--volume", "results"]
    assert _cli(deployment, ["create", vol, *cas]).returncode == 0
    for action in (["export", vol, str(tmp_path / "x")], ["import", vol, str(tmp_path)], ["show", vol]):
        refused = _cli(deployment, [*action, *cas], home=deployment.bob)
        assert refused.returncode == 1, refused.stderr
        assert "may not" in refused.stderr and "access_policy" in refused.stderr
    assert not (tmp_path / "x").exists()
    refusals = [e for e in _audit(deployment) if e["subject"] == "vout:results" and e["outcome"] == "refused"]
    assert [(e["event"], e["details"]["access"]) for e in refusals] == [
        ("volume.key", "read"),
        ("volume.key", "update"),
        ("volume.key", "read"),
    ]


def test_ephemeral_volumes_have_no_tag_on_the_cas(deployment: Any, tmp_path: Path) -> None:
    _session(deployment, "veph")
    vol = str(tmp_path / "scratch")
    cas = ["--config-id", "veph/app", "--volume", "scratch"]
    assert _cli(deployment, ["create", vol, *cas]).returncode == 0
    (tmp_path / "f").write_text("tmp")
    assert _cli(deployment, ["import", vol, str(tmp_path / "f"), *cas]).returncode == 0
    scratch = _volumes(_release(deployment, "veph/app"))["scratch"]
    assert scratch.expected_tag is None and scratch.token is None
    with Volume.open(vol, scratch.key, read_only=True) as opened:
        assert opened.listdir() == ["f"]


def test_volume_keys_are_absent_from_the_database(sqlite_deployment: Any, tmp_path: Path) -> None:
    deployment = sqlite_deployment
    _session(deployment, "vrest")
    vols = _volumes(_release(deployment, "vrest/app"))
    with _store(deployment, _release(deployment, "vrest/app")) as store:
        store.compare_and_swap("results", "", _tag("r"))
    needles = [v.key for v in vols.values()] + [v.key.hex().encode() for v in vols.values()]
    needles += [v.token.encode() for v in vols.values() if v.token]
    files = [p for p in deployment.server.state_dir.iterdir() if p.name.startswith("cas.db")]
    assert files
    everything = b"".join(p.read_bytes() for p in files)
    assert _tag("r").encode() in everything  # the scan sees the rows: the tag is stored in the clear
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"a volume key or token is in plaintext in {path.name}"
    log = deployment.server.log().encode()
    for needle in needles:
        assert needle not in log


def test_a_forked_child_commits_on_its_own_connection(deployment: Any) -> None:
    _session(deployment, "vfork")
    with _store(deployment, _release(deployment, "vfork/app")) as store:
        store.compare_and_swap("results", "", _tag("p1"))  # the parent's connection is now open
        pid = os.fork()
        if pid == 0:  # the child: its own connection, never the parent's TLS stream
            code = 3
            try:
                store.compare_and_swap("results", _tag("p1"), _tag("c1"))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with pytest.raises(volume_client.VolumeTagRefused) as info:
            store.compare_and_swap("results", _tag("p1"), _tag("p2"))
        assert info.value.code == "committed_elsewhere"
        store.compare_and_swap("results", _tag("c1"), _tag("p2"))  # the parent's connection still works


def test_audit_chain_with_volume_entries_verifies(deployment: Any) -> None:
    from .test_cas_e2e import _run_local

    _session(deployment, "vaudit")
    with _store(deployment, _release(deployment, "vaudit/app")) as store:
        store.compare_and_swap("results", "", _tag("audit"))
    with _admin(deployment, deployment.alice) as admin:
        admin.transport.call("POST", "/v1/sessions/vaudit/volumes/results/key", {"access": "read"})
    server = deployment.server
    args = ["cas", "audit", "verify", "--state-dir", str(server.state_dir), "--json"]
    if server.db_url:
        args += ["--db-url", server.db_url]
    result = _run_local(server, args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["head_authenticated"] is True
    events = {e["event"] for e in _audit(deployment)}
    assert {"volume.commit", "volume.key"} <= events
