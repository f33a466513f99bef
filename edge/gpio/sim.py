"""The simulated backend: pins that work, for tests and for a box without a panel.

Not a mock: driving a simulated input fires the callbacks registered on it, exactly as an
edge on a real pin would (only synchronously, in the thread that drives it), and every
change of a simulated output is recorded in its `history`, so a test can assert what an
LED did.

Times are `time.monotonic_ns()` readings, as the real backend reports them. `press()` and
`bounce()` may stamp edges ahead of the clock (a press is "held" for hold_s without
anybody waiting); each pin keeps its own edges in order, so the next drive is never
stamped before the last one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from edge.gpio.pins import GpioError, InputPin, OutputPin, PinFactory, pin_name

NS_PER_S = 1_000_000_000


class SimInputPin(InputPin):
    """An input whose level the test sets. It rests at the level its pull gives it."""

    def __init__(self, factory: SimPinFactory, bcm: int, pull_up: bool) -> None:
        super().__init__(factory, bcm, pull_up)
        self._level = pull_up
        self._last_ns = 0
        self._drive_lock = threading.Lock()

    def read(self) -> bool:
        return self._level

    def _release(self) -> None:
        pass

    def _stamp(self, t_ns: int | None) -> int:
        if t_ns is None:
            return max(time.monotonic_ns(), self._last_ns + 1)
        if t_ns < self._last_ns:
            raise ValueError(f"edge at {t_ns} ns comes before the last edge of "
                             f"{pin_name(self.bcm)} ({self._last_ns} ns)")
        return t_ns

    def _edge(self, level: bool, t_ns: int) -> None:
        if self.closed:
            raise GpioError(f"{pin_name(self.bcm)} is closed")
        self._level = level
        self._last_ns = t_ns
        self._changed(level, t_ns)

    def drive(self, level: bool, t_ns: int | None = None) -> None:
        """Set the level (at t_ns, default now); callbacks fire only if it changed, as a
        real edge detector's would."""
        with self._drive_lock:
            t = self._stamp(t_ns)
            if level != self._level:
                self._edge(level, t)

    def drive_low(self) -> None:
        self.drive(False)

    def drive_high(self) -> None:
        self.drive(True)

    def press(self, hold_s: float = 0.1) -> None:
        """A clean press of a button to ground: low now, high hold_s later (stamped ahead,
        nobody sleeps). The next edge of this pin is stamped at least hold_s after the
        release, so consecutive press() calls are separate presses."""
        hold_ns = round(hold_s * NS_PER_S)
        with self._drive_lock:
            t = self._stamp(None)
            self._edge(False, t)
            self._edge(True, t + hold_ns)
            self._last_ns = t + 2 * hold_ns

    def bounce(self, edges: Iterable[tuple[bool, int]]) -> None:
        """Fire raw edges [(level, monotonic_ns), ...] in order. Every entry fires, even one
        that repeats the level: a real edge detector can report a level twice when the
        contact bounced faster than the callback read it."""
        with self._drive_lock:
            for level, t_ns in edges:
                self._edge(level, self._stamp(t_ns))


class SimOutputPin(OutputPin):
    """An output that remembers every change: `history` holds (monotonic_ns, on)."""

    def __init__(self, factory: SimPinFactory, bcm: int, active_high: bool) -> None:
        super().__init__(factory, bcm, active_high)
        self.history: list[tuple[int, bool]] = []
        self.level = not active_high  # the electrical level: off

    def _drive(self, level: bool) -> None:
        self.level = level
        self.history.append((time.monotonic_ns(), level == self.active_high))

    def _release(self) -> None:
        pass

    def states(self) -> list[bool]:
        """The states of `history`, without the times."""
        return [on for _, on in self.history]


class SimPinFactory(PinFactory):
    """Simulated pins. Lets tests reach the pins that the code under test claimed."""

    def _make_input(self, bcm: int, pull_up: bool) -> SimInputPin:
        return SimInputPin(self, bcm, pull_up)

    def _make_output(self, bcm: int, active_high: bool) -> SimOutputPin:
        return SimOutputPin(self, bcm, active_high)

    def _shutdown(self) -> None:
        pass

    def input(self, bcm: int, pull_up: bool = True, *,
              label: str | None = None) -> SimInputPin:
        super().input(bcm, pull_up, label=label)
        return self.sim_input(bcm)

    def output(self, bcm: int, active_high: bool = True, *,
               label: str | None = None) -> SimOutputPin:
        super().output(bcm, active_high, label=label)
        return self.sim_output(bcm)

    def sim_input(self, bcm: int) -> SimInputPin:
        """The simulated input claimed as `bcm` now."""
        with self._lock:
            pin = self._pins.get(bcm)
        if not isinstance(pin, SimInputPin):
            raise GpioError(f"{pin_name(bcm)} is not claimed as an input")
        return pin

    def sim_output(self, bcm: int) -> SimOutputPin:
        """The simulated output claimed as `bcm` now."""
        with self._lock:
            pin = self._pins.get(bcm)
        if not isinstance(pin, SimOutputPin):
            raise GpioError(f"{pin_name(bcm)} is not claimed as an output")
        return pin
