"""Gathering through a fault proxy between the coordinator and a real room: cuts in the
middle of a file, a flipped byte, a lost answer to a release, a room that restarts.
Whatever happens, the end is exactly one verified copy of each file, sha256 equal."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge import contract as c
from edge.gpio.sim import SimPinFactory
from edge.service import EdgeService
from tests.coordinator.test_gather import record, until_gathered
from tests.support.central import Central, CentralFactory, Room, RoomFactory
from tests.support.faultproxy import CutAfter, DropResponse, FaultProxy, FlipByte, Stall

SEGMENTS = re.compile(r"/api/v1/segments/")
RELEASE = re.compile(r"/api/v1/recordings/[^/]+/release")


Setup = Callable[..., Awaitable[tuple[Room, FaultProxy, Central, dict[str, str]]]]


@pytest.fixture
async def behind_proxy(make_room: RoomFactory,
                       make_central: CentralFactory) -> AsyncIterator[Setup]:
    """behind_proxy(recorder=, gather=): a room, a fault proxy in front of it, and a
    coordinator paired with the room through the proxy; with an Administrator's login."""
    made: list[FaultProxy] = []

    async def make(recorder: dict[str, Any] | None = None,
                   gather: dict[str, Any] | None = None,
                   ) -> tuple[Room, FaultProxy, Central, dict[str, str]]:
        room = await make_room("Sim room 1", recorder=recorder)
        proxy = FaultProxy("127.0.0.1", room.service.port)
        await proxy.start()
        made.append(proxy)
        central = await make_central(gather=gather)
        admin = await central.login("admin", "admin-password-1")
        await central.call("POST", "/locations/pair", admin,
                           {"host": "127.0.0.1", "port": proxy.port, "code": room.code}, 201)
        return room, proxy, central, admin

    yield make
    for proxy in made:
        await proxy.close()


def manifests(room: Room) -> list[c.Manifest]:
    return [c.Manifest.model_validate_json(p.read_text())
            for p in room.service.config.storage.path.glob("*/manifest.json")]


def check_one_verified_copy_each(room: Room, root: Path) -> None:
    """Every segment of the room is on central storage exactly once, byte for byte, and
    released; nothing else is there but session files."""
    expected = {}
    for m in manifests(room):
        for cam in m.cameras.values():
            for seg in cam.segments:
                assert seg.sha256 is not None
                assert seg.released_utc is not None
                expected[seg.sha256] = seg.size
    stored = [p for p in root.rglob("*") if p.is_file() and p.name != "session.json"]
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in stored]
    assert sorted(digests) == sorted(expected)  # one copy of each, no more, no less
    assert all(p.suffix == ".mp4" for p in stored)


async def test_cuts_a_flipped_byte_and_a_lost_release_answer(behind_proxy: Setup,
                                                              tmp_path: Path) -> None:
    room, proxy, central, admin = await behind_proxy(recorder={"segment_s": 5},
                                                     gather={"per_room": 2})
    cuts = proxy.add(CutAfter(SEGMENTS, 20_000, times=4))
    flip = proxy.add(FlipByte(SEGMENTS, 5_000, times=2))
    lost = proxy.add(DropResponse(RELEASE, method="POST", times=2))
    whole = proxy.add(DropResponse(SEGMENTS, times=1))  # a file sent whole, then lost

    [session] = await record(central, admin, [room], "single", 7, "Faulty network")
    done = await until_gathered(central, admin, session["id"], timeout=90)
    assert done["gathered_bytes"] == done["total_bytes"] > 0
    assert proxy.fired(cuts) == 4
    assert proxy.fired(flip) == 2
    assert proxy.fired(lost) == 2
    assert proxy.fired(whole) == 1
    check_one_verified_copy_each(room, tmp_path / "central")
    assert room.service.status().unsafe_to_unplug is False
    resumed = [e for e in proxy.log if SEGMENTS.match(e.path) and e.fault is None]
    assert resumed  # the downloads that went through after the faults


async def test_a_room_that_restarts_mid_file(behind_proxy: Setup, tmp_path: Path) -> None:
    room, proxy, central, admin = await behind_proxy()
    stall = proxy.add(Stall(SEGMENTS, 30_000, 30.0, times=1))
    [session] = await record(central, admin, [room], "single", 3, "Room restarts")
    await proxy.wait_fired(stall, timeout=30)

    # The room goes away in the middle of a file, and comes back on another port.
    await room.service.stop()
    again = EdgeService(room.service.config, SimPinFactory(), state_every_s=0.05,
                        clock_sync=lambda: "synchronised")
    await again.start()
    try:
        proxy.upstream_port = again.port
        proxy.clear()
        done = await until_gathered(central, admin, session["id"], timeout=90)
        assert done["gathered_bytes"] == done["total_bytes"] > 0
        check_one_verified_copy_each(Room(again, room.pins, room.code), tmp_path / "central")
    finally:
        await again.stop()


async def test_a_room_offline_for_a_while_is_gathered_when_it_is_back(
        behind_proxy: Setup, tmp_path: Path) -> None:
    room, proxy, central, admin = await behind_proxy()
    failing = proxy.add(CutAfter(SEGMENTS, 0, times=100_000))  # every download fails
    [session] = await record(central, admin, [room], "single", 2, "Offline for a while")
    await proxy.wait_fired(failing, count=4)  # tried, failed, tried again (backing off)
    real_port = proxy.upstream_port
    proxy.upstream_port = 1  # then nothing answers: the room is offline
    async with asyncio.timeout(20):
        while (await central.call("GET", "/locations", admin))["locations"][0]["status"] \
                != "offline":  # noqa: ASYNC110 - polling the API as a user would
            await asyncio.sleep(0.1)
    assert (await central.call("GET", f"/sessions/{session['id']}", admin))["gathering"] \
        == "on_rooms"
    proxy.clear()
    proxy.upstream_port = real_port  # back: gathering goes on at once, not after backoff
    await until_gathered(central, admin, session["id"], timeout=20)
    check_one_verified_copy_each(room, tmp_path / "central")
