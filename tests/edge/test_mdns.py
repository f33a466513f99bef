"""The room's mDNS announcement, seen by a browser over real multicast on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import replace
from typing import Any

import pytest
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edge.contract import (
    API_PREFIX,
    SERVICE_TYPE,
    TXT_API,
    TXT_ID,
    TXT_NAME,
    TXT_STATE,
    TXT_VERSION,
)
from edge.mdns import (
    Announcer,
    Browser,
    Room,
    _room,
    host_name,
    instance_label,
    parse_txt,
    short_id,
)
from tests.support.mdns import LOOPBACK, loopback_multicast_problem, next_event, unique_room_id

ADDRESSES = ["192.0.2.10", "2001:db8::10"]   # documentation addresses: data, never dialled

# --- names and TXT, no network ---


def test_instance_label_is_a_valid_dns_sd_label() -> None:
    label = instance_label("r101", "Hall 1.01\tnorth ")
    assert label == "Hall 1 01 north (r101)"
    long = instance_label("room-" + "x" * 50, "Ü" * 80)
    assert "." not in long
    assert len(long.encode()) <= 60           # 63 less room for zeroconf's "-2"
    long.encode().decode()                    # not cut inside a character
    assert instance_label("a-b", "") == "roomrec (a-b)"


def test_same_name_different_rooms_differ() -> None:
    ids = ["building-a-101", "building-a-102", "a.b", "a-b"]
    assert len({instance_label(i, "Lab") for i in ids}) == len(ids)
    assert len({host_name(i) for i in ids}) == len(ids)
    assert short_id("r101") == "r101"
    assert len(short_id("x" * 64)) == 12


def test_host_name_is_a_host_label() -> None:
    for room_id in ["R101", "a.b_c", "9" * 64, "room-1"]:
        label, local = host_name(room_id).split(".", 1)
        assert local == "local."
        assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label), label
    assert host_name("room-1") == "roomrec-room-1.local."


def test_parse_txt() -> None:
    text = b"\x05id=r1\x07ID=nope\x0aname=a=b\xc3\x9c\x04flag\x00"
    assert parse_txt(text) == {"id": "r1", "name": "a=b\u00dc", "flag": ""}


def test_announcer_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="room id"):
        Announcer("-bad", "Lab", 8080, "1", ADDRESSES, LOOPBACK)
    with pytest.raises(ValueError, match="port"):
        Announcer("r1", "Lab", 0, "1", ADDRESSES, LOOPBACK)
    with pytest.raises(ValueError, match=r"192\.0\.2"):
        Announcer("r1", "Lab", 8443, "1", ["192.0.2"], LOOPBACK)


def test_a_room_keeps_its_host_records_when_the_cache_lost_them() -> None:
    name = f"Lab (r1).{SERVICE_TYPE}"
    seen = Room(instance=name, room_id="r1", name="Lab", state="idle", version="1",
                api=API_PREFIX, host="roomrec-r1.local.", port=8443, addresses=("192.0.2.1",))
    txt = b"\x05id=r1\x0fstate=recording"
    bare = AsyncServiceInfo(SERVICE_TYPE, name)     # no SRV, no addresses: expired
    assert _room(bare, txt, seen) == replace(seen, state="recording", name="", version="",
                                             api="")
    assert _room(bare, txt) is None
    assert _room(bare, b"\x08state=up", seen) is None   # no id: not a room


# --- real mDNS on the loopback interface ---


@pytest.fixture(scope="session")
def loopback_mdns() -> None:
    problem = loopback_multicast_problem()
    if problem:
        pytest.skip(f"no multicast on the loopback interface: {problem}")


@pytest.fixture
def no_thread_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"


@pytest.fixture
async def browser(loopback_mdns: None, no_thread_left: None) -> AsyncIterator[Browser]:
    async with Browser(LOOPBACK) as b:
        yield b


AnnouncerFactory = Callable[..., Coroutine[Any, Any, Announcer]]


@pytest.fixture
async def announce(loopback_mdns: None,
                   no_thread_left: None) -> AsyncIterator[AnnouncerFactory]:
    """announce(room_id, name, state="idle", port=8443): a started Announcer, closed at
    teardown."""
    made: list[Announcer] = []

    async def make(room_id: str, name: str, state: Any = "idle", port: int = 8443) -> Announcer:
        a = Announcer(room_id, name, port, "1.2.3", ADDRESSES, LOOPBACK)
        made.append(a)
        await a.start(state)
        return a

    yield make
    for a in made:
        await a.close()


async def test_announce_update_withdraw(browser: Browser, announce: AnnouncerFactory) -> None:
    rid = unique_room_id()
    edge = await announce(rid, "Skills lab", port=8443)
    assert edge.service_name == f"Skills lab ({rid}).{SERVICE_TYPE}"

    found = await next_event(browser, rid)
    assert found.kind == "found"
    room = found.room
    assert (room.instance, room.name, room.state, room.version, room.api, room.port) == (
        edge.service_name, "Skills lab", "idle", "1.2.3", API_PREFIX, 8443)
    assert room.host == host_name(rid)
    assert sorted(room.addresses) == sorted(ADDRESSES)

    # the wire contract, read by plain zeroconf from a third instance
    async with AsyncZeroconf(interfaces=LOOPBACK) as other:
        info = AsyncServiceInfo(SERVICE_TYPE, edge.service_name)
        assert await info.async_request(other.zeroconf, 3000)
    assert info.port == 8443
    assert info.decoded_properties == {TXT_ID: rid, TXT_NAME: "Skills lab",
                                       TXT_API: API_PREFIX, TXT_VERSION: "1.2.3",
                                       TXT_STATE: "idle"}

    assert await edge.update("recording")
    assert (await next_event(browser, rid)).room.state == "recording"
    assert not await edge.update("recording")           # nothing changed, nothing sent

    # back to a state whose TXT the browser's cache still holds: zeroconf alone would
    # neither report it nor return it (see edge.mdns._TxtWatch)
    assert await edge.update("stopping")
    assert await edge.update("recording")
    seen = [(await next_event(browser, rid)).room.state]
    while seen[-1] != "recording":
        seen.append((await next_event(browser, rid)).room.state)
    assert seen == ["stopping", "recording"]
    assert [r.state for r in browser.rooms if r.room_id == rid] == ["recording"]

    assert await edge.update("recording", name="Skills lab 2")
    updated = await next_event(browser, rid)
    assert (updated.room.name, updated.room.instance) == ("Skills lab 2", edge.service_name)

    await edge.close()
    removed = await next_event(browser, rid)
    assert (removed.kind, removed.room.name) == ("removed", "Skills lab 2")
    assert not [r for r in browser.rooms if r.room_id == rid]
    assert not await edge.update("idle")                # after close: nothing to send


async def test_name_conflict_and_a_late_browser(announce: AnnouncerFactory,
                                                no_thread_left: None) -> None:
    rid = unique_room_id()
    first = await announce(rid, "Lab")
    # A twin box (same id and name) starts while the first one announces a change. On a
    # LAN the twin's probes would be answered by unicast; on one loopback interface that
    # reply goes to whichever socket on port 5353 the kernel picks, so the twin learns of
    # the name from the first one's multicast announcement instead.
    twin = asyncio.create_task(announce(rid, "Lab", state="recording"))
    assert await first.update("starting")
    second = await twin
    assert first.service_name == f"Lab ({rid}).{SERVICE_TYPE}"
    assert second.service_name == f"Lab ({rid})-2.{SERVICE_TYPE}"

    async with Browser(LOOPBACK) as late:                     # finds them by asking
        one = await next_event(late, rid)
        two = await next_event(late, rid, lambda e: e.room.instance != one.room.instance)
    assert {(e.kind, e.room.instance, e.room.state) for e in (one, two)} == {
        ("found", first.service_name, "starting"), ("found", second.service_name, "recording")}
