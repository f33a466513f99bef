"""The pre-roll ring buffer: the last few keyframe intervals of a camera. Pure; no I/O.

Every packet of a camera's open connection passes through here whether or not a
recording runs, so a recording asked to start at wall-clock time T can begin at the
keyframe at or before T: the moment of a button press is never lost. The buffer keeps
at least the last two complete keyframe intervals and at least `seconds` of media.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")


@dataclass(slots=True)
class Item(Generic[P]):
    payload: P
    key: bool        # a video keyframe: a recording may start here
    media_ns: int    # the packet's (repaired) timestamp, in ns
    size: int


class PrerollBuffer(Generic[P]):
    def __init__(self, seconds: float = 2.0, keep_intervals: int = 2,
                 max_seconds: float = 60.0) -> None:
        self._min_ns = int(seconds * 1e9)
        self._max_ns = int(max(seconds, max_seconds) * 1e9)
        self._keep_keys = keep_intervals + 1
        self._items: deque[Item[P]] = deque()
        self._key_positions: deque[int] = deque()  # absolute positions of keyframes
        self._first_pos = 0  # absolute position of self._items[0]
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def span_ns(self) -> int:
        if not self._items:
            return 0
        return self._items[-1].media_ns - self._items[0].media_ns

    def clear(self) -> None:
        self._first_pos += len(self._items)
        self._items.clear()
        self._key_positions.clear()
        self._bytes = 0

    def append(self, item: Item[P]) -> None:
        pos = self._first_pos + len(self._items)
        self._items.append(item)
        self._bytes += item.size
        if item.key:
            self._key_positions.append(pos)
        self._trim()

    def _trim(self) -> None:
        last_ns = self._items[-1].media_ns
        keys = self._key_positions
        drop_to = self._first_pos
        # Drop the oldest keyframe group while what stays still covers enough.
        while len(keys) > self._keep_keys:
            second = self._items[keys[1] - self._first_pos].media_ns
            if last_ns - second < self._min_ns:
                break
            keys.popleft()
            drop_to = keys[0]
        # Never hold more than max_seconds, whatever the keyframe interval.
        while keys and last_ns - self._items[keys[0] - self._first_pos].media_ns > self._max_ns:
            keys.popleft()
            drop_to = keys[0] if keys else drop_to
        if not keys:
            # No keyframe at all: nothing here can start a recording.
            while self._items and last_ns - self._items[0].media_ns > self._max_ns:
                self._drop_left()
            return
        # Anything before the first kept keyframe is of no use.
        drop_to = max(drop_to, keys[0])
        while self._first_pos < drop_to:
            self._drop_left()

    def _drop_left(self) -> None:
        item = self._items.popleft()
        self._bytes -= item.size
        self._first_pos += 1

    def start_at(self, t_ns: int, wall_of: Callable[[Item[P]], int]) -> list[Item[P]] | None:
        """The items from the last keyframe whose wall time is at or before `t_ns`.

        When every keyframe is later than `t_ns` (T is older than the pre-roll), the
        items from the earliest keyframe; None when there is no keyframe yet.
        """
        if not self._key_positions:
            return None
        chosen = self._key_positions[0]
        for pos in self._key_positions:
            if wall_of(self._items[pos - self._first_pos]) <= t_ns:
                chosen = pos
            else:
                break
        return list(self._items)[chosen - self._first_pos:]

    def latest(self) -> Item[P] | None:
        return self._items[-1] if self._items else None
