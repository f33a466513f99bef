"""Capped exponential backoff for reconnecting to a camera. Pure; no sleeping here."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays 0.5, 1, 2, 4, 8, 10, 10, ... seconds by default; never gives up."""

    first: float = 0.5
    cap: float = 10.0
    factor: float = 2.0
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError("backoff needs 0 < first <= cap")
        self._next = self.first

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.first
