"""Whether the system clock is synchronised (NTP/chrony), from the kernel's own view.

adjtimex(2) with no modes returns the clock state; TIME_ERROR (5) means the clock is not
synchronised. This is what chrony and systemd-timesyncd report to the kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from edge.contract import ClockSync

TIME_ERROR = 5


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # find_library runs ldconfig in a subprocess: look it up once, not on every check.
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def clock_sync_state() -> ClockSync:
    libc = _libc()
    if libc is None:
        return "unknown"
    try:
        buf = ctypes.create_string_buffer(512)  # struct timex, zeroed: modes = 0, read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return "unknown"
    if state < 0:
        return "unknown"
    return "unsynchronised" if state == TIME_ERROR else "synchronised"
