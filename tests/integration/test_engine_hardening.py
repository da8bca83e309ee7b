"""Hardening seen from inside a real engine: not dumpable, no core files, CITADEL_HEAP enforced with
advice, CITADEL_STACK applied, no bytecode written."""

from __future__ import annotations

from pathlib import Path

from tests.integration import engine_harness
from tests.integration.engine_harness import (
    launch,
    request,
    sealed_app,
    two_line_error,
)

engine_cache = engine_harness.engine_cache  # fixtures shared by the engine tests
settings = engine_harness.settings


def test_engine_is_not_dumpable_and_writes_no_core(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"inspect_self.py": """
        import ctypes, resource, sys
        PR_GET_DUMPABLE = 3
        print("dumpable", ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
        print("core", resource.getrlimit(resource.RLIMIT_CORE))
        print("bytecode", sys.dont_write_bytecode)
        status = open("/proc/self/status").read()
        print([line for line in status.splitlines() if line.startswith(("NoNewPrivs", "Seccomp:"))])
    """})
    result = launch(request(image=image, argv=["inspect_self.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "dumpable 0", "core (0, 0)", "bytecode True", "['NoNewPrivs:\\t1', 'Seccomp:\\t2']"]


def test_heap_limit_turns_a_big_allocation_into_advice(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"big.py": "print('start')\nblob = bytearray(256 * 1024 * 1024)\nprint('never')\n"})
    result = launch(request(image=image, argv=["big.py"]), {**settings, "CITADEL_HEAP": "64M"})
    assert result.returncode == 71
    assert result.stdout == "start\n"
    cause, remedy = two_line_error(result)
    assert cause == "the program ran out of heap (CITADEL_HEAP=64M)"
    assert remedy == "raise CITADEL_HEAP, e.g. CITADEL_HEAP=512M"


def test_heap_limit_leaves_room_for_threads(tmp_path: Path, settings: dict) -> None:
    """RLIMIT_DATA, not RLIMIT_AS: glibc's per-thread arena reservations do not count."""
    image = sealed_app(tmp_path, {"threads.py": """
        import resource, threading
        results = []
        def work(n):
            results.append(len(bytearray(4 * 1024 * 1024)) + n)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(len(results), resource.getrlimit(resource.RLIMIT_DATA)[0] // (1 << 20))
    """})
    result = launch(request(image=image, argv=["threads.py"]), {**settings, "CITADEL_HEAP": "96M",
                                                                   "CITADEL_STACK": "1M"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "6 96\n"


def test_stack_setting_applies_to_new_threads(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"stack.py": "import threading\nprint(threading.stack_size())\n"})
    result = launch(request(image=image, argv=["stack.py"]), {**settings, "CITADEL_STACK": "2M"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{2 << 20}\n"


def test_heap_smaller_than_the_engine_needs_is_a_usage_error(settings: dict) -> None:
    result = launch(request(interactive=True), {**settings, "CITADEL_HEAP": "1M"})
    assert result.returncode == 64
    cause, remedy = two_line_error(result)
    assert cause.startswith("CITADEL_HEAP=1M is too small")
    assert "CITADEL_HEAP=256M" in remedy


def test_no_bytecode_is_written_for_sealed_or_engine_code(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"main.py": "import helper\nimport json, email.parser\n",
                                  "helper.py": "X = 1\n"})
    result = launch(request(image=image, argv=["main.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert not list(image.rglob("__pycache__"))
