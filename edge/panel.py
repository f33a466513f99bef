"""The room's panel: the record button, the status LED and the tally light.

Pure rules, which property tests drive:

- `pattern_for(PanelState) -> LedPattern`: what the LED shows.
- `decide_press(RecordingOwner | None, button_user) -> Start | Stop | Refuse`: what a press
  of the button does.

And the asyncio side, over the pins of edge.gpio:

- `Button` debounces the button's input and reports presses and releases in the loop.
- `LedDriver` plays a pattern on the LED and mirrors "recording" on the tally light.

What the LED says, most important first (the first rule that holds wins):

1. recording and an error  -> RECORDING_ERROR: lit, broken by three fast blinks. Still
   recording, but a camera is lost, the disk runs low or the clock is not synchronised:
   call a technician, and do not press the button thinking it stopped.
2. an error                -> FAST_BLINK: not recording, and something is wrong.
3. transitioning           -> SLOW_BLINK: starting, stopping, or waiting for a
   synchronized start; wait for it to settle.
4. recording               -> SOLID.
5. unsafe                  -> UNSAFE: a double flash every 2 s; recordings are not yet
   safely on central storage.
6. otherwise               -> OFF: idle and ready, everything is safe on central storage.

So a dark LED is the only "safe to unplug": every other pattern means "don't". Errors win
over everything because staff must act on them; a recording with an error keeps a pattern
of its own so it is never mistaken for a room that is not recording (a press would then
stop the recording). REFUSED, three quick flashes, is played once over whatever is shown
when a press is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, Strict

from edge.contract import CurrentRecording, Status
from edge.gpio.pins import InputPin, OutputPin

log = logging.getLogger(__name__)

MS = 1_000_000  # ns per ms


# --- what the LED shows ---------------------------------------------------------------


class LedPattern(StrEnum):
    OFF = "off"
    SOLID = "solid"
    SLOW_BLINK = "slow_blink"
    FAST_BLINK = "fast_blink"
    RECORDING_ERROR = "recording_error"
    UNSAFE = "unsafe"
    REFUSED = "refused"  # one-shot, see LedDriver.flash_refused


Ms = Annotated[int, Field(ge=1, le=60_000)]
# (on_ms, off_ms). Not strict about the container, so a config file's [on, off] list
# is accepted; the numbers themselves stay strict integers.
Step = Annotated[tuple[Ms, Ms], Strict(False)]


class LedTimings(BaseModel):
    """Each blinking pattern as (on_ms, off_ms) steps, played in order and repeated.
    OFF and SOLID have no steps."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    slow_blink: list[Step] = Field(default=[(500, 500)], min_length=1,
                                   description="starting, stopping, waiting for a start")
    fast_blink: list[Step] = Field(default=[(100, 100)], min_length=1,
                                   description="an error, not recording")
    recording_error: list[Step] = Field(
        default=[(1000, 100), (100, 100), (100, 100)], min_length=1,
        description="recording, with an error: lit, broken by three fast blinks")
    unsafe: list[Step] = Field(default=[(150, 150), (150, 1550)], min_length=1,
                               description="don't unplug: a double flash every 2 s")
    refused: list[Step] = Field(default=[(80, 80)] * 3, min_length=1,
                                description="played once when a press is refused")

    def steps(self, pattern: LedPattern) -> list[tuple[int, int]]:
        """The steps of a blinking pattern; [] for OFF and SOLID."""
        if pattern in (LedPattern.OFF, LedPattern.SOLID):
            return []
        steps: list[tuple[int, int]] = getattr(self, pattern.value)
        return steps


@dataclass(frozen=True)
class PanelState:
    recording: bool = False
    transitioning: bool = False  # starting, stopping, or waiting for a synchronized start
    error: bool = False          # a camera lost, the disk low or full, the clock not in sync
    unsafe: bool = False         # recordings not yet verified on central storage


def pattern_for(state: PanelState) -> LedPattern:
    """The LED's pattern for a state; the order of the rules is the module docstring's."""
    if state.error:
        return LedPattern.RECORDING_ERROR if state.recording else LedPattern.FAST_BLINK
    if state.transitioning:
        return LedPattern.SLOW_BLINK
    if state.recording:
        return LedPattern.SOLID
    if state.unsafe:
        return LedPattern.UNSAFE
    return LedPattern.OFF


