"""The Raspberry Pi backend, through the RPi.GPIO module.

`RPi.GPIO` is imported here and nowhere else, and only when a factory is made, so this
module imports on any machine. Pins are numbered BCM (GPIO17, not header pin 11).

Which package provides `RPi.GPIO`:

- Raspberry Pi 1-4 on an older kernel: `RPi.GPIO` itself (the `pi` extra).
- Raspberry Pi 5, and any Pi on a kernel without the sysfs GPIO interface: `rpi-lgpio`,
  a drop-in replacement that provides the same `RPi.GPIO` module on top of lgpio.
  The two packages conflict: uninstall `RPi.GPIO` before installing `rpi-lgpio`.
  RPi.GPIO on a Pi 5 fails with "Cannot determine SOC peripheral base address", and on
  newer kernels with "Failed to add edge detection"; both mean: use rpi-lgpio.

Edges are detected on both flanks, without RPi.GPIO's `bouncetime` (it drops edges, so the
last level could be missed); edge.panel.Button debounces with the edge times instead. The
callback runs in RPi.GPIO's own thread: it stamps the time first, then reads the level.
"""

from __future__ import annotations

import importlib
import threading
import time
from types import ModuleType

from edge.gpio.pins import GpioError, InputPin, OutputPin, PinFactory, pin_name

_open_lock = threading.Lock()
_open_factory: RpiPinFactory | None = None  # RPi.GPIO is process-wide: one factory at a time


def load_gpio() -> ModuleType:
    """Import RPi.GPIO, or explain what to install."""
    try:
        return importlib.import_module("RPi.GPIO")
    except ImportError as e:
        raise GpioError("RPi.GPIO is not installed: install the 'pi' extra (RPi.GPIO) on a "
                        "Raspberry Pi 1-4, or rpi-lgpio on a Raspberry Pi 5") from e
    except RuntimeError as e:  # RPi.GPIO raises this when imported off a Pi
        raise GpioError(f"RPi.GPIO cannot run here: {e}") from e


class RpiInputPin(InputPin):
    def __init__(self, factory: RpiPinFactory, bcm: int, pull_up: bool) -> None:
        super().__init__(factory, bcm, pull_up)
        self._gpio = factory.gpio
        gpio = self._gpio
        gpio.setup(bcm, gpio.IN, pull_up_down=gpio.PUD_UP if pull_up else gpio.PUD_DOWN)
        try:
            gpio.add_event_detect(bcm, gpio.BOTH, callback=self._on_edge)
        except RuntimeError as e:
            gpio.cleanup(bcm)
            raise GpioError(f"cannot watch {pin_name(bcm)} for edges ({e}); on a Raspberry "
                            "Pi 5 or a recent kernel, install rpi-lgpio in place of "
                            "RPi.GPIO") from e

    def _on_edge(self, channel: int) -> None:
        t_ns = time.monotonic_ns()
        self._changed(bool(self._gpio.input(channel)), t_ns)

    def read(self) -> bool:
        return bool(self._gpio.input(self.bcm))

    def _release(self) -> None:
        self._gpio.remove_event_detect(self.bcm)
        self._gpio.cleanup(self.bcm)


class RpiOutputPin(OutputPin):
    def __init__(self, factory: RpiPinFactory, bcm: int, active_high: bool) -> None:
        super().__init__(factory, bcm, active_high)
        self._gpio = factory.gpio
        off = self._gpio.LOW if active_high else self._gpio.HIGH
        self._gpio.setup(bcm, self._gpio.OUT, initial=off)

    def _drive(self, level: bool) -> None:
        self._gpio.output(self.bcm, self._gpio.HIGH if level else self._gpio.LOW)

    def _release(self) -> None:
        self._gpio.cleanup(self.bcm)  # back to an input: the LED goes dark


class RpiPinFactory(PinFactory):
    """Pins of this Raspberry Pi. Only one may be open at a time in a process."""

    def __init__(self) -> None:
        global _open_factory  # noqa: PLW0603 - RPi.GPIO's state is process-wide
        super().__init__()
        with _open_lock:
            if _open_factory is not None:
                raise GpioError("the Raspberry Pi's pins are already open in this process")
            self.gpio = load_gpio()
            self.gpio.setwarnings(False)  # pins left set up by a crashed run are ours
            try:
                self.gpio.setmode(self.gpio.BCM)
            except ValueError as e:  # another part of the process chose BOARD numbering
                raise GpioError(f"cannot number the pins BCM: {e}") from e
            _open_factory = self

    def _make_input(self, bcm: int, pull_up: bool) -> RpiInputPin:
        return RpiInputPin(self, bcm, pull_up)

    def _make_output(self, bcm: int, active_high: bool) -> RpiOutputPin:
        return RpiOutputPin(self, bcm, active_high)

    def _shutdown(self) -> None:
        global _open_factory  # noqa: PLW0603 - see __init__
        with _open_lock:
            if _open_factory is self:
                _open_factory = None
