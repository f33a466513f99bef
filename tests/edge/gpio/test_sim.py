"""The simulated backend itself: a working fake, not a mock."""

from __future__ import annotations

import threading
import time

import pytest

from edge.gpio import GpioError
from edge.gpio.sim import SimPinFactory

MS = 1_000_000


@pytest.fixture
def factory() -> SimPinFactory:
    return SimPinFactory()


def test_driving_fires_callbacks_synchronously_on_changes_only(factory: SimPinFactory) -> None:
    pin = factory.input(17)
    seen: list[tuple[bool, int]] = []
    threads: list[threading.Thread] = []

    def changed(level: bool, t_ns: int) -> None:
        seen.append((level, t_ns))
        threads.append(threading.current_thread())

    pin.on_change(changed)
    before = time.monotonic_ns()
    pin.drive_low()
    pin.drive_low()  # no edge
    pin.drive_high()
    assert [level for level, _ in seen] == [False, True]
    assert before <= seen[0][1] < seen[1][1] <= time.monotonic_ns()
    assert threads == [threading.current_thread()] * 2
    assert pin.read() is True


def test_inputs_rest_at_their_pull(factory: SimPinFactory) -> None:
    assert factory.input(17).read() is True
    assert factory.input(18, pull_up=False).read() is False


def test_press_is_low_then_high_hold_apart_and_presses_stay_apart(
        factory: SimPinFactory) -> None:
    pin = factory.input(17)
    seen: list[tuple[bool, int]] = []
    pin.on_change(lambda level, t: seen.append((level, t)))
    pin.press(hold_s=0.1)
    pin.press(hold_s=0.1)
    assert [level for level, _ in seen] == [False, True, False, True]
    t = [t for _, t in seen]
    assert t[1] - t[0] == 100 * MS
    assert t[2] - t[1] >= 100 * MS  # the button was up as long as it was down
    assert t[3] - t[2] == 100 * MS
    pin.drive_low()  # never stamped before the last edge
    assert seen[-1][1] > t[3]


def test_bounce_fires_every_edge_with_its_time(factory: SimPinFactory) -> None:
    pin = factory.input(17)
    seen: list[tuple[bool, int]] = []
    pin.on_change(lambda level, t: seen.append((level, t)))
    edges = [(False, 1000), (True, 2000), (True, 2500), (False, 3000)]
    pin.bounce(edges)
    assert seen == edges  # the repeated level too
    assert pin.read() is False
    with pytest.raises(ValueError, match="before the last edge of GPIO17"):
        pin.bounce([(True, 2999)])


def test_a_closed_input_cannot_be_driven(factory: SimPinFactory) -> None:
    pin = factory.input(17)
    pin.close()
    with pytest.raises(GpioError, match="GPIO17 is closed"):
        pin.drive_low()


def test_sim_pins_are_reachable_by_number(factory: SimPinFactory) -> None:
    pin = factory.input(17)
    led = factory.output(27)
    assert factory.sim_input(17) is pin
    assert factory.sim_output(27) is led
    with pytest.raises(GpioError, match="GPIO27 is not claimed as an input"):
        factory.sim_input(27)
    with pytest.raises(GpioError, match="GPIO4 is not claimed as an output"):
        factory.sim_output(4)