def state_from_status(status: Status, low_disk_minutes: float = 60.0) -> PanelState:
    """The panel's view of the room's status. The disk counts as low below
    `low_disk_minutes` of runway, or when nothing is left above the reserve; the clock as
    an error only when known to be unsynchronised."""
    disk = status.disk
    disk_low = disk.free_bytes <= disk.reserve_bytes or (
        disk.runway_minutes is not None and disk.runway_minutes < low_disk_minutes)
    return PanelState(
        recording=status.recording is not None and status.state in ("recording", "error"),
        transitioning=status.state in ("starting", "stopping"),
        error=(status.state == "error" or disk_low or status.clock == "unsynchronised"
               or any(c.state == "lost" for c in status.cameras)),
        unsafe=status.unsafe_to_unplug,
    )


# --- what a press does ----------------------------------------------------------------


@dataclass(frozen=True)
class RecordingOwner:
    recording_id: str
    started_by: str | None
    started_by_button: bool

    @classmethod
    def of(cls, rec: CurrentRecording) -> RecordingOwner:
        return cls(rec.recording_id, rec.started_by, rec.started_by_button)


@dataclass(frozen=True)
class Start:
    started_by: str


@dataclass(frozen=True)
class Stop:
    recording_id: str


@dataclass(frozen=True)
class Refuse:
    reason: str


PressAction = Start | Stop | Refuse


def decide_press(recording: RecordingOwner | None, button_user: str) -> PressAction:
    """A press on an idle room starts a recording by the room's button user. A press on a
    recording stops it if the button started it, or the button user did (by another way);
    one started by someone else is refused: only its starter or a Technician may stop it."""
    if recording is None:
        return Start(started_by=button_user)
    if recording.started_by_button or recording.started_by == button_user:
        return Stop(recording_id=recording.recording_id)
    who = recording.started_by or "someone else"
    return Refuse(reason=f"recording {recording.recording_id} was started by {who}; only "
                         f"they or a Technician can stop it")


# --- the button -----------------------------------------------------------------------


@dataclass(frozen=True)
class ButtonEvent:
    pressed: bool  # True: pressed; False: released
    at_ns: int     # time.monotonic_ns() when the level changed (before the debounce)


PressHandler = Callable[[ButtonEvent], Awaitable[None]]


