"""Engine start-up time: sealed hello world in the engine against plain python, interleaved runs.

    python bench/engine_startup.py [--runs 20] [--python PATH]

Seals a hello-world script into a temporary image, builds the engine manifest in a temporary
cache directory, then starts each case ``--runs`` times, round-robin (so load on the machine
hits every case alike), and prints the median and minimum wall time and the median CPU time
(user + system) of the child. The "floor" rows import what the engine needs to open an image,
without any verification, to show what the engine itself adds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from citadel.engine.command import engine_command, engine_environment  # noqa: E402
from citadel.seal.sealer import seal_tree  # noqa: E402

Sample = Tuple[float, float]  # wall seconds, child cpu seconds


def spawn(argv: List[str], env: Dict[str, str], payload: Optional[bytes] = None) -> Sample:
    devnull = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    started = time.perf_counter()
    if payload is None:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=devnull)
    else:
        read_end, write_end = os.pipe()
        os.set_inheritable(read_end, True)
        pid = os.posix_spawn(argv[0], argv, {**env, "CITADEL_LAUNCH_FD": str(read_end)}, file_actions=devnull)
        os.close(read_end)
        os.write(write_end, payload)
        os.close(write_end)
    _pid, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed with status {status}")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    python = args.python
    with tempfile.TemporaryDirectory(prefix="citadel-bench-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "hello.py").write_text('print("hello world")\n')
        key = bytes(range(32))
        seal_tree(str(src), str(Path(tmp) / "image"), key=key)
        env = engine_environment({"CITADEL_MODE": "sim", "CITADEL_CACHE_DIR": str(Path(tmp) / "cache")},
                                 {"LANG": "C.UTF-8"})
        hello = json.dumps({"version": 1, "image": str(Path(tmp) / "image"), "key": key.hex(), "argv": ["hello.py"],
                            "module": None, "interactive": False, "cwd": tmp}).encode()
        nothing = json.dumps({"version": 1, "image": None, "key": None, "argv": [], "command": "pass",
                              "module": None, "interactive": False, "cwd": tmp}).encode()
        paths = f"import sys; sys.path += [{str(REPO / 'src')!r}, {_site_of_cryptography(python)!r}]; "
        cases: Dict[str, Callable[[], Sample]] = {
            "python -I -S -c pass": lambda: spawn([python, "-I", "-S", "-c", "pass"], {}),
            "python -I hello.py": lambda: spawn([python, "-I", str(src / "hello.py")], {}),
            "floor: import cryptography (aead, hkdf)": lambda: spawn([python, "-I", "-S", "-c", paths + (
                "import cryptography.hazmat.primitives.ciphers.aead, cryptography.hazmat.primitives.kdf.hkdf")], {}),
            "floor: + citadel.seal.image, shields": lambda: spawn([python, "-I", "-S", "-c", paths + (
                "import citadel.seal.image, json, ctypes, citadel.engine.importer, citadel.engine.fileshield")], {}),
            "engine: -c pass, no image": lambda: spawn(engine_command(python), env, nothing),
            "engine: sealed hello.py": lambda: spawn(engine_command(python), env, hello),
        }
        for case in cases.values():  # warm up; the first engine start builds the manifest
            case()
        samples: Dict[str, List[Sample]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, case in cases.items():
                samples[name].append(case())
    print(f"{'case':42s} {'wall median':>12s} {'wall min':>9s} {'cpu median':>11s}   ({args.runs} runs each)")
    for name, values in samples.items():
        walls = sorted(v[0] for v in values)
        cpus = sorted(v[1] for v in values)
        print(f"{name:42s} {walls[len(walls) // 2] * 1000:9.1f} ms {walls[0] * 1000:6.1f} ms "
              f"{cpus[len(cpus) // 2] * 1000:8.1f} ms")
    return 0


def _site_of_cryptography(python: str) -> str:
    import subprocess

    out = subprocess.run([python, "-I", "-c", "import cryptography, os; print(os.path.dirname(os.path.dirname("
                          "cryptography.__file__)))"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
