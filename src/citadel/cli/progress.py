"""A small, dependency-free progress bar for long work (sealing a large tree, say).

It draws on stderr only when stderr is a terminal (and TERM is not ``dumb``), only once the work
has taken longer than ``delay`` seconds (quick jobs stay silent), at most ten times a second, and
erases itself when done, so scripts and logs never see it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from types import TracebackType
from typing import Optional, TextIO, Type

REFRESH = 0.1  # seconds between redraws


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, one decimal)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def stream_is_interactive(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") != "dumb"


class ProgressBar:
    """``with ProgressBar(total, "sealing") as bar: bar.advance(n)`` — total and n in bytes."""

    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: Optional[TextIO] = None,
        enabled: Optional[bool] = None,
        delay: float = 0.5,
    ) -> None:
        self.total = max(0, total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = stream_is_interactive(self.stream) if enabled is None else enabled
        self.delay = delay
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._start < self.delay or now - self._last_draw < REFRESH:
            return
        self._last_draw = now
        self._draw(now)

    def __call__(self, _name: str, n: int) -> None:
        """Usable directly as a ``progress(name, n)`` callback."""
        self.advance(n)

    def line(self, now: Optional[float] = None) -> str:
        """The text of the bar as it would be drawn now (without control characters)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._start, 1e-6)
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
        tail = (
            f" {human_bytes(self.done)}/{human_bytes(self.total)}  {human_bytes(rate)}/s  eta {_clock(eta)}"
        )
        head = f"{self.label} {fraction * 100:3.0f}% "
        width = shutil.get_terminal_size((80, 24)).columns - len(head) - len(tail) - 3
        width = max(10, min(width, 40))
        filled = int(width * fraction)
        return f"{head}[{'#' * filled}{'.' * (width - filled)}]{tail}"

    def _draw(self, now: float) -> None:
        self.stream.write("\r\x1b[K" + self.line(now))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar (if it was drawn), leaving the terminal as it was."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
