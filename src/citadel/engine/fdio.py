"""Reading a whole, bounded input from a descriptor (engine-safe, Python 3.9).

Used for inputs the host controls (the launch request pipe, kernel attestation files), so a
host that sends without end cannot make the engine buffer without end.
"""

from __future__ import annotations

import os
from typing import List, Optional


def read_bounded(fd: int, limit: int) -> Optional[bytes]:
    """Everything ``fd`` yields until end of file, or None once it exceeds ``limit`` bytes.

    OSError from the reads propagates; the caller owns (and closes) the descriptor.
    """
    chunks: List[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
