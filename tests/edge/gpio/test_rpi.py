"""The Raspberry Pi backend. Off a Pi only its absence is testable; the loopback test
needs a Pi with an output wired to an input, named in ROOMREC_GPIO_LOOPBACK="OUT,IN"
(BCM numbers, e.g. "23,24" with a wire, or a 1 kOhm resistor, between them)."""

from __future__ import annotations

import importlib
import os
import threading

import pytest

from edge.gpio import GpioError, make_factory


def _rpi_gpio_usable() -> bool:
    try:
        importlib.import_module("RPi.GPIO")
    except (ImportError, RuntimeError):  # RuntimeError: installed, but not on a Pi
        return False
    return True


HAVE_RPI = _rpi_gpio_usable()


@pytest.mark.skipif(HAVE_RPI, reason="RPi.GPIO is usable here")
def test_without_rpi_gpio_the_backend_says_what_to_install() -> None:
    import edge.gpio.rpi  # noqa: F401, PLC0415 - imports without RPi.GPIO

    with pytest.raises(GpioError, match="rpi-lgpio on a Raspberry Pi 5"):
        make_factory("rpi")


@pytest.mark.skipif(not HAVE_RPI, reason="needs RPi.GPIO (or rpi-lgpio) on a Raspberry Pi")
@pytest.mark.skipif("ROOMREC_GPIO_LOOPBACK" not in os.environ,
                    reason="set ROOMREC_GPIO_LOOPBACK=OUT,IN for pins wired together")
def test_loopback_on_a_raspberry_pi() -> None:
    out_bcm, in_bcm = (int(n) for n in os.environ["ROOMREC_GPIO_LOOPBACK"].split(","))
    factory = make_factory("rpi")
    try:
        with pytest.raises(GpioError, match="already open"):
            make_factory("rpi")
        out = factory.output(out_bcm)
        pin = factory.input(in_bcm, pull_up=False)
        levels: list[bool] = []
        changed = threading.Event()

        def seen(level: bool, t_ns: int) -> None:
            levels.append(level)
            changed.set()

        pin.on_change(seen)
        assert pin.read() is False
        out.set(True)
        assert changed.wait(1.0)
        assert pin.read() is True and levels[-1] is True
        changed.clear()
        out.set(False)
        assert changed.wait(1.0)
        assert pin.read() is False and levels[-1] is False
    finally:
        factory.close()
