"""Wall-clock times derived from the monotonic clock.

Durations and intervals always come from the monotonic clock. Wall-clock (UTC) times
are the monotonic reading plus an anchor taken from the system clock. When the system
clock steps (NTP correction, a manual change), `check()` notices, logs it and
re-anchors, so times after the step are right and durations are never corrupted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)

NS = 1_000_000_000


class WallClock:
    """Maps monotonic readings (ns) to wall-clock times (ns since the Unix epoch)."""

    def __init__(
        self,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        step_threshold_ns: int = NS // 2,
    ) -> None:
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._threshold = step_threshold_ns
        self._lock = threading.Lock()
        self._anchor = self._take_anchor()

    def _take_anchor(self) -> tuple[int, int]:
        mono = self._mono_ns()
        return self._wall_ns(), mono

    def mono_ns(self) -> int:
        return self._mono_ns()

    def wall_at(self, mono_ns: int) -> int:
        """The wall-clock time (ns) of a monotonic reading."""
        wall, mono = self._anchor
        return wall + (mono_ns - mono)

    def now_ns(self) -> int:
        return self.wall_at(self._mono_ns())

    def check(self) -> int | None:
        """Re-anchor if the system clock stepped; returns the step in ns, or None."""
        with self._lock:
            wall, mono = self._take_anchor()
            step = wall - self.wall_at(mono)
            if abs(step) < self._threshold:
                return None
            log.warning("wall clock stepped by %+.3f s; re-anchored", step / NS)
            self._anchor = (wall, mono)
            return step


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns_of(dt: datetime) -> int:
    """ns since the epoch of an aware datetime, exactly (no float rounding)."""
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def utc(ns: int) -> datetime:
    """A timezone-aware UTC datetime for ns since the epoch (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)
