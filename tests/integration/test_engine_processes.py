"""Processes inside a real engine: fork keeps the shields; multiprocessing (fork, spawn, forkserver),
ProcessPoolExecutor and subprocess of sys.executable start child *engines* configured over an encrypted,
authenticated channel; other programs stay refused; a host-started child or a tampered channel gets nothing."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from citadel.engine.command import engine_command, engine_environment
from citadel.engine.processes_channel import HELLO, HELLO_MAGIC, ChildChannelError, parent_send
from tests.integration import engine_harness
from tests.integration.engine_harness import KEY, PYTHON, launch, request, sealed_app, two_line_error

engine_cache = engine_harness.engine_cache  # fixtures shared by the engine tests
settings = engine_harness.settings

POOL_PROGRAM = """
    import multiprocessing as mp, os, sys

    def work(x):
        # each worker is protected: reading a sealed file works, starting a program does not
        with open(os.path.join(os.path.dirname(__file__), "data.txt")) as fh:
            offset = int(fh.read())
        try:
            import subprocess
            subprocess.run(["true"])
            refused = False
        except PermissionError:
            refused = True
        return x * x + offset, refused

    if __name__ == "__main__":
        with mp.get_context(sys.argv[1]).Pool(2) as pool:
            results = pool.map(work, range(10))
        print(sum(r for r, _ in results), all(refused for _, refused in results))
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_pool_computes_the_right_result_with_each_start_method(tmp_path: Path, settings: dict, method: str) -> None:
    image = sealed_app(tmp_path, {"pool.py": POOL_PROGRAM, "data.txt": "1"})
    result = launch(request(image=image, argv=["pool.py", method]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "295 True\n"  # 285 + 10 x the sealed offset; every worker refused `true`


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_executor(tmp_path: Path, settings: dict, method: str) -> None:
    image = sealed_app(tmp_path, {"pool.py": """
        import concurrent.futures, multiprocessing as mp, sys

        def cube(x):
            return x ** 3

        if __name__ == "__main__":
            context = mp.get_context(sys.argv[1])
            with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as executor:
                print(sum(executor.map(cube, range(5))))
    """})
    result = launch(request(image=image, argv=["pool.py", method]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "100\n"


def test_os_fork_child_keeps_the_shields(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"fork.py": """
        import os
        pid = os.fork()
        if pid == 0:
            import ctypes
            ok = open(os.path.join(os.path.dirname(__file__), "secret.txt")).read() == "sealed"
            try:
                ctypes.CDLL("libexpat.so.1")
                os._exit(10)
            except PermissionError:
                os._exit(3 if ok else 4)
        print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """, "secret.txt": "sealed"})
    result = launch(request(image=image, argv=["fork.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "child 3\n"


def test_subprocess_of_sys_executable_is_a_child_engine(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"parent.py": """
        import os, subprocess, sys
        os.environ["GREETING"] = "hello"
        child = subprocess.run([sys.executable, "child.py", "a b", "c"], input="from stdin", capture_output=True,
                               text=True)
        print("status", child.returncode)
        print(child.stdout, end="")
        print("stderr", repr(child.stderr))
        # a command, and a child engine starting its own child engine
        out = subprocess.check_output([sys.executable, "-c",
                                       "import subprocess, sys; subprocess.run([sys.executable, '-m', 'helper'])"])
        print(out.decode(), end="")
    """, "child.py": """
        import os, subprocess, sys
        print("argv", sys.argv[1:], os.path.basename(sys.argv[0]))
        print("env", os.environ.get("GREETING"), "CITADEL_CHILD_FD" in os.environ)
        print("stdin", sys.stdin.read())
        print("sealed", open("data.txt").read())
        try:
            subprocess.run(["true"])
        except PermissionError as exc:
            print("refused", "not allowed by this engine's policy" in exc.remedy)
        sys.exit(5)
    """, "helper.py": "print('grandchild', __name__)\n", "data.txt": "42"})
    result = launch(request(image=image, argv=["parent.py"], cwd=image), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "status 5", "argv ['a b', 'c'] child.py", "env hello False", "stdin from stdin", "sealed 42",
        "refused True", "stderr ''", "grandchild __main__"]


def test_other_programs_stay_refused_and_say_how(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"run.py": """
        import multiprocessing, subprocess
        try:
            subprocess.run(["/bin/sh", "-c", "true"])
        except PermissionError as exc:
            print("popen:", exc.remedy)
        multiprocessing.set_executable("/bin/true")
        try:
            multiprocessing.get_context("spawn").Process(target=print).start()
        except PermissionError as exc:
            print("spawn:", exc)
    """})
    result = launch(request(image=image, argv=["run.py"]), settings)
    assert result.returncode == 0, result.stderr
    popen, spawn = result.stdout.splitlines()
    assert "not allowed by this engine's policy" in popen and "subprocess of sys.executable" in popen
    assert spawn == ("spawn: running other programs is not allowed inside the engine yet (the program '/bin/true' "
                     "is not allowed by this engine's policy)")


def test_the_kernel_lets_exec_start_only_the_engine_from_its_page(tmp_path: Path, settings: dict) -> None:
    """Code calling libc directly cannot exec the interpreter either (only the mapped page's pointer passes)."""
    image = sealed_app(tmp_path, {"direct.py": """
        import ctypes, os, sys
        libc = ctypes.CDLL(None, use_errno=True)
        path = sys.executable.encode()
        argv = (ctypes.c_char_p * 3)(path, b"-c", None)
        print(libc.execv(path, argv), os.strerror(ctypes.get_errno()))
    """})
    result = launch(request(image=image, argv=["direct.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "-1 Operation not permitted\n"


# --- the channel ---------------------------------------------------------------------------------------
CAPTURE_PROGRAM = """
    import subprocess, sys
    from citadel.engine import processes_channel

    original = processes_channel.send
    def send(sock, data):
        with open(sys.argv[1], "wb") as fh:
            fh.write(data)
        if sys.argv[2] == "tamper":
            data = data[:-1] + bytes([data[-1] ^ 1])
        original(sock, data)
    processes_channel.send = send
    child = subprocess.run([sys.executable, "-c", "print('child ran')"], capture_output=True, text=True)
    print("status", child.returncode)
    print(child.stdout + child.stderr, end="")
"""


def test_a_tampered_channel_is_refused_and_the_child_runs_nothing(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"capture.py": CAPTURE_PROGRAM})
    result = launch(request(image=image, argv=["capture.py", str(tmp_path / "wire"), "tamper"]), settings)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "status 76" and "child ran" not in result.stdout
    assert lines[1].startswith("citadel: error: child-channel: the configuration from the parent engine does not "
                               "decrypt with this child engine's key")
    assert lines[2].startswith("citadel: hint: ")


def test_the_channel_carries_no_readable_secret(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"capture.py": CAPTURE_PROGRAM})
    wire = tmp_path / "wire"
    result = launch(request(image=image, argv=["capture.py", str(wire), "pass"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "status 0\nchild ran\n"
    data = wire.read_bytes()
    assert KEY not in data and KEY.hex().encode() not in data and b"print(" not in data


def _host_started_child(settings: dict) -> tuple[subprocess.Popen, socket.socket]:
    """What a host can do: start the engine in child mode with a channel of its own."""
    ours, theirs = socket.socketpair()
    env = engine_environment(settings, {"LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/tmp")})
    env["CITADEL_CHILD_FD"] = str(theirs.fileno())
    proc = subprocess.Popen(engine_command(PYTHON), env=env, pass_fds=(theirs.fileno(),), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    theirs.close()
    return proc, ours


def test_a_host_started_child_gets_nothing(tmp_path: Path, settings: dict) -> None:
    """Replaying a configuration recorded from a real spawn to a child the host started does not open."""
    image = sealed_app(tmp_path, {"capture.py": CAPTURE_PROGRAM})
    wire = tmp_path / "wire"
    assert launch(request(image=image, argv=["capture.py", str(wire), "pass"]), settings).returncode == 0
    proc, ours = _host_started_child(settings)
    hello = ours.recv(HELLO.size, socket.MSG_WAITALL)
    assert hello[:4] == HELLO_MAGIC and len(hello) == HELLO.size
    ours.sendall(wire.read_bytes())
    ours.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 76 and out == ""
    cause, _ = two_line_error(subprocess.CompletedProcess([], 76, out, err))
    assert "does not decrypt with this child engine's key" in cause


def test_a_host_started_child_without_a_parent_refuses(settings: dict) -> None:
    proc, ours = _host_started_child(settings)
    ours.recv(HELLO.size, socket.MSG_WAITALL)
    ours.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 64 and out == ""
    cause, remedy = two_line_error(subprocess.CompletedProcess([], 64, out, err))
    assert cause == "this engine was started as a child engine, but no parent engine sent it a configuration"
    assert "cannot be started by hand" in remedy


def test_a_parent_sends_nothing_to_a_child_of_another_measurement() -> None:
    parent, child = socket.socketpair()
    child.sendall(HELLO.pack(HELLO_MAGIC, 1, 1, 0, bytes(32), bytes(32)))
    with pytest.raises(ChildChannelError, match="is not this engine's"):
        parent_send(parent, "ab" * 32, b'{"secret": 1}')
    child.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing was sent
        child.recv(1)
    parent, child = socket.socketpair()
    child.sendall(b"GET / HTTP/1.1\r\n" * 5)
    with pytest.raises(ChildChannelError, match="did not greet as a Citadel engine"):
        parent_send(parent, "ab" * 32, b"{}")


# --- threads -------------------------------------------------------------------------------------------
def test_citadel_stack_applies_to_new_threads(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"threads.py": """
        import threading

        def depth(n):
            return 0 if n == 0 else 1 + depth(n - 1)

        results = []
        threads = [threading.Thread(target=lambda: results.append(depth(500))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(threading.stack_size(), results)
    """})
    result = launch(request(image=image, argv=["threads.py"]), {**settings, "CITADEL_STACK": "2M"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{2 << 20} [500, 500, 500, 500]\n"


NUMPY_THREADS_APP = """
import os
os.environ["OPENBLAS_NUM_THREADS"] = "4"  # read by OpenBLAS when numpy loads it
import numpy as np

a = np.arange(400 * 400, dtype=np.float64).reshape(400, 400) % 7
b = np.eye(400) * 2
for _ in range(5):
    c = a @ b
tasks = len(os.listdir("/proc/self/task"))  # OpenBLAS caps its threads at the number of CPUs
print(bool((c == a * 2).all()), tasks >= min(4, os.cpu_count() or 1) and tasks >= 2)
"""


@pytest.mark.slow
def test_numpy_with_several_blas_threads(tmp_path: Path, engine_cache: Path) -> None:
    import shutil

    from tests.conftest import citadel_cmd, clean_env

    numpy = pytest.importorskip("numpy")
    site = Path(numpy.__file__).resolve().parent.parent
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "blas.py").write_text(NUMPY_THREADS_APP)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(site / "numpy", tmp_path / "site" / "numpy", ignore=ignore)
    if (site / "numpy.libs").is_dir():
        shutil.copytree(site / "numpy.libs", tmp_path / "site" / "numpy.libs", ignore=ignore)
    env = clean_env(CITADEL_CACHE_DIR=str(engine_cache))
    sealed = subprocess.run(citadel_cmd() + ["seal", str(tmp_path / "app"), "-o", str(tmp_path / "img"),
                                             "--python-path", str(tmp_path / "site"), "--key-out",
                                             str(tmp_path / "key"), "--force"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert sealed.returncode == 0, sealed.stderr
    result = subprocess.run(citadel_cmd() + ["run", "--image", str(tmp_path / "img"), "--key-file",
                                             str(tmp_path / "key"), "--", "blas.py"],
                            capture_output=True, text=True, timeout=300,
                            env={**env, "CITADEL_MODE": "sim", "CITADEL_STACK": "1M", "CITADEL_HEAP": "1G"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True True\n"
