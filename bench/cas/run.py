"""CAS benchmark: attestations per second and latency from concurrent clients on loopback.

For each database (SQLite in a temporary state directory; PostgreSQL in a private cluster made
from Debian's binaries), it starts a real CAS over TLS, registers a sim platform, creates a
session, and then, in the same run and against the same server process:

  baseline  the same two requests per attestation (nonce, then the attest body) answered by
            trivial endpoints (bench/cas/server.py): the cost of HTTP, TLS and JSON alone;
  attest    full attestations with the engine's own client (citadel.attest.client.CasClient):
            nonce, ephemeral key, sim evidence, verification, policy, release, audit, decryption.

Clients are `--procs` processes of `--clients`/`--procs` threads, each thread with its own
keep-alive TLS connection. Latency is per attestation (both requests). Clients and server share
this machine's cores, as they would not in production; the numbers are for this machine only.

usage: python bench/cas/run.py [--duration 10] [--clients 16] [--procs 2] [--db sqlite,postgres]
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.integration.cas.pgcluster import PostgresCluster  # noqa: E402
from tests.integration.cas.server import CasServer  # noqa: E402

from citadel.attest import binding, sim  # noqa: E402
from citadel.attest.client import CasClient  # noqa: E402
from citadel.cas.auth import default_client_key_path, identity_of, load_or_create_client_key, public_raw  # noqa: E402

MEASUREMENT = "ab" * 32
POLICY = f"""
name: bench
version: "1"
services:
  - name: app
    command: app.py --token $$citadel:token$$
    environment: {{API_KEY: "$$citadel:token$$"}}
    image: {{key: "$$citadel:image_key$$", tag: "{"cd" * 32}"}}
    attestation: {{tee: [sim], measurements: ["{MEASUREMENT}"], tolerate: [sim]}}
    inject_files: [{{path: /etc/app.conf, content: "password=$$citadel:password$$"}}]
secrets:
  - {{name: token, kind: ascii, size: 24}}
  - {{name: password, kind: ascii, size: 24}}
  - {{name: image_key, kind: binary, size: 32}}
"""


def _worker(url: str, fp: str, key_path: str, mode: str, threads: int, duration: float, out: mp.Queue) -> None:
    key = sim.load_platform_key(Path(key_path))

    def provider(kind: str, report: bytes) -> bytes:
        return sim.make_evidence(key, report, {"engine": MEASUREMENT})

    # a fixed, valid-looking body for the baseline (same size and shape as an attest request)
    _, pub = binding.generate_key_pair()
    fixed = {
        "config_id": "bench/app",
        "kind": "sim",
        "nonce": base64.b64encode(b"n" * 48).decode(),
        "public_key": base64.b64encode(pub).decode(),
        "evidence": base64.b64encode(provider("sim", b"r" * 64)).decode(),
    }
    start_at = time.monotonic() + 0.5
    results: List[Tuple[int, List[float]]] = []
    lock = threading.Lock()

    def loop() -> None:
        lat: List[float] = []
        errors = 0
        with CasClient(url, fp, timeout=30) as client:
            client.nonce()  # connect before the clock starts
            while time.monotonic() < start_at:
                time.sleep(0.001)
            end = start_at + duration
            while True:
                t0 = time.perf_counter()
                if t0 > end + (time.perf_counter() - time.monotonic()):
                    break
                try:
                    if mode == "attest":
                        client.attest("bench/app", provider, kind="sim")
                    else:
                        client.transport.call("POST", "/bench/nonce")
                        client.transport.call("POST", "/bench/echo", fixed)
                    lat.append(time.perf_counter() - t0)
                except Exception:  # noqa: BLE001 - a benchmark counts failures instead of stopping
                    errors += 1
                if time.monotonic() >= end:
                    break
        with lock:
            results.append((errors, lat))

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(results)


def _load(url: str, fp: str, key_path: str, mode: str, clients: int, procs: int, duration: float) -> Dict[str, float]:
    queue: mp.Queue = mp.Queue()
    before = os.times()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [mp.Process(target=_worker, args=(url, fp, key_path, mode, n, duration, queue)) for n in per if n]
    for w in workers:
        w.start()
    latencies: List[float] = []
    errors = 0
    for _ in workers:
        for err, lat in queue.get():
            errors += err
            latencies.extend(lat)
    for w in workers:
        w.join()
    after = os.times()
    client_cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 100 else [float("nan")] * 99
    return {
        "rate": len(latencies) / duration,
        "p50": q[49] * 1000,
        "p99": q[98] * 1000,
        "errors": errors,
        "n": len(latencies),
        "client_cpu": client_cpu,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children that were waited for (Linux /proc)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _tree(pid: int) -> List[int]:
    """A process and its descendants (uvicorn's workers)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            children = []
        todo.extend(int(c) for c in children)
    return out


def _setup(server: CasServer, key_path: Path) -> None:
    for args in (["platform", "add", "bench-host", "--key", str(key_path)], ["session", "create", "-"]):
        result = server.cli(args, input=POLICY if args[-1] == "-" else None)
        if result.returncode != 0:
            raise SystemExit(f"setup failed: {' '.join(args)}: {result.stderr}")


def bench(db: str, args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="citadel-bench-"))
    home = tmp / "home"
    home.mkdir()
    key, _ = load_or_create_client_key(default_client_key_path({"HOME": str(home)}))
    cluster = PostgresCluster().start() if db == "postgres" else None
    url = cluster.create_database("cas") if cluster else "-"
    server = CasServer(
        tmp / "state",
        home,
        command=[sys.executable, str(Path(__file__).parent / "server.py"), str(tmp / "state"), url, str(args.workers)],
    )
    server_env = server.env
    server.env = lambda **extra: {**server_env(**extra), "BENCH_OPERATOR": identity_of(public_raw(key))}  # type: ignore[method-assign]
    try:
        server.start()
        key_path = tmp / "platform.key"
        _setup(server, key_path)
        assert server.proc is not None
        for mode in ("baseline", "attest"):
            cpu0 = sum(_cpu_seconds(p) for p in _tree(server.proc.pid))
            r = _load(server.url, server.fingerprint, str(key_path), mode, args.clients, args.procs, args.duration)
            cpu = sum(_cpu_seconds(p) for p in _tree(server.proc.pid)) - cpu0
            per_op = 1000 / max(r["n"], 1)
            print(
                f"{db:9s} {mode:9s} {r['rate']:8.0f}/s  p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  "
                f"CPU/op server {cpu * per_op:.2f} ms, clients {r['client_cpu'] * per_op:.2f} ms  "
                f"({r['n']} done, {r['errors']} errors, {args.clients} clients, {args.workers} worker(s))",
                flush=True,
            )
    finally:
        server.stop()
        if cluster:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--db", default="sqlite,postgres")
    args = parser.parse_args()
    for db in args.db.split(","):
        bench(db, args)


if __name__ == "__main__":
    main()