class Button:
    """A push button from the pin to ground, on an input with its pull-up: low is pressed.

    A change counts once the level has stayed at its new value for `debounce_ms`; shorter
    excursions are bounces. Both a press and a release are debounced, so a press needs the
    button to have been up (high) for debounce_ms before it. The decision uses the times
    the pin stamps on its edges; a timer in the loop confirms a level that is still held
    when no further edge comes. A button held down when start() runs is not a press.

    Events go to every queue from `listen()`, and presses to `on_press`, which runs one
    press at a time, in order. Everything happens in the loop's thread: the pin's callback
    only hands the edge over with call_soon_threadsafe.
    """

    def __init__(self, pin: InputPin, debounce_ms: int = 50,
                 on_press: PressHandler | None = None) -> None:
        if debounce_ms < 0:
            raise ValueError("debounce_ms must not be negative")
        self.pin = pin
        self.debounce_ns = debounce_ms * MS
        self.presses = 0
        self._on_press = on_press
        self._listeners: list[asyncio.Queue[ButtonEvent]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remove: Callable[[], None] | None = None
        self._stable = True  # the debounced level
        self._raw = True     # the level of the last edge
        self._raw_ns = 0     # ... and when it came
        self._timer: asyncio.TimerHandle | None = None
        self._calls: asyncio.Queue[ButtonEvent | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def is_pressed(self) -> bool:
        return not self._stable

    def listen(self) -> asyncio.Queue[ButtonEvent]:
        """A queue that gets every press and release from now on."""
        q: asyncio.Queue[ButtonEvent] = asyncio.Queue()
        self._listeners.append(q)
        return q

    def start(self) -> None:
        """Begin watching the pin; call from the loop's thread."""
        if self._loop is not None:
            raise RuntimeError("the button is already started")
        self._loop = asyncio.get_running_loop()
        # Listen first, then read: an edge in between arrives later as a repeated level.
        self._remove = self.pin.on_change(self._from_backend)
        self._stable = self._raw = self.pin.read()
        self._raw_ns = time.monotonic_ns()
        if self._on_press is not None:
            self._worker = asyncio.create_task(self._run_handler(self._on_press),
                                               name=f"button-{self.pin.bcm}")

    async def close(self) -> None:
        """Stop watching; a press already reported is still handled. The pin stays open."""
        if self._closed:
            return
        self._closed = True
        if self._remove is not None:
            self._remove()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._worker is not None:
            self._calls.put_nowait(None)
            await self._worker

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # in the backend's thread
    def _from_backend(self, level: bool, t_ns: int) -> None:
        loop = self._loop
        if loop is None or self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            loop.call_soon_threadsafe(self._edge, level, t_ns)

    # in the loop's thread from here on
    def _edge(self, level: bool, t_ns: int) -> None:
        if self._closed:
            return
        pending = self._raw != self._stable
        if pending and level != self._raw and t_ns - self._raw_ns >= self.debounce_ns:
            self._commit()  # the previous level lasted long enough, until this edge
        # A repeated level means the contact bounced faster than the backend could read
        # it: the level is only known to be steady from this edge on.
        self._raw, self._raw_ns = level, t_ns
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._raw != self._stable and self._loop is not None:
            delay_ns = self._raw_ns + self.debounce_ns - time.monotonic_ns()
            self._timer = self._loop.call_later(max(0, delay_ns) / 1e9, self._held)

    def _held(self) -> None:
        self._timer = None
        if self._closed or self._raw == self._stable:
            return
        if time.monotonic_ns() < self._raw_ns + self.debounce_ns:
            self._arm()  # the loop's timer ran a little early
        elif self.pin.read() == self._raw:  # otherwise an edge is on its way to _edge
            self._commit()

    def _commit(self) -> None:
        self._stable = self._raw
        ev = ButtonEvent(pressed=not self._raw, at_ns=self._raw_ns)
        if ev.pressed:
            self.presses += 1
        for q in self._listeners:
            q.put_nowait(ev)
        if ev.pressed and self._worker is not None:
            self._calls.put_nowait(ev)

    async def _run_handler(self, handler: PressHandler) -> None:
        while (ev := await self._calls.get()) is not None:
            try:
                await handler(ev)
            except Exception:
                log.exception("handling a press of the button failed")


# --- the LED --------------------------------------------------------------------------


class LedDriver:
    """Plays a pattern on the LED in a task of its own; mirrors "recording" on the tally.

    set_pattern() interrupts the pattern playing and takes effect at once. flash_refused()
    plays REFUSED to its end (about half a second), then whatever pattern is current.
    Call its methods from the loop's thread.
    """

    def __init__(self, led: OutputPin, tally: OutputPin | None = None,
                 timings: LedTimings | None = None) -> None:
        self.led = led
        self.tally = tally
        self.timings = timings or LedTimings()
        self._pattern = LedPattern.OFF
        self._refuse = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pattern(self) -> LedPattern:
        return self._pattern

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the LED driver is already started")
        self._task = asyncio.create_task(self._run(), name=f"led-{self.led.bcm}")

    async def close(self) -> None:
        """Stop playing and switch the LED and the tally off. The pins stay open."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for pin in (self.led, self.tally):
            if pin is not None and not pin.closed:
                pin.set(False)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def set_pattern(self, pattern: LedPattern) -> None:
        if pattern is LedPattern.REFUSED:
            raise ValueError("REFUSED is played once, with flash_refused()")
        if pattern != self._pattern:
            self._pattern = pattern
            self._wake.set()

    def set_tally(self, recording: bool) -> None:
        if self.tally is not None:
            self.tally.set(recording)

    def show(self, state: PanelState) -> None:
        """The LED and the tally for the room's state."""
        self.set_pattern(pattern_for(state))
        self.set_tally(state.recording)

    def flash_refused(self) -> None:
        """Play REFUSED once (again, if it is playing now), then the current pattern."""
        self._refuse = True
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            if self._refuse:
                self._refuse = False
                for on_ms, off_ms in self.timings.refused:
                    self.led.set(True)
                    await asyncio.sleep(on_ms / 1000)
                    self.led.set(False)
                    await asyncio.sleep(off_ms / 1000)
                continue
            pattern = self._pattern
            steps = self.timings.steps(pattern)
            if not steps:
                self.led.set(pattern is LedPattern.SOLID)
                await self._wake.wait()
                continue
            while not await self._play(steps):
                pass

    async def _play(self, steps: list[tuple[int, int]]) -> bool:
        """Play the steps once; True as soon as something asks for a change."""
        for on_ms, off_ms in steps:
            self.led.set(True)
            if await self._pause(on_ms):
                return True
            self.led.set(False)
            if await self._pause(off_ms):
                return True
        return False

    async def _pause(self, ms: int) -> bool:
        try:
            async with asyncio.timeout(ms / 1000):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True
