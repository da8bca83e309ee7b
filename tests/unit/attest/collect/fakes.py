"""Stand-ins for the kernel's configfs-tsm and Gramine's /dev/attestation, on a real directory tree.

They model only the file protocol: attributes a collector writes are FIFOs served by a thread, so a
write is taken when the collector closes it and a read blocks until the "kernel" has produced the
answer, as the real pseudo-files behave. Nothing here is a TEE: the evidence is synthetic (right
layout, report data where the hardware puts it, no valid signature). The real test of these paths
needs SGX, TDX or SEV-SNP hardware (docs/evidence-collection.md).
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, List, Optional

from citadel.attest.collect.tsm import Configfs

QUOTE_HEADER_SIZE = 48


def sgx_quote(report_data: bytes, version: int = 3) -> bytes:
    """A synthetic SGX quote: header, 384-byte report body (REPORTDATA at 320), a dummy tail."""
    header = struct.pack("<HHI", version, 2, 0).ljust(QUOTE_HEADER_SIZE, b"\x00")
    descriptor = struct.pack("<HI", 1, 384) if version == 5 else b""
    body = bytes(320) + report_data.ljust(64, b"\x00")
    return header + descriptor + body + b"signature data"


def tdx_quote(report_data: bytes, version: int = 4) -> bytes:
    """A synthetic TDX quote: header, 584-byte TD report body (REPORTDATA at 520), a dummy tail."""
    header = struct.pack("<HHI", version, 2, 0x81).ljust(QUOTE_HEADER_SIZE, b"\x00")
    descriptor = struct.pack("<HI", 2, 584) if version == 5 else b""
    body = bytes(520) + report_data.ljust(64, b"\x00")
    return header + descriptor + body + b"signature data"


def snp_report(report_data: bytes) -> bytes:
    """A synthetic SEV-SNP report: 0x4A0 bytes, version 2, REPORT_DATA at 0x50."""
    return (struct.pack("<I", 2) + bytes(0x4C) + report_data.ljust(64, b"\x00")).ljust(0x4A0, b"\x00")


def cert_table(certs: dict[str, bytes], *, mixed_endian: bool = False) -> bytes:
    """An SEV-SNP certificate table: 24-byte entries {GUID, offset, length}, a zero entry, the blobs."""
    entries = len(certs) + 1
    offset = 24 * entries
    head, blobs = b"", b""
    for guid, blob in certs.items():
        raw = uuid.UUID(guid).bytes_le if mixed_endian else uuid.UUID(guid).bytes
        head += struct.pack("<16sII", raw, offset + len(blobs), len(blob))
        blobs += blob
    return head + bytes(24) + blobs


def _serve_fifo_loop(stop: threading.Event, inbound: str, outbound: str, answer: Callable[[bytes], bytes],
                     after_write: Callable[[], None]) -> None:
    """Until stopped: take one write on `inbound`, then serve one read of `outbound`."""
    while not stop.is_set():
        with open(inbound, "rb") as fifo:
            data = fifo.read()
        if stop.is_set():
            return
        after_write()
        with open(outbound, "wb") as fifo:
            if stop.is_set():
                return
            fifo.write(answer(data))


def _unblock(stop: threading.Event, inbound: str, outbound: str, thread: threading.Thread) -> None:
    """Release a server blocked in open() of either FIFO, until it has ended (5 s at most)."""
    stop.set()
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        for path, flags in ((inbound, os.O_WRONLY), (outbound, os.O_RDONLY)):
            try:
                fd = os.open(path, flags | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody waits on this FIFO (yet)
                continue
            os.close(fd)
        thread.join(timeout=0.01)
    assert not thread.is_alive(), "the fake's server thread did not stop"


class FakeTsmKernel(Configfs):
    """configfs-tsm as the kernel behaves for one report entry (see the module docstring).

    provider=None leaves `provider` out; `concurrent_writes` is how many extra writes "another
    process" makes to the entry on each of the first `interfering` requests; `report` makes the
    outblob from the inblob bytes; `auxblob` is placed as is.
    """

    def __init__(self, provider: Optional[str] = "tdx_guest", *, report: Optional[Callable[[bytes], bytes]] = None,
                 auxblob: Optional[bytes] = None, concurrent_writes: int = 0, interfering: int = 0) -> None:
        self.provider = provider
        self.report = report or (lambda data: tdx_quote(data))
        self.auxblob = auxblob
        self.concurrent_writes = concurrent_writes
        self.interfering = interfering
        self.requests = 0
        self.created: List[str] = []
        self.removed: List[str] = []
        self._servers: dict[str, tuple] = {}

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o700)
        self.created.append(path)
        entry = Path(path)
        if self.provider is not None:
            (entry / "provider").write_text(self.provider + "\n")
        (entry / "generation").write_text("0\n")
        if self.auxblob is not None:
            (entry / "auxblob").write_bytes(self.auxblob)
        os.mkfifo(entry / "inblob")
        os.mkfifo(entry / "outblob")
        stop = threading.Event()
        thread = threading.Thread(
            target=_serve_fifo_loop,
            args=(stop, str(entry / "inblob"), str(entry / "outblob"), self.report, lambda: self._bump(entry)),
            daemon=True,
        )
        thread.start()
        self._servers[path] = (stop, thread)

    def _bump(self, entry: Path) -> None:
        self.requests += 1
        extra = self.concurrent_writes if self.requests <= self.interfering else 0
        generation = int((entry / "generation").read_text()) + 1 + extra
        (entry / "generation.tmp").write_text(f"{generation}\n")
        os.replace(entry / "generation.tmp", entry / "generation")

    def rmdir(self, path: str) -> None:
        stop, thread = self._servers.pop(path)
        _unblock(stop, f"{path}/inblob", f"{path}/outblob", thread)
        shutil.rmtree(path)
        self.removed.append(path)


class FakeGramine:
    """/dev/attestation under `root`: attestation_type, and user_report_data -> quote served by a thread."""

    def __init__(self, root: Path, *, attestation_type: str = "dcap",
                 quote: Optional[Callable[[bytes], bytes]] = None) -> None:
        self.base = root / "dev" / "attestation"
        self.base.mkdir(parents=True)
        (self.base / "attestation_type").write_text(attestation_type + "\n")
        self.inbound, self.outbound = str(self.base / "user_report_data"), str(self.base / "quote")
        os.mkfifo(self.inbound)
        os.mkfifo(self.outbound)
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_serve_fifo_loop,
            args=(self._stop, self.inbound, self.outbound, quote or sgx_quote, self._count),
            daemon=True,
        )
        self._thread.start()

    def _count(self) -> None:
        self.requests += 1

    def close(self) -> None:
        _unblock(self._stop, self.inbound, self.outbound, self._thread)
