"""The pin seam (edge.gpio.pins), exercised through the simulated backend: the simulated
pins are the only fake."""

from __future__ import annotations

import logging
import threading

import pytest

from edge.errors import EdgeError
from edge.gpio import GpioError, PinInUse, make_factory
from edge.gpio.sim import SimPinFactory


def test_a_pin_claimed_twice_is_refused_by_name() -> None:
    f = SimPinFactory()
    f.input(17, label="record button")
    with pytest.raises(PinInUse, match=r"GPIO17 is already in use as an input \(record button\)"
                                       r"; it cannot also be the LED output"):
        f.output(17, label="LED")
    with pytest.raises(PinInUse, match=r"GPIO17 .* cannot also be an input"):
        f.input(17)
    assert f.claimed() == [17]
    f.close()


def test_gpio_errors_are_edge_errors() -> None:
    assert issubclass(GpioError, EdgeError)
    assert issubclass(PinInUse, GpioError)


def test_a_released_pin_can_be_claimed_again() -> None:
    f = SimPinFactory()
    pin = f.output(27)
    pin.close()
    pin.close()  # twice is fine
    assert f.claimed() == []
    assert f.input(27).read() is True
    f.close()


def test_only_header_pins() -> None:
    f = SimPinFactory()
    with pytest.raises(GpioError, match=r"GPIO28 \(LED\) is not a header pin"):
        f.output(28, label="LED")
    with pytest.raises(GpioError, match="GPIO-1"):
        f.input(-1)
    assert f.claimed() == []


def test_close_releases_every_pin_and_switches_outputs_off() -> None:
    f = SimPinFactory()
    button = f.input(17)
    led = f.output(27)
    led.set(True)
    f.close()
    assert button.closed and led.closed
    assert led.state is False and led.history[-1][1] is False
    assert f.claimed() == []
    with pytest.raises(GpioError, match="GPIO5: the pin factory is closed"):
        f.input(5)
    with pytest.raises(GpioError, match="GPIO27 is closed"):
        led.set(True)
    f.close()  # twice is fine


def test_output_history_records_changes_only() -> None:
    f = SimPinFactory()
    led = f.output(27)
    for on in (True, True, False, False, True):
        led.set(on)
    assert led.states() == [True, False, True]
    times = [t for t, _ in led.history]
    assert times == sorted(times)
    f.close()


def test_active_low_output_drives_low_for_on() -> None:
    f = SimPinFactory()
    led = f.output(22, active_high=False)
    assert (led.state, led.level) == (False, True)  # off: high
    led.set(True)
    assert (led.state, led.level) == (True, False)
    assert led.history[-1][1] is True  # history is in on/off, not levels
    f.close()


def test_callbacks_can_be_removed() -> None:
    f = SimPinFactory()
    pin = f.input(17)
    seen: list[bool] = []
    remove = pin.on_change(lambda level, t: seen.append(level))
    pin.drive_low()
    remove()
    remove()  # twice is fine
    pin.drive_high()
    assert seen == [False]
    f.close()


def test_a_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    f = SimPinFactory()
    pin = f.input(17)
    seen: list[bool] = []

    def broken(level: bool, t_ns: int) -> None:
        raise RuntimeError("boom")

    pin.on_change(broken)
    pin.on_change(lambda level, t: seen.append(level))
    with caplog.at_level(logging.ERROR):
        pin.drive_low()
    assert seen == [False]
    assert "callback of GPIO17 failed" in caplog.text
    f.close()


def test_claims_from_many_threads_give_each_pin_once() -> None:
    f = SimPinFactory()
    won: list[int] = []
    lost: list[int] = []
    lock = threading.Lock()

    def claim(bcm: int) -> None:
        try:
            f.output(bcm)
        except PinInUse:
            with lock:
                lost.append(bcm)
        else:
            with lock:
                won.append(bcm)

    threads = [threading.Thread(target=claim, args=(n % 4,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [0, 1, 2, 3]
    assert len(lost) == 28
    f.close()


def test_make_factory_by_name() -> None:
    f = make_factory("sim")
    assert isinstance(f, SimPinFactory)
    f.close()
