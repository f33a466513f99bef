"""The coordinator against real room boxes (edge services with synthetic cameras, real
HTTP, real mDNS on loopback), through its API with aiohttp's test client. GPIO pins are
the only fake (the rooms' simulated buttons). The fixtures are in conftest.py."""

from __future__ import annotations

import asyncio
import csv
import io

import pytest

from edge.gpio.sim import SimPinFactory
from edge.service import EdgeService
from tests.edge.recorder.conftest import eventually
from tests.support.central import (
    ADMIN,
    CentralFactory,
    RoomFactory,
    recording,
    wait_status,
)
from tests.support.mdns import loopback_multicast_problem


async def test_composite_session_by_the_rules(make_room: RoomFactory,
                                              make_central: CentralFactory) -> None:
    rooms = [await make_room("Sim A"), await make_room("Sim B")]
    central = await make_central()
    admin = await central.login(*ADMIN)
    for room in rooms:
        await central.pair(admin, room)
    trainer = await central.add_user(admin, "tara", "trainer")
    other = await central.add_user(admin, "otto", "trainer")
    trainee = await central.add_user(admin, "tim", "trainee")
    tech = await central.add_user(admin, "tess", "technician")
    for room in rooms:
        await wait_status(central, trainer, room.id, "idle")

    ids = [r.id for r in rooms]
    refused = await central.call("POST", "/sessions", trainee,
                                 {"room_ids": ids, "kind": "composite"}, 403)
    assert refused["error"] == "forbidden"
    started = (await central.call("POST", "/sessions", trainer,
                                  {"room_ids": ids, "kind": "composite"}, 201))["sessions"]
    (session,) = started
    assert session["kind"] == "composite" and session["started_by"] == "tara"
    for room in rooms:
        await eventually(recording(room), 10)
        rec = room.service.room.recording
        assert rec is not None and rec.session_id == session["id"]
    busy = await central.call("POST", "/sessions", other, {"room_ids": ids[:1]}, 409)
    assert busy["error"] == "busy"
    for room in rooms:
        loc = await wait_status(central, trainee, room.id, "recording")
        assert loc["recording_by"] == "tara"  # a Trainee may view

    # First frames of every camera and their spread, measured from the rooms' manifests.
    async def measured() -> bool:
        s = await central.call("GET", f"/sessions/{session['id']}", trainer)
        return s["spread_s"] is not None and all(len(sl["first_frames"]) == 2
                                                 for sl in s["locations"])
    async with asyncio.timeout(20):
        while not await measured():  # noqa: ASYNC110 - polling the API
            await asyncio.sleep(0.2)

    denied = await central.call("POST", f"/sessions/{session['id']}/stop", other,
                                {"name": "x"}, 403)
    assert "tara" in denied["detail"]
    await central.call("POST", f"/sessions/{session['id']}/stop", trainee, {"name": "x"}, 403)
    # Logging out never stops a recording.
    await central.call("POST", "/logout", trainer)
    assert all(r.service.room.recording is not None for r in rooms)
    stopped = (await central.call("POST", f"/sessions/{session['id']}/stop", tech,
                                  {"name": "Ward round ✓"}))["sessions"]
    assert [s["name"] for s in stopped] == ["Ward round ✓"]
    assert stopped[0]["state"] == "stopped"
    assert all(r.service.room.recording is None for r in rooms)


