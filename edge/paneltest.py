"""The installer's wiring check of a room box's panel (`roomrec-edge panel-test`).

Cycles the LED through every pattern, about two seconds each, naming each as it starts;
reports every press and release of the button as it happens, and lights the tally while
the button is held down; ends with a summary. Nothing is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol, TextIO

from edge.gpio.pins import PinFactory, pin_name
from edge.panel import Button, ButtonEvent, LedDriver, LedPattern, LedTimings

NS = 1_000_000_000


class _Say(Protocol):
    def __call__(self, text: str, at_ns: int | None = None) -> None: ...


MEANING = {
    LedPattern.OFF: "idle and ready, safe to unplug",
    LedPattern.SOLID: "recording",
    LedPattern.SLOW_BLINK: "starting, stopping, or waiting for a synchronized start",
    LedPattern.FAST_BLINK: "an error, not recording",
    LedPattern.RECORDING_ERROR: "recording, with an error",
    LedPattern.UNSAFE: "recordings not yet on central storage: don't unplug",
    LedPattern.REFUSED: "a press was refused (plays once)",
}

CYCLE = (LedPattern.SOLID, LedPattern.SLOW_BLINK, LedPattern.FAST_BLINK,
         LedPattern.RECORDING_ERROR, LedPattern.UNSAFE, LedPattern.REFUSED, LedPattern.OFF)


async def panel_test(factory: PinFactory, button_pin: int, led_pin: int, tally_pin: int | None,
                     seconds: float, out: TextIO, *, pattern_s: float = 2.0,
                     debounce_ms: int = 50, timings: LedTimings | None = None) -> int:
    """Run the check for `seconds`, writing to `out`; returns 0. Claims the pins and gives
    them back at the end."""
    t0 = time.monotonic_ns()

    def say(text: str, at_ns: int | None = None) -> None:
        at = (time.monotonic_ns() if at_ns is None else at_ns) - t0
        out.write(f"{max(at, 0) / NS:7.2f} s  {text}\n")
        out.flush()

    with contextlib.ExitStack() as pins:
        button_in = factory.input(button_pin, pull_up=True, label="button")
        pins.callback(button_in.close)
        led = factory.output(led_pin, label="LED")
        pins.callback(led.close)
        tally = None
        if tally_pin is not None:
            tally = factory.output(tally_pin, label="tally")
            pins.callback(tally.close)
        out.write(f"button {pin_name(button_pin)}, LED {pin_name(led_pin)}, tally "
                  f"{'none' if tally_pin is None else pin_name(tally_pin)}; "
                  f"testing for {seconds:g} s\n"
                  "press the button now and then"
                  f"{'' if tally is None else ': the tally lights while it is held'}\n")
        if not button_in.read():
            say("the button reads pressed (low) already: check its wiring")
        button = Button(button_in, debounce_ms=debounce_ms)
        driver = LedDriver(led, tally, timings)
        async with button, driver:
            events = button.listen()
            watcher = asyncio.create_task(_report(events, driver, say),
                                          name="panel-test-button")
            try:
                await _cycle(driver, seconds, pattern_s, say)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
                _drain(events, driver, say)
        n = button.presses
        out.write(f"done: {n} press{'' if n == 1 else 'es'} seen\n")
    return 0


async def _cycle(driver: LedDriver, seconds: float, pattern_s: float,
                 say: _Say) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    i = 0
    while (left := end - loop.time()) > 0:
        pattern = CYCLE[i % len(CYCLE)]
        i += 1
        say(f"LED: {pattern.name} ({MEANING[pattern]})")
        if pattern is LedPattern.REFUSED:
            driver.set_pattern(LedPattern.OFF)
            driver.flash_refused()
        else:
            driver.set_pattern(pattern)
        await asyncio.sleep(min(pattern_s, left))
    driver.set_pattern(LedPattern.OFF)


async def _report(events: asyncio.Queue[ButtonEvent], driver: LedDriver, say: _Say) -> None:
    while True:
        _show(await events.get(), driver, say)


def _drain(events: asyncio.Queue[ButtonEvent], driver: LedDriver, say: _Say) -> None:
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            _show(events.get_nowait(), driver, say)


def _show(ev: ButtonEvent, driver: LedDriver, say: _Say) -> None:
    driver.set_tally(ev.pressed)
    say("button pressed" if ev.pressed else "button released", ev.at_ns)
