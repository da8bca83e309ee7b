"""The guard's decisions, without installing it (an audit hook cannot be removed from this process)."""

from __future__ import annotations

import pytest

from citadel.engine import libraries
from citadel.engine.guard import Guard, GuardRefusal
from citadel.errors import CitadelError


def test_refusal_is_a_permission_error_and_a_citadel_error() -> None:
    refusal = GuardRefusal("cause", "remedy")
    assert isinstance(refusal, PermissionError) and isinstance(refusal, CitadelError)
    assert str(refusal) == "cause"
    assert refusal.diagnostics() == "citadel: error: cause\ncitadel: hint: remedy"


@pytest.mark.parametrize("event, args", [
    ("subprocess.Popen", ("ls", ["ls"], None, None)),
    ("os.system", (b"ls",)),
    ("os.exec", ("/bin/ls", ["ls"], None)),
    ("os.posix_spawn", ("/bin/ls", ["ls"], {})),
    ("os.spawn", (0, "/bin/ls", ["ls"], None)),
    ("pty.spawn", (["ls"],)),
])
def test_starting_programs_is_refused(event: str, args: tuple) -> None:
    with pytest.raises(GuardRefusal, match="running other programs is not allowed inside the engine yet"):
        Guard(None, allow_dlopen=True).hook(event, args)


@pytest.mark.parametrize("event", ["os.fork", "open", "import", "os.forkpty", "ctypes.dlsym"])
def test_other_events_pass(event: str) -> None:
    Guard(None, allow_dlopen=False).hook(event, ("x",))


def test_libraries_already_loaded_or_registered_are_allowed(tmp_path: object) -> None:
    guard = Guard(None, allow_dlopen=False)
    guard.check_library(None)
    guard.check_library("libc.so.6")  # mapped into every python process
    libraries.allow("/proc/self/fd/999")
    guard.check_library("/proc/self/fd/999")
    with pytest.raises(GuardRefusal, match="refusing to load the library libnot-here.so.7"):
        guard.check_library("libnot-here.so.7")
    with pytest.raises(GuardRefusal):
        guard.check_library("/tmp/planted.so")


def test_allow_dlopen_allows_and_warns_once(capsys: pytest.CaptureFixture) -> None:
    guard = Guard(None, allow_dlopen=True)
    guard.check_library("/tmp/planted.so")
    guard.check_library("/tmp/planted.so")
    err = capsys.readouterr().err
    assert err.count("loading the unprotected library /tmp/planted.so") == 1
