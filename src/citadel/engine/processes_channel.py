"""The channel a parent engine hands a child engine its configuration through (docs/engine.md, Processes).

A Unix socket pair: the parent keeps one end, the child engine inherits the other (its number is in
``CITADEL_CHILD_FD``, the only thing of the channel the host's view of the child shows). Two messages:

1. child -> parent, HELLO (68 bytes): ``"CCH1"``, version 1, type 1, two zero bytes, the child's
   fresh X25519 public key (32 bytes), the child's engine measurement (32 bytes, raw SHA-256).
2. parent -> child, CONFIG: a big-endian u32 length, then ``binding.seal(child_public, config,
   context=CONTEXT_LABEL + hello)`` (X25519 with a fresh parent key, HKDF-SHA256, AES-256-GCM).

The parent sends only if the measurement is its own. The configuration (image key, program,
environment) is therefore encrypted to a key that exists only in the child's memory, and bound to
that very hello: a reader of the channel learns nothing, a changed byte is refused, and a recorded
CONFIG replayed to another child does not open there (its key is new). Engine-safe, Python 3.9.
"""

from __future__ import annotations

import os
import struct

from citadel.crypto import digests_equal
from citadel.engine.guard import GuardRefusal
from citadel.errors import UsageError, VerificationError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    import socket
    from typing import Callable, Tuple

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

#: magic, version, type, reserved (zero), child public key (X25519, raw), measurement (raw SHA-256)
HELLO = struct.Struct(">4sBBH32s32s")
HELLO_MAGIC = b"CCH1"
VERSION = 1
TYPE_HELLO = 1
LENGTH = struct.Struct(">I")
MAX_CONFIG = 1 << 20
CONTEXT_LABEL = b"citadel/child-launch/v1\x00"
_REMEDY = ("start child engines from inside an engine (multiprocessing, or subprocess of sys.executable); "
           "they cannot be started by hand")


class ChildChannelError(GuardRefusal):
    """The parent refused to configure a child engine (a PermissionError; exit 77 uncaught)."""


def read_exactly(fd: int, size: int, read: Callable[[int], bytes] = None) -> bytes:  # type: ignore[assignment]
    """``size`` bytes from ``fd`` (or through ``read(n)``), or fewer if the other end closed first."""
    chunks, have = [], 0
    while have < size:
        chunk = read(size - have) if read is not None else os.read(fd, size - have)
        if not chunk:
            break
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --- the child's side ---------------------------------------------------------------------------------
def child_hello(fd: int, measurement: str) -> Tuple[X25519PrivateKey, bytes]:
    """Send HELLO with a fresh key; returns (private key, the hello bytes) for `child_receive`."""
    from citadel.attest.binding import generate_key_pair

    private, public = generate_key_pair()
    hello = HELLO.pack(HELLO_MAGIC, VERSION, TYPE_HELLO, 0, public, bytes.fromhex(measurement))
    try:
        write_all(fd, hello)
    except OSError as exc:
        raise UsageError(f"this engine was started as a child engine, but no parent engine is listening on its "
                         f"channel ({exc.strerror})", _REMEDY) from None
    return private, hello


def child_receive(fd: int, private: X25519PrivateKey, hello: bytes) -> bytes:
    """The configuration the parent sealed to this child; raises if there is none or it was changed."""
    from citadel.attest.binding import open_sealed

    head = read_exactly(fd, LENGTH.size)
    if len(head) < LENGTH.size:
        raise UsageError("this engine was started as a child engine, but no parent engine sent it a "
                         "configuration", _REMEDY)
    (size,) = LENGTH.unpack(head)
    if size > MAX_CONFIG:
        raise VerificationError("child-channel", f"the child engine's configuration claims {size} bytes (at most "
                                f"{MAX_CONFIG}); the channel from the parent engine was changed",
                                "start the program again; if it persists, something on this machine interferes "
                                "with the engine's processes")
    blob = read_exactly(fd, size)
    try:
        return open_sealed(private, blob, context=CONTEXT_LABEL + hello)
    except VerificationError:
        raise VerificationError("child-channel", "the configuration from the parent engine does not decrypt "
                                "with this child engine's key: the channel was changed, or it was made for "
                                "another child", "start the program again; if it persists, something on this "
                                "machine interferes with the engine's processes") from None


# --- the parent's side --------------------------------------------------------------------------------
def parent_send(sock: socket.socket, measurement: str, config: bytes) -> None:
    """Read the child's HELLO, check it is this engine, and send it ``config`` sealed to its key.

    ``sock`` may have a timeout (socket.timeout, an OSError, if the child does not greet in time).
    """
    from citadel.attest.binding import seal

    hello = read_exactly(-1, HELLO.size, sock.recv)
    if len(hello) < HELLO.size:
        raise ChildChannelError("the child engine ended before it asked for its configuration",
                                "see the child's own error above; check that the engine installation is intact")
    magic, version, kind, reserved, public, child_measurement = HELLO.unpack(hello)
    if (magic, version, kind, reserved) != (HELLO_MAGIC, VERSION, TYPE_HELLO, 0):
        raise ChildChannelError("the child process did not greet as a Citadel engine; it gets no configuration",
                                "check that the engine's interpreter and citadel installation were not replaced")
    if not digests_equal(child_measurement, bytes.fromhex(measurement)):
        raise ChildChannelError(f"the child engine's measurement {child_measurement.hex()[:16]}... is not this "
                                f"engine's {measurement[:16]}...; it gets no configuration",
                                "the engine's files or settings changed while it ran; run `citadel measure` "
                                "and start the program again")
    sealed = seal(public, config, context=CONTEXT_LABEL + hello)
    send(sock, LENGTH.pack(len(sealed)) + sealed)


def send(sock: socket.socket, data: bytes) -> None:
    """How the parent writes the sealed configuration (one place, so a test program can watch or change it)."""
    sock.sendall(data)
