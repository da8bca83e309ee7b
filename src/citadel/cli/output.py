"""Rendering helpers shared by the commands: JSON for scripts, plain lines for people."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(doc: Any) -> None:
    """One JSON document on stdout, stable key order, for scripts (`--json`)."""
    json.dump(doc, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def warn(message: str) -> None:
    print(f"citadel: warning: {message}", file=sys.stderr)


def info(message: str) -> None:
    print(message, file=sys.stderr)
