"""The guard inside a real engine: unverified libraries and other programs are refused with one clear
message, CITADEL_ALLOW_DLOPEN=1 lets libraries load with a warning, and fork keeps every shield."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration import engine_harness
from tests.integration.engine_harness import (
    launch,
    request,
    sealed_app,
    two_line_error,
)

engine_cache = engine_harness.engine_cache  # fixtures shared by the engine tests
settings = engine_harness.settings

SYSTEM_ZLIB = Path("/usr/lib/x86_64-linux-gnu/libz.so.1")


@pytest.fixture
def unsealed_library(tmp_path: Path) -> Path:
    """A real shared library at a host path that is neither sealed nor part of the engine."""
    if not SYSTEM_ZLIB.exists():
        pytest.fail(f"{SYSTEM_ZLIB} is needed as a stand-in for an unverified library")
    target = tmp_path / "host-libs" / "libunsealed.so"
    target.parent.mkdir()
    shutil.copyfile(SYSTEM_ZLIB.resolve(), target)
    return target


def load_library_program(path: Path) -> dict:
    return {"load.py": f"""
        import ctypes
        lib = ctypes.CDLL({str(path)!r})
        print("loaded", lib.zlibVersion is not None)
    """}


def test_unsealed_library_is_refused_by_default(tmp_path: Path, settings: dict, unsealed_library: Path) -> None:
    image = sealed_app(tmp_path, load_library_program(unsealed_library))
    result = launch(request(image=image, argv=["load.py"]), settings)
    assert result.returncode == 77
    assert result.stdout == ""
    cause, remedy = two_line_error(result)
    assert cause.startswith(f"refusing to load the library {unsealed_library}: it is neither part of the "
                            "measured engine nor verified by the sealed image")
    assert cause.endswith("(at load.py line 3)")  # line 1 is empty
    assert "CITADEL_ALLOW_DLOPEN=1" in remedy and "changes the measurement" in remedy


def test_allow_dlopen_loads_it_with_one_warning(tmp_path: Path, settings: dict, unsealed_library: Path) -> None:
    image = sealed_app(tmp_path, load_library_program(unsealed_library))
    result = launch(request(image=image, argv=["load.py"]), {**settings, "CITADEL_ALLOW_DLOPEN": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "loaded True\n"
    assert result.stderr.splitlines() == [
        f"citadel: warning: loading the unprotected library {unsealed_library} (CITADEL_ALLOW_DLOPEN=1: "
        "debugging only)"]


def test_libraries_of_the_measured_engine_load(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"libc.py": """
        import ctypes, ctypes.util
        libc = ctypes.CDLL("libc.so.6")
        print(libc.getpid() > 0)
        print(ctypes.CDLL(None).strlen(b"four"))
        try:
            ctypes.CDLL("libexpat.so.1")  # on the host, but not part of the measured engine
        except PermissionError as exc:
            print("refused", "libexpat.so.1" in str(exc))
    """})
    result = launch(request(image=image, argv=["libc.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["True", "4", "refused True"]


def test_extension_module_from_a_host_path_is_refused(tmp_path: Path, settings: dict) -> None:
    """Even through importlib's machinery directly, past every finder."""
    import sysconfig

    source = Path(sysconfig.get_paths()["stdlib"]) / "lib-dynload"
    ext = next(source.glob("_bisect.*.so"))
    planted = tmp_path / "planted" / ext.name
    planted.parent.mkdir()
    shutil.copyfile(ext, planted)
    image = sealed_app(tmp_path, {"ext.py": f"""
        import importlib.machinery, importlib.util
        loader = importlib.machinery.ExtensionFileLoader("_bisect", {str(planted)!r})
        spec = importlib.util.spec_from_file_location("_bisect", {str(planted)!r}, loader=loader)
        try:
            importlib.util.module_from_spec(spec)
        except PermissionError as exc:
            print("refused:", exc)
    """})
    result = launch(request(image=image, argv=["ext.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"refused: refusing to load the extension module _bisect from {planted}")


@pytest.mark.parametrize("call", [
    "subprocess.run(['true'])",
    "os.system('true')",
    "os.execv('/bin/true', ['true'])",
    "os.posix_spawn('/bin/true', ['true'], {})",
    "pty.spawn(['true'])",
    "_posixsubprocess.fork_exec",
])
def test_running_other_programs_is_refused(tmp_path: Path, settings: dict, call: str) -> None:
    statement = call if not call.startswith("_posix") else f"{call}(*range(23))"
    image = sealed_app(tmp_path, {"run.py": f"import os, pty, subprocess, _posixsubprocess\n{statement}\n"})
    result = launch(request(image=image, argv=["run.py"]), settings)
    assert result.returncode == 77, result.stderr
    cause, remedy = two_line_error(result)
    assert cause.startswith("running other programs is not allowed inside the engine yet")
    assert cause.endswith("(at run.py line 2)")
    assert "os.fork" in remedy


def test_a_program_may_catch_the_refusal(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"catch.py": """
        import subprocess
        try:
            subprocess.run(["ls"])
        except PermissionError as exc:
            print("caught:", exc)
        print("still running")
    """})
    result = launch(request(image=image, argv=["catch.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "caught: running other programs is not allowed inside the engine yet (subprocess.Popen: ['ls'])",
        "still running"]


def test_fork_works_and_the_child_keeps_the_guard(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"fork.py": """
        import os, subprocess, sys
        pid = os.fork()
        if pid == 0:
            try:
                subprocess.run(["true"])
                os._exit(10)
            except PermissionError:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        print("child exited", os.waitstatus_to_exitcode(status))
    """})
    result = launch(request(image=image, argv=["fork.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "child exited 3\n"


def test_multiprocessing_with_fork_works(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"pool.py": """
        import multiprocessing as mp

        def square(x):
            return x * x

        if __name__ == "__main__":
            with mp.get_context("fork").Pool(2) as pool:
                print(sum(pool.map(square, range(10))))
    """})
    result = launch(request(image=image, argv=["pool.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "285\n"


def test_exec_is_refused_by_the_kernel_too(tmp_path: Path, settings: dict) -> None:
    """Code that calls libc's execv directly gets EPERM from the seccomp filter."""
    image = sealed_app(tmp_path, {"direct.py": """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        argv = (ctypes.c_char_p * 2)(b"/bin/true", None)
        result = libc.execv(b"/bin/true", argv)
        print(result, os.strerror(ctypes.get_errno()))
    """})
    result = launch(request(image=image, argv=["direct.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "-1 Operation not permitted\n"
