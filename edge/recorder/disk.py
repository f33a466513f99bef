"""The disk guard's arithmetic. Pure, apart from `free_bytes`.

The recorder never deletes anything to make room: it refuses to start a recording the
free space cannot hold, and stops a running one cleanly, with every file valid, before
the filesystem is full.
"""

from __future__ import annotations

import os
from pathlib import Path


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def usable(free: int, reserve: int) -> int:
    return max(0, free - reserve)


def runway_s(free: int, reserve: int, bytes_per_s: float) -> float | None:
    """Seconds of recording left at this rate, or None when the rate is unknown."""
    if bytes_per_s <= 0:
        return None
    return usable(free, reserve) / bytes_per_s


def refuse_start(free: int, reserve: int, bytes_per_s: float, expected_s: float) -> str | None:
    """Why a recording of `expected_s` seconds may not start, or None."""
    need = bytes_per_s * expected_s
    have = usable(free, reserve)
    if have < need:
        return (f"not enough free space: {have / 1e6:.0f} MB usable above the reserve of "
                f"{reserve / 1e6:.0f} MB, {need / 1e6:.0f} MB needed for "
                f"{expected_s / 60:.0f} min at {bytes_per_s * 8 / 1e6:.1f} Mbit/s")
    return None


def must_stop(free: int, reserve: int, bytes_per_s: float, margin_s: float,
              floor: int = 1 << 20) -> bool:
    """True when less than `margin_s` seconds of recording (or `floor` bytes) fit above
    the reserve."""
    return usable(free, reserve) < max(bytes_per_s * margin_s, floor)
