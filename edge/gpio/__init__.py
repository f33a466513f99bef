"""The room box's GPIO: the record button, the status LED and the tally light.

`pins` holds the seam (abstract pins and factory), `sim` a working simulated backend,
`rpi` the Raspberry Pi one. Choose the backend by name with `make_factory`.
"""

from __future__ import annotations

from typing import Literal

from edge.gpio.pins import GpioError, InputPin, OutputPin, PinFactory, PinInUse

Backend = Literal["sim", "rpi"]

__all__ = ["Backend", "GpioError", "InputPin", "OutputPin", "PinFactory", "PinInUse",
           "make_factory"]


def make_factory(backend: Backend) -> PinFactory:
    """A pin factory of the named backend; "rpi" raises GpioError off a Raspberry Pi."""
    if backend == "sim":
        from edge.gpio.sim import SimPinFactory  # noqa: PLC0415 - only the chosen backend

        return SimPinFactory()
    if backend == "rpi":
        from edge.gpio.rpi import RpiPinFactory  # noqa: PLC0415 - only the chosen backend

        return RpiPinFactory()
    raise GpioError(f"unknown GPIO backend {backend!r} (choose 'sim' or 'rpi')")
