"""Start-up benchmark: `citadel run` of sealed programs against plain Python, in one run.

Prints, for a hello-world script and for `import numpy`, the median wall time of each side over
interleaved repetitions and the ratio citadel / native. Machines here are noisy, so the two
sides alternate and only ratios measured in the same run are compared.

usage: python bench/startup/run.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
CITADEL = str(BIN / "citadel")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def compare(name: str, native: list[str], sealed: list[str], repeat: int, env: dict[str, str]) -> float:
    timed(native, env), timed(sealed, env)  # warm caches (and the engine manifest) first
    a, b = [], []
    for _ in range(repeat):
        a.append(timed(native, env))
        b.append(timed(sealed, env))
    na, nb = statistics.median(a), statistics.median(b)
    print(f"{name:<14} native {na * 1000:7.1f} ms   citadel {nb * 1000:7.1f} ms   ratio {nb / na:5.2f}x")
    return nb / na


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CITADEL_"))}
    env["CITADEL_MODE"] = "sim"
    work = Path(tempfile.mkdtemp(prefix="citadel-bench-"))
    env["CITADEL_CACHE_DIR"] = str(work / "cache")  # a manifest of the engine as installed now
    try:
        app = work / "app"
        app.mkdir()
        (app / "hello.py").write_text("print('hello, world')\n")
        (app / "np.py").write_text("import numpy\nprint(numpy.arange(15).reshape(3, 5).sum())\n")
        import numpy  # the benchmark's own environment provides numpy

        site = work / "site"
        site.mkdir()
        numpy_dir = Path(numpy.__file__).parent
        shutil.copytree(numpy_dir, site / "numpy", ignore=shutil.ignore_patterns("__pycache__", "tests"))
        libs = numpy_dir.parent / "numpy.libs"
        if libs.is_dir():
            shutil.copytree(libs, site / "numpy.libs")
        image, key = work / "app.img", work / "app.key"
        subprocess.run([CITADEL, "seal", str(app), "-o", str(image), "--key-out", str(key),
                        "--python-path", str(site), "--quiet"], check=True, env=env)
        run = [CITADEL, "run", "--image", str(image), "--key-file", str(key)]
        print(f"python: {sys.version.split()[0]}  repeat: {args.repeat}  mode: sim")
        compare("hello world", [sys.executable, "-I", str(app / "hello.py")], run + ["hello.py"], args.repeat, env)
        compare("import numpy", [sys.executable, str(app / "np.py")], run + ["np.py"], args.repeat, env)
        print("aims: hello world <= 1.5x, import numpy <= 1.3x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
