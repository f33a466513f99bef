"""Pins behind a seam: the abstract input pin, output pin and pin factory.

The panel (edge.panel) only ever talks to these classes; a backend (edge.gpio.sim,
edge.gpio.rpi) supplies the hardware. Pins are numbered by BCM GPIO number, as printed
on most Raspberry Pi pinout charts ("GPIO17"), not by header position.

What a backend must implement:

- `PinFactory._make_input(bcm, pull_up) -> InputPin` and
  `PinFactory._make_output(bcm, active_high) -> OutputPin`: set the pin up.
- `PinFactory._shutdown()`: release the hardware once every pin is closed.
- `InputPin.read() -> bool`: the pin's level now (True = high).
- `InputPin._release()` and `OutputPin._release()`: undo the pin's setup.
- `OutputPin._drive(level)`: put a level on the pin (True = high).
- and, from its own thread, call `InputPin._changed(level, monotonic_ns)` on every edge.

Everything else (claiming, callbacks, active-low outputs, closing) lives here, once.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

from edge.errors import EdgeError

P = TypeVar("P", "InputPin", "OutputPin")

log = logging.getLogger(__name__)

ChangeCallback = Callable[[bool, int], None]
"""Called with (level, time.monotonic_ns() of the edge), from the backend's thread."""

BCM_PINS = range(28)  # GPIO0..GPIO27: the 40-pin header of every Raspberry Pi


class GpioError(EdgeError):
    """Base of the errors of edge.gpio."""


class PinInUse(GpioError):
    """A pin was claimed while something else holds it."""


def pin_name(bcm: int) -> str:
    return f"GPIO{bcm}"


class InputPin(ABC):
    """A digital input. Callbacks registered with `on_change` run in the backend's thread."""

    def __init__(self, factory: PinFactory, bcm: int, pull_up: bool) -> None:
        self._factory = factory
        self.bcm = bcm
        self.pull_up = pull_up
        self.label: str | None = None  # what the pin is for, for messages
        self._callbacks: list[ChangeCallback] = []
        self._lock = threading.Lock()
        self.closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {pin_name(self.bcm)}>"

    @abstractmethod
    def read(self) -> bool:
        """The level now: True when high."""

    @abstractmethod
    def _release(self) -> None:
        """Undo the pin's setup (backend)."""

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call `callback(level, monotonic_ns)` on every edge; returns a function that
        removes it again."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def _changed(self, level: bool, t_ns: int) -> None:
        """For backends: an edge happened; runs every callback, in the caller's thread."""
        with self._lock:
            callbacks = list(self._callbacks)
        for cb in callbacks:
            try:
                cb(level, t_ns)
            except Exception:
                log.exception("callback of %s failed", pin_name(self.bcm))

    def close(self) -> None:
        """Stop reporting edges and give the pin back to the factory."""
        if self.closed:
            return
        self.closed = True
        with self._lock:
            self._callbacks.clear()
        try:
            self._release()
        finally:
            self._factory._forget(self.bcm)


class OutputPin(ABC):
    """A digital output, on (True) or off (False). With `active_high=False`, on is a low
    level (an LED wired from 3.3 V to the pin)."""

    def __init__(self, factory: PinFactory, bcm: int, active_high: bool) -> None:
        self._factory = factory
        self.bcm = bcm
        self.active_high = active_high
        self.label: str | None = None  # what the pin is for, for messages
        self._state = False
        self.closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {pin_name(self.bcm)} {'on' if self._state else 'off'}>"

    @property
    def state(self) -> bool:
        """True when on."""
        return self._state

    def set(self, on: bool) -> None:
        """Switch the output on or off; setting the state it already has does nothing."""
        if self.closed:
            raise GpioError(f"{pin_name(self.bcm)} is closed")
        if on == self._state:
            return
        self._drive(on == self.active_high)
        self._state = on

    @abstractmethod
    def _drive(self, level: bool) -> None:
        """Put `level` (True = high) on the pin (backend)."""

    @abstractmethod
    def _release(self) -> None:
        """Undo the pin's setup (backend)."""

    def close(self) -> None:
        """Switch off and give the pin back to the factory."""
        if self.closed:
            return
        try:
            self.set(False)
        finally:
            self.closed = True
            try:
                self._release()
            finally:
                self._factory._forget(self.bcm)


class PinFactory(ABC):
    """Hands out pins, each at most once at a time, and releases them all on close()."""

    def __init__(self) -> None:
        self._pins: dict[int, InputPin | OutputPin | None] = {}  # None: being set up
        self._lock = threading.Lock()
        self.closed = False

    def input(self, bcm: int, pull_up: bool = True, *, label: str | None = None) -> InputPin:
        """An input; with pull_up (the default) it reads high until a switch pulls it to
        ground."""
        return self._register(bcm, "input", label, lambda: self._make_input(bcm, pull_up))

    def output(self, bcm: int, active_high: bool = True, *, label: str | None = None) -> OutputPin:
        """An output, off to begin with."""
        return self._register(bcm, "output", label,
                              lambda: self._make_output(bcm, active_high))

    def _register(self, bcm: int, kind: str, label: str | None, make: Callable[[], P]) -> P:
        """Claim the pin, let the backend make it, and keep it (released if making fails)."""
        self._claim(bcm, kind, label)
        try:
            pin = make()
            pin.label = label
        except BaseException:
            self._forget(bcm)
            raise
        with self._lock:
            self._pins[bcm] = pin
        return pin

    def close(self) -> None:
        """Close every pin still claimed, then the backend. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        with self._lock:
            pins = [p for p in self._pins.values() if p is not None]
        for pin in pins:
            try:
                pin.close()
            except Exception:
                log.exception("closing %s failed", pin_name(pin.bcm))
        self._shutdown()

    def claimed(self) -> list[int]:
        """The BCM numbers of the pins claimed now."""
        with self._lock:
            return sorted(self._pins)

    @abstractmethod
    def _make_input(self, bcm: int, pull_up: bool) -> InputPin: ...

    @abstractmethod
    def _make_output(self, bcm: int, active_high: bool) -> OutputPin: ...

    @abstractmethod
    def _shutdown(self) -> None: ...

    def _claim(self, bcm: int, kind: str, label: str | None) -> None:
        asked = f"{pin_name(bcm)} ({label})" if label else pin_name(bcm)
        wanted = f"the {label} {kind}" if label else f"an {kind}"
        if self.closed:
            raise GpioError(f"cannot claim {asked}: the pin factory is closed")
        if bcm not in BCM_PINS:
            raise GpioError(f"{asked} is not a header pin (BCM numbers are 0..27)")
        with self._lock:
            if bcm in self._pins:
                held = self._pins[bcm]
                if held is None:
                    what = "a pin being set up"
                else:
                    what = "an input" if isinstance(held, InputPin) else "an output"
                    if held.label:
                        what += f" ({held.label})"
                raise PinInUse(f"{pin_name(bcm)} is already in use as {what}; "
                               f"it cannot also be {wanted}")
            self._pins[bcm] = None

    def _forget(self, bcm: int) -> None:
        with self._lock:
            self._pins.pop(bcm, None)

