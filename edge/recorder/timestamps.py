"""Monotonic output timestamps from whatever a camera sends. Pure; no I/O.

Cameras send packets without timestamps (RTSP's first keyframe often has none),
repeat a dts, jump backwards or far forwards (an encoder restart, a clock correction
on the camera), and reorder frames for B-frames (pts != dts). None of that may stop
the muxer, so every packet gets a dts strictly greater than the last one written and
a pts no smaller than its dts. A backward jump, or a forward jump larger than `jump_s`
beyond what the packets' arrival times explain, is treated as a discontinuity: the
timeline is re-based so the output continues one frame after the previous packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Generic, TypeVar

T = TypeVar("T")

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Fixed:
    pts: int
    dts: int
    rebased: bool  # a discontinuity was smoothed over at this packet


class TimestampFixer(Generic[T]):
    """Per-stream timestamp repair, in the stream's own time base.

    `push` takes packets in arrival order and returns them, repaired, in the same order.
    At the start of a stream it may hold a few back: RTSP delivers the first packets of a
    B-frame stream without a dts (the first keyframe often without any timestamp), and
    their dts can only be worked out, backwards, from the first packet that has one.
    """

    HOLD_MAX = 16  # a stream that never gives a dts is timed by its pts after this

    def __init__(self, time_base: Fraction, nominal_duration: int | None = None,
                 jump_s: float = 2.0) -> None:
        if time_base <= 0:
            raise ValueError("time base must be positive")
        self._tb = time_base
        self._ticks_per_s = 1 / time_base
        self._ticks_per_ns = float(self._ticks_per_s) / NS  # a float: this runs per packet
        self._jump = int(jump_s * self._ticks_per_s)
        # A frame's duration, learnt from the stream; 1/30 s until known.
        self._nominal = nominal_duration or max(1, int(self._ticks_per_s / 30))
        self._offset = 0            # added to the input timestamps
        self._last_in_dts: int | None = None
        self._last_out_dts: int | None = None
        self._last_arrival_ns: int | None = None
        self._held: list[tuple[T, int | None, int, int | None]] = []
        self._seen_dts = False
        self.discontinuities = 0

    @property
    def nominal_duration(self) -> int:
        return self._nominal

    def push(self, token: T, pts: int | None, dts: int | None, arrival_ns: int,
             duration: int | None = None) -> list[tuple[T, Fixed]]:
        if not self._seen_dts:
            if dts is None and len(self._held) < self.HOLD_MAX:
                self._held.append((token, pts, arrival_ns, duration))
                return []
            self._seen_dts = True
            if self._held:
                return self._release(token, pts, dts, arrival_ns, duration)
        return [(token, self.fix(pts, dts, arrival_ns, duration))]

    def _release(self, token: T, pts: int | None, dts: int | None, arrival_ns: int,
                 duration: int | None) -> list[tuple[T, Fixed]]:
        held = [*self._held, (token, pts, arrival_ns, duration)]
        self._held = []
        if duration and duration > 0:
            self._nominal = duration
        n = len(held)
        out: list[tuple[T, Fixed]] = []
        for i, (tok, held_pts, arr, dur) in enumerate(held):
            p = held_pts
            if dts is not None:
                d: int | None = dts - (n - 1 - i) * self._nominal  # counted back from dts
            else:
                d = p  # no dts at all in this stream: time it by its pts
            if p is None:
                later = [q for _, q, _, _ in held[i + 1:] if q is not None]
                if later and d is not None:
                    p = max(d, min(later) - self._nominal)
            out.append((tok, self.fix(p, d, arr, dur)))
        return out

    def fix(self, pts: int | None, dts: int | None, arrival_ns: int,
            duration: int | None = None) -> Fixed:
        """Repair one packet's timestamps (no holding back)."""
        if duration and duration > 0:
            self._nominal = duration
        if dts is None:
            dts = pts
        if dts is None:
            # No timestamp at all: one frame after the last one.
            out_dts = 0 if self._last_out_dts is None else self._last_out_dts + self._nominal
            return self._emit(None, out_dts, out_dts, arrival_ns, rebased=False)
        if pts is None:
            pts = dts
        rebased = False
        if self._last_in_dts is not None and self._last_arrival_ns is not None:
            delta_in = dts - self._last_in_dts
            delta_arrival = int((arrival_ns - self._last_arrival_ns) * self._ticks_per_ns)
            if delta_in < -self._nominal * 4 or delta_in - delta_arrival > self._jump:
                # Discontinuity: continue from the last output, as far on as the
                # arrival times say (at least one frame).
                assert self._last_out_dts is not None
                target = self._last_out_dts + max(self._nominal, min(delta_arrival, self._jump))
                self._offset = target - dts
                rebased = True
                self.discontinuities += 1
            elif 0 < delta_in < self._nominal * 4:
                self._nominal = max(1, (self._nominal * 7 + delta_in) // 8)
        out_dts = dts + self._offset
        out_pts = pts + self._offset
        if self._last_out_dts is not None and out_dts <= self._last_out_dts:
            out_dts = self._last_out_dts + 1  # repeated or slightly backward dts
        return self._emit(dts, out_pts, out_dts, arrival_ns, rebased)

    def _emit(self, in_dts: int | None, out_pts: int, out_dts: int, arrival_ns: int,
              rebased: bool) -> Fixed:
        if in_dts is not None:
            self._last_in_dts = in_dts
        elif self._last_in_dts is not None:
            self._last_in_dts += self._nominal
        self._last_out_dts = out_dts
        self._last_arrival_ns = arrival_ns
        return Fixed(pts=max(out_pts, out_dts), dts=out_dts, rebased=rebased)
