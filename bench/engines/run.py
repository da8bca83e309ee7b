"""Benchmark the engines: pure-Python kernels natively on CPython, in Citadel on CPython, in Citadel on PyPy.

    python bench/engines/run.py [--rounds 3] [--repeat 5] [--warmup 3] [--only nbody,regex]

Seals bench/engines/kernels.py into a temporary image, then runs every kernel in three ways,
interleaved round by round so that load on the machine affects all three alike:

  native        <this python> -I kernels.py NAME
  citadel       citadel run --mode sim --engine cpython --image IMG --key-file KEY kernels.py NAME
  citadel-pypy  citadel run --mode sim --engine pypy3   ...      (needs the PyPy engine: docs/engine.md)

Each run times its kernel inside the program (warm-up runs first, for PyPy's JIT), so start-up is
not counted. Prints each configuration's median time per kernel, its ratio to native CPython
(time / native time: below 1 is faster) and the geometric mean of the ratios. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = ["nbody", "richards", "float", "json_dumps", "regex"]
CONFIGS = ["native", "citadel", "citadel-pypy"]


def citadel() -> List[str]:
    script = os.path.join(os.path.dirname(sys.executable), "citadel")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "citadel.cli.main"]


def seal(workdir: str) -> Dict[str, str]:
    src = os.path.join(workdir, "src")
    os.mkdir(src)
    with open(os.path.join(HERE, "kernels.py"), "rb") as fh, open(os.path.join(src, "kernels.py"), "wb") as out:
        out.write(fh.read())
    image, key = os.path.join(workdir, "image"), os.path.join(workdir, "image.key")
    subprocess.run(citadel() + ["seal", src, "-o", image, "--key-out", key], check=True, capture_output=True)
    return {"image": image, "key": key}


def command(config: str, kernel: str, sealed: Dict[str, str], repeat: int, warmup: int) -> List[str]:
    args = [kernel, str(repeat), str(warmup)]
    if config == "native":
        return [sys.executable, "-I", os.path.join(HERE, "kernels.py"), *args]
    engine = "pypy3" if config == "citadel-pypy" else "cpython"
    return citadel() + ["run", "--mode", "sim", "--engine", engine, "--image", sealed["image"],
                        "--key-file", sealed["key"], "kernels.py", *args]


def run_once(argv: List[str], env: Dict[str, str]) -> List[float]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return [float(t) for t in json.loads(done.stdout.strip().splitlines()[-1])["times"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved processes per kernel and configuration")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of the kernel in each process")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (PyPy's JIT warms up)")
    parser.add_argument("--only", help="comma-separated kernels (default: all)")
    args = parser.parse_args()
    kernels = args.only.split(",") if args.only else KERNELS
    times: Dict[str, Dict[str, List[float]]] = {k: {c: [] for c in CONFIGS} for k in kernels}
    with tempfile.TemporaryDirectory(prefix="citadel-bench-engines-") as workdir:
        sealed = seal(workdir)
        # a private engine cache: the engine manifests are built from the files installed now
        env = {**os.environ, "CITADEL_CACHE_DIR": os.path.join(workdir, "cache")}
        for kernel in kernels:
            for _ in range(args.rounds):
                for config in CONFIGS:
                    times[kernel][config] += run_once(command(config, kernel, sealed, args.repeat, args.warmup), env)
    print(f"{'kernel':<12}" + "".join(f"{c + ' ms':>16}" for c in CONFIGS) + f"{'citadel/native':>16}"
          f"{'pypy/native':>14}")
    ratios: Dict[str, List[float]] = {c: [] for c in CONFIGS[1:]}
    for kernel in kernels:
        medians = {c: statistics.median(times[kernel][c]) for c in CONFIGS}
        row = f"{kernel:<12}" + "".join(f"{medians[c] * 1000:>16.2f}" for c in CONFIGS)
        for config in CONFIGS[1:]:
            ratios[config].append(medians[config] / medians["native"])
        row += f"{ratios['citadel'][-1]:>16.3f}{ratios['citadel-pypy'][-1]:>14.3f}"
        print(row)
    geo = {c: math.exp(sum(math.log(r) for r in ratios[c]) / len(ratios[c])) for c in ratios}
    print(f"{'geomean':<12}" + " " * 48 + f"{geo['citadel']:>16.3f}{geo['citadel-pypy']:>14.3f}")
    print("(time ratios against native CPython: below 1.000 is faster; aims: citadel within 1.03, pypy below 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