async def test_separate_sessions_named_once_and_stopped_together(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    rooms = [await make_room("Sim A"), await make_room("Sim B")]
    central = await make_central(default_name="Simulation", edit_before_save=False)
    admin = await central.login(*ADMIN)
    for room in rooms:
        await central.pair(admin, room)
        await wait_status(central, admin, room.id, "idle")
    started = (await central.call("POST", "/sessions", admin,
                                  {"room_ids": [r.id for r in rooms], "kind": "separate"},
                                  201))["sessions"]
    assert len(started) == 2 and len({s["group_id"] for s in started}) == 1
    assert {s["proposal"] for s in started} == {"Simulation 1"}
    for room in rooms:
        await eventually(recording(room), 10)
    edited = await central.call("POST", f"/sessions/{started[0]['id']}/stop", admin,
                                {"name": "Something else"}, 422)
    assert edited["error"] == "name"
    stopped = (await central.call("POST", f"/sessions/{started[1]['id']}/stop", admin,
                                  {}))["sessions"]
    assert sorted(s["name"] for s in stopped) == ["Simulation 1", "Simulation 1"]
    assert all(r.service.room.recording is None for r in rooms)
    again = (await central.call("POST", "/sessions", admin,
                                {"room_ids": [rooms[0].id]}, 201))["sessions"]
    assert again[0]["proposal"] == "Simulation 2"  # numbers are never reused
    await central.call("POST", f"/sessions/{again[0]['id']}/stop", admin, {})


async def test_codes_scores_remarks_and_export(make_room: RoomFactory,
                                               make_central: CentralFactory) -> None:
    room = await make_room("Sim A")
    central = await make_central()
    admin = await central.login(*ADMIN)
    await central.pair(admin, room)
    await wait_status(central, admin, room.id, "idle")
    keys = "0123456789abcdefghijklmnopqrstuvwxyz"
    lst = await central.call("POST", "/codes-lists", admin, {
        "name": "CRM", "codes": [{"key": k, "label": f"code {k}"} for k in keys]}, 201)
    other = await central.call("POST", "/codes-lists", admin, {"name": "Other"}, 201)
    assert len(lst["codes"]) == 36
    (s,) = (await central.call("POST", "/sessions", admin,
                               {"room_ids": [room.id], "codes_list_id": other["id"]},
                               201))["sessions"]
    await central.call("PUT", f"/sessions/{s['id']}/codes-list", admin,
                       {"codes_list_id": lst["id"]})  # changeable until the first score
    await central.call("POST", f"/sessions/{s['id']}/scores", admin, {"key": "z"}, 201)
    await central.call("POST", f"/sessions/{s['id']}/remarks", admin,
                       {"text": "good, calm handover"}, 201)
    await central.call("PUT", f"/sessions/{s['id']}/codes-list", admin,
                       {"codes_list_id": other["id"]}, 409)
    rows = list(csv.DictReader(io.StringIO(
        await central.call("GET", f"/sessions/{s['id']}/annotations.csv", admin))))
    assert [(r["kind"], r["code"]) for r in rows] == [("score", "z"), ("remark", "")]
    assert rows[0]["user"] == "admin" and float(rows[0]["session_time_s"]) >= 0
    exported = await central.call("GET", f"/sessions/{s['id']}/annotations.json", admin)
    assert len(exported) == 2
    await central.call("POST", f"/sessions/{s['id']}/stop", admin, {"name": "Debrief 1"})


async def test_button_recordings_are_adopted(make_room: RoomFactory,
                                             make_central: CentralFactory) -> None:
    room = await make_room("Sim A")
    central = await make_central(default_name="Skills")
    admin = await central.login(*ADMIN)
    await central.pair(admin, room)
    await wait_status(central, admin, room.id, "idle")
    room.pins.sim_input(17).press(0.05)
    loc = await wait_status(central, admin, room.id, "recording")
    assert loc["recording_by"] == "room button"
    async with asyncio.timeout(10):
        while not (await central.call("GET", "/sessions", admin))["sessions"]:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    (s,) = (await central.call("GET", "/sessions", admin))["sessions"]
    assert s["kind"] == "single" and s["started_by"] == "room button"
    room.pins.sim_input(17).press(0.05)  # stopped on the room: named by the rules
    async with asyncio.timeout(10):
        while (await central.call("GET", f"/sessions/{s['id']}", admin))["state"] != "stopped":  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert (await central.call("GET", f"/sessions/{s['id']}", admin))["name"] == "Skills 1"


async def test_offline_rooms_cannot_be_selected_and_restart_reconciles(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    a, b = await make_room("Sim A"), await make_room("Sim B")
    central = await make_central()
    admin = await central.login(*ADMIN)
    for room in (a, b):
        await central.pair(admin, room)
        await wait_status(central, admin, room.id, "idle")
    (s,) = (await central.call("POST", "/sessions", admin, {"room_ids": [a.id]},
                               201))["sessions"]
    await b.service.stop()
    await wait_status(central, admin, b.id, "offline")
    refused = await central.call("POST", "/sessions", admin, {"room_ids": [b.id]}, 409)
    assert refused["error"] == "offline"

    await central.co.close()  # the coordinator restarts; the room goes on recording
    again = await make_central()
    admin2 = await again.login(*ADMIN)
    loc = await wait_status(again, admin2, a.id, "recording", timeout=10)
    assert loc["session_id"] == s["id"]
    assert a.service.room.recording is not None
    await again.call("POST", f"/sessions/{s['id']}/stop", admin2, {"name": "After restart"})
    assert a.service.room.recording is None


async def test_rooms_found_over_mdns_and_a_wrong_identity_is_flagged(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    problem = loopback_multicast_problem()
    if problem:
        pytest.skip(f"no multicast on the loopback interface: {problem}")
    a = await make_room("Sim A", announce=True)
    b = await make_room("Sim B")
    central = await make_central(discover=True)
    admin = await central.login(*ADMIN)
    async with asyncio.timeout(15):
        while a.id not in {r["room_id"] for r in  # noqa: ASYNC110 - polling the API
                           (await central.call("GET", "/locations/discovered", admin))["rooms"]}:
            await asyncio.sleep(0.2)
    await central.call("POST", "/locations/pair", admin, {"room_id": a.id, "code": a.code}, 201)
    await wait_status(central, admin, a.id, "idle")
    # The address now answers as another room (a box swapped, a DHCP lease reused).
    known = central.co.locations.known[a.id]
    known.port = b.service.port
    loc = await wait_status(central, admin, a.id, "error")
    assert loc["flagged"] and b.id in loc["flagged"]
    refused = await central.call("POST", "/sessions", admin, {"room_ids": [a.id]}, 409)
    assert refused["error"] == "flagged"
    assert b.service.room.recording is None


async def test_unsynchronised_clock_is_refused_unless_allowed_and_sorting(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    drifting = await make_room("Alpha", clock="unsynchronised")
    fine = await make_room("Beta")
    central = await make_central(allow_unsynced_clock=False)
    admin = await central.login(*ADMIN)
    for room in (drifting, fine):
        await central.pair(admin, room)
        await wait_status(central, admin, room.id, "idle")
    refused = await central.call("POST", "/sessions", admin,
                                 {"room_ids": [drifting.id, fine.id], "kind": "composite"}, 409)
    assert refused["error"] == "clock" and "Alpha" in refused["detail"]
    assert drifting.service.room.recording is None and fine.service.room.recording is None
    (s,) = (await central.call("POST", "/sessions", admin, {"room_ids": [fine.id]},
                               201))["sessions"]
    await wait_status(central, admin, fine.id, "recording")
    by_name = (await central.call("GET", "/locations?sort=name", admin))["locations"]
    by_status = (await central.call("GET", "/locations?sort=status", admin))["locations"]
    assert [x["name"] for x in by_name] == ["Alpha", "Beta"]
    assert [x["name"] for x in by_status] == ["Beta", "Alpha"]  # recording first
    await central.call("GET", "/locations?sort=size", admin, status=422)
    await central.call("POST", f"/sessions/{s['id']}/stop", admin, {"name": "Sorted"})


async def test_locked_location_can_be_viewed_not_recorded_by_others(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    room = await make_room("Sim A")
    central = await make_central()
    admin = await central.login(*ADMIN)
    await central.pair(admin, room)
    await wait_status(central, admin, room.id, "idle")
    tara = await central.add_user(admin, "tara", "trainer")
    otto = await central.add_user(admin, "otto", "trainer")
    await central.call("POST", f"/locations/{room.id}/lock", tara)
    loc = await wait_status(central, otto, room.id, "locked")
    assert loc["locked_by"] == "tara"
    refused = await central.call("POST", "/sessions", otto, {"room_ids": [room.id]}, 409)
    assert refused["error"] == "locked" and "tara" in refused["detail"]
    (s,) = (await central.call("POST", "/sessions", tara, {"room_ids": [room.id]},
                               201))["sessions"]
    admin_stop = await central.call("POST", f"/sessions/{s['id']}/stop", admin,
                                    {"name": "x"}, 403)  # only a Technician force-stops
    assert admin_stop["error"] == "forbidden"
    await central.call("POST", f"/sessions/{s['id']}/stop", tara, {"name": "Locked run"})


async def test_a_room_that_moves_is_followed_by_its_id(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    problem = loopback_multicast_problem()
    if problem:
        pytest.skip(f"no multicast on the loopback interface: {problem}")
    room = await make_room("Sim A", announce=True)
    central = await make_central(discover=True)
    admin = await central.login(*ADMIN)
    await central.pair(admin, room)
    old_port = room.service.port
    await wait_status(central, admin, room.id, "idle")
    # The box restarts on another port (a new address, for the coordinator).
    cfg = room.service.config
    await room.service.stop()
    moved = EdgeService(cfg, SimPinFactory(), state_every_s=0.05,
                        clock_sync=lambda: "synchronised")
    await moved.start()
    try:
        assert moved.port != old_port
        async with asyncio.timeout(20):
            while central.co.locations.known[room.id].port != moved.port:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        loc = await wait_status(central, admin, room.id, "idle")
        assert loc["port"] == moved.port and loc["flagged"] is None
    finally:
        await moved.stop()
