"""Channels to a TPM 2.0: the kernel's resource manager device, or swtpm's TCP command socket.

Both carry raw TPM command bytes and return raw response bytes (docs/evidence-collection.md):

* `/dev/tpmrm0`: one `write` of a whole command, one `read` of the whole response (the kernel's
  resource manager virtualizes object and session slots per open file and flushes them on close).
* swtpm `--server type=tcp`: the same bytes on a stream socket; the response is read as its 10-byte
  header, then `responseSize - 10` more bytes. There is no resource manager behind it.

A TPM spec string names the channel: `tcp:HOST:PORT` or a device path (default `/dev/tpmrm0`, under
the collection root). Engine-safe: standard library only, Python 3.9.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Optional

from citadel.attest.collect.errors import CollectionError, TpmProtocolError
from citadel.attest.collect.tpm_wire import HEADER, MAX_RESPONSE

DEFAULT_DEVICE = "/dev/tpmrm0"
TCP_TIMEOUT = 60.0  # seconds for one command (key generation on a slow TPM takes a few)


class Transport:
    """Send one command, return its response; close when done."""

    name = "TPM"

    def transact(self, command: bytes) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeviceTransport(Transport):
    """A TPM character device (the resource manager /dev/tpmrm0, or /dev/tpm0 without one)."""

    def __init__(self, path: str) -> None:
        self.name = path
        try:
            self._fd: Optional[int] = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise _open_error(path, exc) from None

    def transact(self, command: bytes) -> bytes:
        if self._fd is None:
            raise CollectionError(f"the TPM channel {self.name} is closed", "open a new TpmClient")
        try:
            written = os.write(self._fd, command)
            if written != len(command):
                raise CollectionError(f"{self.name} took {written} of {len(command)} command bytes",
                                      "use the kernel's TPM driver (it takes whole commands)")
            return os.read(self._fd, MAX_RESPONSE)
        except OSError as exc:
            raise CollectionError(f"talking to the TPM at {self.name} failed: {exc.strerror or exc}",
                                  "check the kernel log (dmesg) for TPM errors") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class TcpTransport(Transport):
    """swtpm's TCP command channel (`swtpm socket --tpm2 --server type=tcp,port=P`)."""

    def __init__(self, host: str, port: int, timeout: float = TCP_TIMEOUT) -> None:
        self.name = f"tcp:{host}:{port}"
        try:
            self._sock: Optional[socket.socket] = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise CollectionError(f"cannot connect to the TPM at {self.name}: {exc}",
                                  "start swtpm with --server type=tcp on that port, or set the right address") from None

    def _recv_exactly(self, count: int) -> bytes:
        assert self._sock is not None
        chunks = []
        while count:
            chunk = self._sock.recv(count)
            if not chunk:
                raise TpmProtocolError(f"{self.name} closed the connection in the middle of a response")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def transact(self, command: bytes) -> bytes:
        if self._sock is None:
            raise CollectionError(f"the TPM channel {self.name} is closed", "open a new TpmClient")
        try:
            self._sock.sendall(command)
            header = self._recv_exactly(HEADER.size)
            size = HEADER.unpack(header)[1]
            if not HEADER.size <= size <= MAX_RESPONSE:
                raise TpmProtocolError(f"a response size of {size} bytes is not 10..{MAX_RESPONSE}")
            return header + self._recv_exactly(size - HEADER.size)
        except OSError as exc:  # socket.timeout is an OSError
            raise CollectionError(f"talking to the TPM at {self.name} failed: {exc}",
                                  "check that swtpm is running and serves that port") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _open_error(path: str, exc: OSError) -> CollectionError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return CollectionError(f"no permission to open the TPM at {path}",
                               "run the engine as a member of the group owning the device (usually tss)")
    if exc.errno == errno.ENOENT:
        return CollectionError(f"there is no TPM at {path}",
                               "load the TPM driver (tpm_crb or tpm_tis), or choose another evidence kind")
    if exc.errno == errno.EBUSY:
        return CollectionError(f"the TPM at {path} is in use by another process",
                               "use the resource manager /dev/tpmrm0, which many processes can share")
    return CollectionError(f"cannot open the TPM at {path}: {exc.strerror or exc}", "check the device")


def open_transport(spec: Optional[str] = None, *, root: str = "/") -> Transport:
    """The channel a spec names: None -> ROOT/dev/tpmrm0; `tcp:HOST:PORT`; or a device path under ROOT."""
    if spec is not None and spec.startswith("tcp:"):
        host, sep, port = spec[4:].rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise CollectionError(f"TPM address {spec!r} is not tcp:HOST:PORT", "write e.g. tcp:127.0.0.1:2321")
        return TcpTransport(host.strip("[]"), int(port))
    path = spec or DEFAULT_DEVICE
    if root not in ("", "/"):
        path = os.path.join(root, path.lstrip("/"))
    return DeviceTransport(path)
