"""The engine's entry point: ``python -I -S -B <this file>`` (citadel.engine.command, docs/engine.md).

Kept tiny, since a script is compiled at every start: it lets Python's own importer load
citadel.engine.bootstrap (from its cached bytecode), which installs the verifying importer and
then checks this file and itself against the engine manifest before anything else runs.
"""

from __future__ import annotations

import os
import sys
import time

if __name__ == "__main__":
    started = time.perf_counter()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from citadel.engine.bootstrap import main

    del sys.path[0]
    sys.exit(main(os.path.abspath(__file__), started))
