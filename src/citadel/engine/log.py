"""The engine's messages to stderr, one line each, filtered by CITADEL_LOG (error..debug).

The engine is the program: like the CLI it may print, and it prints only here, with the same
``citadel: <level>: `` prefix the CLI uses. `logging` is not used: it costs start-up time and
the engine has one destination. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import sys

LEVELS = {"error": 40, "warning": 30, "info": 20, "debug": 10}
_threshold = LEVELS["warning"]


def configure(level: str) -> None:
    global _threshold
    _threshold = LEVELS[level]


def enabled(level: str) -> bool:
    return LEVELS[level] >= _threshold


def emit(level: str, message: str) -> None:
    if LEVELS[level] >= _threshold:
        try:
            sys.stderr.write(f"citadel: {level}: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed by the program: nothing left to tell
            pass


def warning(message: str) -> None:
    emit("warning", message)


def info(message: str) -> None:
    emit("info", message)


def debug(message: str) -> None:
    emit("debug", message)
