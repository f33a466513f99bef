"""`roomrec-coordinator`: the central service.

The coordinator (discovery, users, sessions, gathering) is not built yet; until it is,
this command says so plainly instead of pretending to run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from coordinator import __version__


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="roomrec-coordinator")
    p.add_argument("--version", action="version", version=f"roomrec-coordinator {__version__}")
    p.parse_args(argv)
    print("roomrec-coordinator: the coordinator service is not part of this release yet; "
          "use roomrec-edge to record a room", file=sys.stderr)
    return 2
