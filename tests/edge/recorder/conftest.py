"""Fixtures for recorder tests: rooms of real cameras, and waiting for their events."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edge.clock import WallClock
from edge.recorder.camera import CameraSettings, Event
from edge.recorder.room import RoomRecorder, RoomSettings
from edge.recorder.sources import SourceTimeouts, make_source
from edge.redact import Redactor

E = TypeVar("E")

# Shorter than production where the tests would otherwise wait; the behaviour is the same.
TEST_CAMERA = CameraSettings(segment_s=60.0, backoff_first_s=0.3, backoff_cap_s=2.0)
TEST_ROOM = RoomSettings(reserve_bytes=0, expected_s=10.0, camera=TEST_CAMERA, check_s=0.2)


class Watcher:
    """Collects a room's events; tests wait for the ones they expect."""

    def __init__(self, room: RoomRecorder) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.seen: list[Event] = []
        room.listeners.append(self.queue)

    async def wait(self, kind: type[E], timeout: float = 15.0,
                   where: Callable[[E], bool] = lambda e: True) -> E:
        for ev in self.seen:
            if isinstance(ev, kind) and where(ev):
                self.seen.remove(ev)
                return ev
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.queue.get()
                if isinstance(ev, kind) and where(ev):
                    return ev
                self.seen.append(ev)


async def eventually(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait until `condition()` is true, polling; fails the test on timeout."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polling files; no event to wait on
            await asyncio.sleep(0.05)


RoomFactory = Callable[..., Awaitable[tuple[RoomRecorder, Watcher]]]


@pytest.fixture
async def make_room(tmp_path: Path) -> AsyncIterator[RoomFactory]:
    rooms: list[RoomRecorder] = []

    async def make(cameras: dict[str, str], storage: Path | None = None,
                   redactor: Redactor | None = None, **settings: Any) -> tuple[RoomRecorder,
                                                                              Watcher]:
        timeouts = SourceTimeouts(open_s=3.0)
        cam = replace(TEST_CAMERA, **settings.pop("camera", {}))
        room = RoomRecorder(
            {n: make_source(u, timeouts, redactor) for n, u in cameras.items()},
            storage or tmp_path / "rec", WallClock(), replace(TEST_ROOM, camera=cam, **settings))
        watcher = Watcher(room)
        rooms.append(room)
        await room.open()
        return room, watcher

    yield make
    for room in rooms:
        await room.close()


@pytest.fixture(autouse=True)
def no_camera_threads_left() -> Any:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("camera-")]
    assert not left, f"camera threads left running: {left}"
