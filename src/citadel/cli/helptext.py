"""Help pages of sub-actions (`citadel volume create --help`): a sentence of what it does, then examples."""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence


def add_action(sub: Any, name: str, help_text: str, examples: Sequence[str] = (),
               description: Optional[str] = None) -> argparse.ArgumentParser:
    """``sub.add_parser`` with a description (default: the help line as a sentence) and an examples epilog."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples) if examples else None
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=description or f"{help_text[0].upper()}{help_text[1:]}.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
