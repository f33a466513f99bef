"""The panel (edge.panel) and the installer's panel test (edge.paneltest).

Real logic on the simulated pins of edge.gpio.sim, which are the only fake. Edges are
injected with explicit times, so debouncing is decided without waiting; where the real
timer or the LED's blinking is under test, the test waits for a condition with a timeout,
never for a fixed time.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.contract import CameraStatus, CurrentRecording, DiskStatus, Status
from edge.gpio import PinInUse
from edge.gpio.sim import SimInputPin, SimOutputPin, SimPinFactory
from edge.panel import (
    Button,
    ButtonEvent,
    LedDriver,
    LedPattern,
    LedTimings,
    PanelState,
    RecordingOwner,
    Refuse,
    Start,
    Stop,
    decide_press,
    pattern_for,
    state_from_status,
)
from edge.paneltest import panel_test

MS = 1_000_000
S = 1_000_000_000
BUTTON_USER = "Room 2.14 button"

# Blinks short enough that a test sees many steps in a few hundred milliseconds.
FAST = LedTimings(slow_blink=[(20, 20)], fast_blink=[(5, 5)], recording_error=[(10, 5)],
                  unsafe=[(5, 5), (5, 20)], refused=[(5, 5)] * 3)


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait until cond() holds; fail after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - a fake pin's state has no event to wait on
            await asyncio.sleep(0.002)


async def next_event(q: asyncio.Queue[ButtonEvent], timeout: float = 2.0) -> ButtonEvent:
    return await asyncio.wait_for(q.get(), timeout)


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before


@pytest.fixture
async def no_leftover_tasks() -> AsyncIterator[None]:
    yield
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.fixture
def factory() -> Iterator[SimPinFactory]:
    f = SimPinFactory()
    yield f
    f.close()


@pytest.fixture
async def button(factory: SimPinFactory,
                 no_leftover_tasks: None) -> AsyncIterator[tuple[Button, SimInputPin]]:
    pin = factory.input(17)
    async with Button(pin, debounce_ms=50) as b:
        yield b, pin


# --- pattern_for ----------------------------------------------------------------------


@pytest.mark.parametrize(("state", "pattern"), [
    (PanelState(), LedPattern.OFF),
    (PanelState(recording=True), LedPattern.SOLID),
    (PanelState(recording=True, unsafe=True), LedPattern.SOLID),
    (PanelState(transitioning=True), LedPattern.SLOW_BLINK),
    (PanelState(transitioning=True, recording=True, unsafe=True), LedPattern.SLOW_BLINK),
    (PanelState(error=True), LedPattern.FAST_BLINK),
    (PanelState(error=True, transitioning=True, unsafe=True), LedPattern.FAST_BLINK),
    (PanelState(error=True, recording=True), LedPattern.RECORDING_ERROR),
    (PanelState(unsafe=True), LedPattern.UNSAFE),
])
def test_pattern_for(state: PanelState, pattern: LedPattern) -> None:
    assert pattern_for(state) is pattern


@given(st.builds(PanelState, st.booleans(), st.booleans(), st.booleans(), st.booleans()))
def test_only_a_dark_led_says_safe_and_errors_always_show(state: PanelState) -> None:
    pattern = pattern_for(state)
    quiet = not (state.recording or state.transitioning or state.error or state.unsafe)
    assert (pattern is LedPattern.OFF) == quiet
    if state.error:  # an error is never hidden, and never hides whether it records
        assert pattern is (LedPattern.RECORDING_ERROR if state.recording
                           else LedPattern.FAST_BLINK)
    assert pattern is not LedPattern.REFUSED


# --- state_from_status ----------------------------------------------------------------


def status(**kw: object) -> Status:
    base: dict[str, object] = {
        "room_id": "r1", "name": "Room 1", "version": "0", "state": "idle",
        "cameras": [CameraStatus(name="a", state="online")],
        "disk": DiskStatus(free_bytes=10**12, reserve_bytes=10**9, runway_minutes=600.0),
        "clock": "synchronised", "unsafe_to_unplug": False, "paired": True}
    base.update(kw)
    return Status.model_validate(base)


REC = CurrentRecording(recording_id="rec1", started_by="ann",
                       requested_start_utc=datetime(2025, 1, 1, tzinfo=UTC), elapsed_s=1.0)


@pytest.mark.parametrize(("kw", "state"), [
    ({}, PanelState()),
    ({"state": "recording", "recording": REC, "unsafe_to_unplug": True},
     PanelState(recording=True, unsafe=True)),
    ({"state": "starting"}, PanelState(transitioning=True)),
    ({"state": "stopping", "recording": REC}, PanelState(transitioning=True)),
    ({"state": "error", "recording": REC}, PanelState(recording=True, error=True)),
    ({"cameras": [CameraStatus(name="a", state="lost")]}, PanelState(error=True)),
    ({"clock": "unsynchronised"}, PanelState(error=True)),
    ({"clock": "unknown"}, PanelState()),
    ({"disk": DiskStatus(free_bytes=10**9, reserve_bytes=10**9)}, PanelState(error=True)),
    ({"disk": DiskStatus(free_bytes=10**12, reserve_bytes=0, runway_minutes=59.0)},
     PanelState(error=True)),
])
def test_state_from_status(kw: dict[str, object], state: PanelState) -> None:
    assert state_from_status(status(**kw)) == state


# --- LedTimings -----------------------------------------------------------------------


def test_default_timings() -> None:
    t = LedTimings()
    assert t.steps(LedPattern.OFF) == [] and t.steps(LedPattern.SOLID) == []
    assert len(t.unsafe) == 2 and sum(on + off for on, off in t.unsafe) == 2000
    assert len(t.refused) == 3
    for p in LedPattern:
        if p not in (LedPattern.OFF, LedPattern.SOLID):
            assert t.steps(p), p


def test_timings_from_config_lists() -> None:
    t = LedTimings.model_validate({"fast_blink": [[50, 50]], "unsafe": [[100, 100], [100, 1700]]})
    assert t.fast_blink == [(50, 50)]
    assert t.slow_blink == LedTimings().slow_blink


@pytest.mark.parametrize("bad", [
    {"fast_blink": [[0, 50]]},
    {"fast_blink": [["50", 50]]},
    {"fast_blink": [[50.5, 50]]},
    {"fast_blink": []},
    {"fast_blink": [[50, 50, 50]]},
    {"blink": [[50, 50]]},
])
def test_timings_are_strict(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LedTimings.model_validate(bad)


# --- decide_press ---------------------------------------------------------------------


def test_press_on_an_idle_room_starts_as_the_button_user() -> None:
    assert decide_press(None, BUTTON_USER) == Start(started_by=BUTTON_USER)


def test_press_stops_what_the_button_started() -> None:
    owner = RecordingOwner("rec1", BUTTON_USER, started_by_button=True)
    assert decide_press(owner, BUTTON_USER) == Stop("rec1")


def test_press_on_someone_elses_recording_is_refused_naming_them() -> None:
    action = decide_press(RecordingOwner("rec1", "Dr. Ann", False), BUTTON_USER)
    assert isinstance(action, Refuse)
    assert "started by Dr. Ann" in action.reason and "Technician" in action.reason
    anon = decide_press(RecordingOwner("rec2", None, False), BUTTON_USER)
    assert isinstance(anon, Refuse) and "someone else" in anon.reason


def test_owner_of_a_current_recording() -> None:
    assert RecordingOwner.of(REC) == RecordingOwner("rec1", "ann", False)


PRESS = ("press", None)
Op = tuple[str, str | None]
ops = st.lists(st.one_of(
    st.just(PRESS),
    st.tuples(st.just("start"), st.sampled_from(["ann", "bob", BUTTON_USER, None])),
    st.just(("stop", None)),
), max_size=40)


@given(ops)
def test_presses_among_external_starts_and_stops(sequence: list[Op]) -> None:
    """A room driven by presses and by other clients: a press on an idle room starts a
    recording by the button user, a press never stops a recording someone else started,
    and a press right after a press that started a recording stops that one."""
    current: RecordingOwner | None = None
    n = 0
    just_started: str | None = None  # the recording the previous op started, by a press
    for kind, user in sequence:
        if kind == "start":
            if current is None:  # otherwise the room refuses: a recording is running
                n += 1
                current = RecordingOwner(f"r{n}", user, started_by_button=False)
            just_started = None
            continue
        if kind == "stop":
            current = just_started = None
            continue
        action = decide_press(current, BUTTON_USER)
        if just_started is not None:
            assert action == Stop(just_started)
        just_started = None
        if current is None:
            assert action == Start(started_by=BUTTON_USER)
            n += 1
            current = RecordingOwner(f"r{n}", BUTTON_USER, started_by_button=True)
            just_started = current.recording_id
        elif isinstance(action, Stop):
            assert action.recording_id == current.recording_id
            assert current.started_by_button or current.started_by == BUTTON_USER
            current = None
        else:
            assert isinstance(action, Refuse)
            assert not current.started_by_button and current.started_by != BUTTON_USER
            assert (current.started_by or "someone else") in action.reason


# --- Button ---------------------------------------------------------------------------


async def test_a_clean_press_and_release(button: tuple[Button, SimInputPin]) -> None:
    b, pin = button
    q = b.listen()
    pin.press(hold_s=0.1)
    pressed = await next_event(q)
    assert (pressed.pressed, b.presses, b.is_pressed) == (True, 1, True)
    released = await next_event(q)  # confirmed by the timer, 50 ms after the release
    assert (released.pressed, b.presses, b.is_pressed) == (False, 1, False)
    assert released.at_ns - pressed.at_ns == 100 * MS


async def test_bounces_shorter_than_the_debounce_are_ignored(
        button: tuple[Button, SimInputPin]) -> None:
    b, pin = button
    q = b.listen()
    t = time.monotonic_ns() - 10 * S  # in the past: nothing is left to wait for
    pin.bounce([(False, t), (True, t + 5 * MS), (False, t + 10 * MS), (True, t + 49 * MS)])
    pin.press()  # the first event must be this press
    pressed = await next_event(q)
    assert pressed.pressed and pressed.at_ns >= t + 10 * S
    assert b.presses == 1


async def test_a_bouncy_press_counts_once_from_its_last_edge(
        button: tuple[Button, SimInputPin]) -> None:
    b, pin = button
    q = b.listen()
    t = time.monotonic_ns() - 10 * S
    pin.bounce([(False, t), (True, t + 3 * MS), (False, t + 6 * MS), (True, t + 8 * MS),
                (False, t + 10 * MS)])  # ... and held
    assert await next_event(q) == ButtonEvent(pressed=True, at_ns=t + 10 * MS)
    pin.bounce([(True, t + 200 * MS), (False, t + 202 * MS), (True, t + 205 * MS)])
    assert await next_event(q) == ButtonEvent(pressed=False, at_ns=t + 205 * MS)
    assert b.presses == 1 and q.empty()


async def test_a_repeated_level_restarts_the_debounce(
        button: tuple[Button, SimInputPin]) -> None:
    """A backend can report a level twice when the contact bounced faster than it read:
    the level is only known to be steady from the second report on."""
    b, pin = button
    q = b.listen()
    t = time.monotonic_ns() - 10 * S
    pin.bounce([(False, t), (False, t + 40 * MS), (True, t + 80 * MS)])
    pin.press()
    pressed = await next_event(q)
    assert pressed.at_ns > t + 80 * MS and b.presses == 1


async def test_a_press_held_without_a_release_counts_after_the_debounce(
        button: tuple[Button, SimInputPin]) -> None:
    b, pin = button
    q = b.listen()
    pin.drive_low()
    t_low = time.monotonic_ns()
    pressed = await next_event(q)
    assert pressed.pressed and b.is_pressed
    assert time.monotonic_ns() - t_low >= 50 * MS - MS


async def test_consecutive_presses_each_count(button: tuple[Button, SimInputPin]) -> None:
    b, pin = button
    q = b.listen()
    for _ in range(3):
        pin.press(hold_s=0.06)
    kinds = [(await next_event(q)).pressed for _ in range(6)]
    assert kinds == [True, False] * 3 and b.presses == 3


async def test_edges_from_another_thread_reach_the_loop(
        button: tuple[Button, SimInputPin]) -> None:
    b, pin = button
    q = b.listen()
    t = time.monotonic_ns() - 10 * S
    worker = threading.Thread(target=pin.bounce, args=([(False, t), (True, t + 60 * MS)],))
    worker.start()
    worker.join()
    assert await next_event(q) == ButtonEvent(pressed=True, at_ns=t)


async def test_a_button_held_at_start_is_not_a_press(factory: SimPinFactory,
                                                     no_leftover_tasks: None) -> None:
    pin = factory.input(17)
    t = time.monotonic_ns() - 10 * S
    pin.bounce([(False, t - S)])
    async with Button(pin, debounce_ms=50) as b:
        q = b.listen()
        assert b.is_pressed
        pin.bounce([(True, t), (False, t + 100 * MS)])
        assert await next_event(q) == ButtonEvent(pressed=False, at_ns=t)
        assert await next_event(q) == ButtonEvent(pressed=True, at_ns=t + 100 * MS)
        assert b.presses == 1


async def test_presses_are_handled_one_at_a_time_in_order(
        factory: SimPinFactory, no_leftover_tasks: None) -> None:
    pin = factory.input(17)
    handled: list[int] = []
    busy = 0
    overlapped = False
    gate = asyncio.Event()

    async def on_press(ev: ButtonEvent) -> None:
        nonlocal busy, overlapped
        busy += 1
        overlapped |= busy > 1
        await gate.wait()
        handled.append(ev.at_ns)
        busy -= 1

    async with Button(pin, debounce_ms=50, on_press=on_press) as b:
        t = time.monotonic_ns() - 10 * S
        pin.bounce([(False, t), (True, t + 60 * MS), (False, t + 200 * MS),
                    (True, t + 260 * MS)])
        await until(lambda: b.presses == 2)
        gate.set()
    # close() let the handler finish both presses
    assert handled == [t, t + 200 * MS] and not overlapped


async def test_a_failing_handler_does_not_stop_the_button(
        factory: SimPinFactory, no_leftover_tasks: None,
        caplog: pytest.LogCaptureFixture) -> None:
    pin = factory.input(17)
    calls: list[ButtonEvent] = []

    async def on_press(ev: ButtonEvent) -> None:
        calls.append(ev)
        if len(calls) == 1:
            raise RuntimeError("boom")

    async with Button(pin, debounce_ms=50, on_press=on_press):
        pin.press()
        pin.press()
        await until(lambda: len(calls) == 2)
    assert "handling a press of the button failed" in caplog.text


async def test_a_closed_button_reports_nothing(factory: SimPinFactory,
                                               no_leftover_tasks: None) -> None:
    pin = factory.input(17)
    b = Button(pin)
    b.start()
    q = b.listen()
    await b.close()
    await b.close()  # twice is fine
    pin.press()
    await asyncio.sleep(0)  # let anything scheduled run
    assert q.empty() and b.presses == 0


# --- LedDriver ------------------------------------------------------------------------


@pytest.fixture
async def led(factory: SimPinFactory,
              no_leftover_tasks: None) -> AsyncIterator[tuple[LedDriver, SimOutputPin,
                                                              SimOutputPin]]:
    led_pin = factory.output(27)
    tally = factory.output(22)
    async with LedDriver(led_pin, tally, FAST) as d:
        yield d, led_pin, tally


LedFixture = tuple[LedDriver, SimOutputPin, SimOutputPin]


async def test_solid_and_off(led: LedFixture) -> None:
    d, pin, _ = led
    d.set_pattern(LedPattern.SOLID)
    await until(lambda: pin.states() == [True])
    d.set_pattern(LedPattern.OFF)
    await until(lambda: pin.states() == [True, False])


async def test_fast_blink_plays_its_steps(led: LedFixture) -> None:
    d, pin, _ = led
    d.set_pattern(LedPattern.FAST_BLINK)
    await until(lambda: len(pin.history) >= 8)
    assert pin.states()[:8] == [True, False] * 4
    gaps = [b[0] - a[0] for a, b in zip(pin.history, pin.history[1:8], strict=False)]
    assert min(gaps) >= 4 * MS  # 5 ms steps; a sleep never ends early by a millisecond


async def test_unsafe_is_a_double_flash(led: LedFixture) -> None:
    d, pin, _ = led
    d.set_pattern(LedPattern.UNSAFE)
    await until(lambda: len(pin.history) >= 5)
    times = [t for t, _ in pin.history[:5]]
    # on 5, off 5, on 5, off 20: the second gap is the long one
    assert times[4] - times[3] >= 20 * MS - MS
    assert pin.states()[:5] == [True, False, True, False, True]


async def test_a_new_pattern_takes_effect_at_once(factory: SimPinFactory,
                                                  no_leftover_tasks: None) -> None:
    pin = factory.output(27)
    slow = LedTimings(slow_blink=[(60_000, 60_000)])
    async with LedDriver(pin, timings=slow) as d:
        d.set_pattern(LedPattern.SLOW_BLINK)
        await until(lambda: pin.state)
        d.set_pattern(LedPattern.OFF)  # not a minute later
        await until(lambda: not pin.state, timeout=1.0)


async def test_refused_flashes_three_times_over_solid_then_resumes(led: LedFixture) -> None:
    d, pin, _ = led
    d.set_pattern(LedPattern.SOLID)
    await until(lambda: pin.states() == [True])
    d.flash_refused()
    assert d.pattern is LedPattern.SOLID
    await until(lambda: len(pin.history) == 7)
    assert pin.states() == [True] + [False, True] * 3  # three dark blinks, then lit again


async def test_refused_over_off_and_a_pattern_set_meanwhile(led: LedFixture) -> None:
    d, pin, _ = led
    d.flash_refused()
    d.set_pattern(LedPattern.SOLID)  # shown once the flashes are done
    await until(lambda: len(pin.history) == 7)
    assert pin.states() == [True, False] * 3 + [True]


def test_refused_is_not_a_steady_pattern(factory: SimPinFactory) -> None:
    d = LedDriver(factory.output(27))
    with pytest.raises(ValueError, match="flash_refused"):
        d.set_pattern(LedPattern.REFUSED)


async def test_the_tally_mirrors_recording(led: LedFixture) -> None:
    d, _, tally = led
    shown = []
    for state in (PanelState(recording=True, unsafe=True),
                  PanelState(recording=True, error=True), PanelState(unsafe=True)):
        d.show(state)
        shown.append((d.pattern, tally.state))
    assert shown == [(LedPattern.SOLID, True), (LedPattern.RECORDING_ERROR, True),
                     (LedPattern.UNSAFE, False)]
    assert tally.states() == [True, False]


async def test_close_switches_everything_off(factory: SimPinFactory,
                                             no_leftover_tasks: None) -> None:
    pin = factory.output(27)
    tally = factory.output(22)
    d = LedDriver(pin, tally, FAST)
    d.start()
    d.show(PanelState(recording=True))
    await until(lambda: pin.state)
    await d.close()
    assert not pin.state and not tally.state


# --- panel_test -----------------------------------------------------------------------


async def test_panel_test_shows_patterns_and_reports_the_button(
        factory: SimPinFactory, no_leftover_tasks: None) -> None:
    out = io.StringIO()
    task = asyncio.create_task(panel_test(factory, 17, 27, 22, seconds=1.0, out=out,
                                          pattern_s=0.1, timings=FAST))
    await until(lambda: factory.claimed() == [17, 22, 27])
    button, led, tally = factory.sim_input(17), factory.sim_output(27), factory.sim_output(22)
    button.press(hold_s=0.06)
    await until(lambda: "button released" in out.getvalue())
    assert await task == 0

    text = out.getvalue()
    assert text.startswith("button GPIO17, LED GPIO27, tally GPIO22; testing for 1 s\n"
                           "press the button now and then: the tally lights while it is "
                           "held\n")
    for pattern in LedPattern:
        assert f"LED: {pattern.name}" in text
    pressed = text.index("button pressed")
    assert pressed < text.index("button released")
    assert text.rstrip().endswith("done: 1 press seen")
    assert tally.states() == [True, False]  # lit while the button was held
    assert True in led.states() and not led.state
    assert factory.claimed() == []  # every pin given back


async def test_panel_test_refuses_a_pin_used_twice(factory: SimPinFactory,
                                                   no_leftover_tasks: None) -> None:
    with pytest.raises(PinInUse, match=r"GPIO17 is already in use as an input \(button\)"):
        await panel_test(factory, 17, 17, None, seconds=0.1, out=io.StringIO())
    assert factory.claimed() == []
