"""Injected files (released by the CAS): served from sealed memfds, read-only, never from the host's disk.

The shield is exercised here without installing it over the process's own functions (the real
engine does that: tests/integration/test_engine_cas.py)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from citadel.engine.injected import InjectedFileReadOnly, InjectedFiles, check_paths, current_functions
from citadel.errors import SealedFileReadOnly, UsageError

CONF = "/etc/citadel-unit-test/app.conf"
CONTENT = b"password=imported\nsecond line\n"


@pytest.fixture
def shield() -> Iterator[InjectedFiles]:
    injected = InjectedFiles({CONF: CONTENT, "/opt/citadel-unit-test/empty": b""}, current_functions())
    yield injected
    injected.close()


def test_reading_serves_the_content_from_memory(shield: InjectedFiles) -> None:
    assert not os.path.exists(CONF), "the path need not exist on the host"
    with shield.open(CONF) as fh:
        assert fh.read() == CONTENT.decode()
        assert fh.name == CONF
    with shield.open(CONF, "rb", buffering=0) as raw:
        assert os.readlink(f"/proc/self/fd/{raw.fileno()}").startswith("/memfd:app.conf")
        raw.seek(9)
        assert raw.read(8) == b"imported"
    fd = shield.os_open(CONF, os.O_RDONLY)
    try:
        assert os.read(fd, 100) == CONTENT
    finally:
        os.close(fd)
    with shield.open("/opt/citadel-unit-test/empty", "rb") as empty:
        assert empty.read() == b""


def test_stat_reports_a_read_only_regular_file(shield: InjectedFiles) -> None:
    for result in (shield.stat(CONF), shield.lstat(CONF)):
        assert stat.S_ISREG(result.st_mode) and stat.S_IMODE(result.st_mode) == 0o444
        assert result.st_size == len(CONTENT) and result.st_mtime_ns > 0
    assert shield.access(CONF, os.R_OK) and not shield.access(CONF, os.W_OK)


@pytest.mark.parametrize("mode", ["w", "a", "x", "r+", "rb+", "wb"])
def test_every_write_mode_is_refused(shield: InjectedFiles, mode: str) -> None:
    with pytest.raises(InjectedFileReadOnly) as caught:
        shield.open(CONF, mode)
    assert isinstance(caught.value, PermissionError) and isinstance(caught.value, SealedFileReadOnly)
    assert caught.value.errno == errno.EACCES and caught.value.filename == CONF
    assert "read-only" in caught.value.cause and caught.value.remedy


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND])
def test_os_open_for_writing_is_refused(shield: InjectedFiles, flags: int) -> None:
    with pytest.raises(InjectedFileReadOnly):
        shield.os_open(CONF, flags)


@pytest.mark.parametrize("name, args", [
    ("remove", (CONF,)), ("unlink", (CONF,)), ("chmod", (CONF, 0o666)), ("truncate", (CONF, 0)),
    ("rename", (CONF, "/tmp/x")), ("replace", ("/tmp/x", CONF)), ("link", ("/tmp/x", CONF)),
    ("symlink", ("/tmp/x", CONF)), ("mkdir", (CONF,)), ("utime", (CONF,)),
])
def test_changing_it_in_any_other_way_is_refused(shield: InjectedFiles, name: str, args: tuple) -> None:
    with pytest.raises(InjectedFileReadOnly):
        shield.refusing(name)(*args)


def test_other_paths_go_to_the_functions_in_place(shield: InjectedFiles, tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    with shield.open(plain, "w") as fh:
        fh.write("host file")
    assert shield.stat(plain).st_size == 9
    shield.refusing("remove")(str(plain))
    assert not plain.exists()
    assert shield.listdir(str(tmp_path)) == []
    with pytest.raises(NotADirectoryError):
        shield.listdir(CONF)


def test_paths_are_matched_lexically_against_the_working_directory(shield: InjectedFiles,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/etc")
    assert shield.find("citadel-unit-test/./app.conf") == CONF
    assert shield.find(b"/etc//citadel-unit-test/../citadel-unit-test/app.conf") == CONF
    assert shield.find(Path(CONF)) == CONF
    assert shield.find("/etc/citadel-unit-test") is None and shield.find(3) is None


def test_bypassing_the_wrappers_is_refused_by_the_audit_hook(shield: InjectedFiles) -> None:
    with pytest.raises(PermissionError, match="bypasses open"):
        shield.audit("open", (CONF, "r", 0))
    shield.audit("open", ("/etc/hostname", "r", 0))
    shield.audit("open", (5, "r", 0))


@pytest.mark.parametrize("path, fragment", [
    ("relative/app.conf", "not a normalised absolute path"),
    ("/etc/../etc/app.conf", "not a normalised absolute path"),
    ("/", "not a normalised absolute path"),
    ("/proc/self/maps", "inside /proc"),
    ("/dev/null", "inside /dev"),
    ("/data/out/config", "inside the volume mounted at /data/out"),
])
def test_injected_paths_that_cannot_be_served_are_refused(path: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        check_paths([path], ["/data/out"])
