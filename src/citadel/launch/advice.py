"""Turn the way the engine ended into plain advice for a person.

The engine reports its own errors (it knows the cause); the launcher can only see how the
process ended, which matters when the engine could not say anything: killed by a signal.
"""

from __future__ import annotations

import signal
from typing import NamedTuple, Optional


class Advice(NamedTuple):
    cause: str
    remedy: str

    def render(self) -> str:
        return f"citadel: error: {self.cause}\ncitadel: hint: {self.remedy}"


_SIGNAL_ADVICE = {
    signal.SIGKILL: Advice(
        "the engine was killed (SIGKILL): most likely the machine ran out of memory and the kernel's "
        "out-of-memory killer stopped it",
        "lower CITADEL_HEAP (e.g. CITADEL_HEAP=256M) or give the machine more memory; "
        "`dmesg | grep -i oom` shows whether it was the OOM killer",
    ),
    signal.SIGSEGV: Advice(
        "the engine crashed (SIGSEGV, a segmentation fault)",
        "a C extension may be faulty or the stack too small: raise CITADEL_STACK (e.g. 8M) "
        "and run with CITADEL_LOG=debug to see what was loaded last",
    ),
    signal.SIGBUS: Advice(
        "the engine crashed (SIGBUS)",
        "a memory-mapped file changed size under the program, or the disk is full; check the host",
    ),
    signal.SIGABRT: Advice(
        "the engine aborted (SIGABRT), usually a failed assertion in a C library",
        "run with CITADEL_LOG=debug and report the last lines printed",
    ),
    signal.SIGXCPU: Advice(
        "the engine used up its CPU-time limit (SIGXCPU)", "raise the CPU limit (ulimit -t) for this run"
    ),
}


def advice_for(returncode: int) -> Optional[Advice]:
    """Advice for a process that ended with ``returncode`` (negative = killed by that signal)."""
    if returncode >= 0:
        return None
    signum = -returncode
    if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        return None  # the user or the system asked it to stop; nothing to advise
    known = _SIGNAL_ADVICE.get(signal.Signals(signum)) if signum in signal.valid_signals() else None
    if known is not None:
        return known
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return Advice(f"the engine was stopped by {name}", "see the messages above; run with CITADEL_LOG=debug for more")


def exit_status(returncode: int) -> int:
    """The launcher's own exit status: the engine's, or 128 + signal like a shell."""
    return returncode if returncode >= 0 else 128 - returncode
