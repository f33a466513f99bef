"""The coordinator's API for reviewing what was recorded, and for editing names, settings
and codes lists: real room boxes with synthetic cameras, real HTTP, a real SQLite file.
The fixtures are in conftest.py."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from datetime import datetime
from typing import Any

from aiohttp import ClientResponse

from edge import contract as c
from tests.edge.recorder.conftest import eventually
from tests.support.central import (
    ADMIN,
    Central,
    CentralFactory,
    P,
    Room,
    RoomFactory,
    recording,
    wait_status,
)

Auth = dict[str, str]


async def next_event(q: asyncio.Queue[c.Event], event_type: str, timeout: float = 5,
                     **data: object) -> c.Event:
    """The next event of this type whose data holds `data`."""
    async with asyncio.timeout(timeout):
        while True:
            ev = await q.get()
            if ev.type == event_type and all(ev.data.get(k) == v for k, v in data.items()):
                return ev


async def setup(make_room: RoomFactory, make_central: CentralFactory,
                **sessions: Any) -> tuple[Room, Central, Auth]:
    room = await make_room("Sim A")
    central = await make_central(**sessions)
    admin = await central.login(*ADMIN)
    await central.pair(admin, room)
    await wait_status(central, admin, room.id, "idle")
    return room, central, admin


async def add_user(central: Central, admin: Auth, username: str, role: str,
                   display_name: str | None = None) -> Auth:
    await central.call("POST", "/users", admin, {
        "username": username, "display_name": display_name or username, "role": role,
        "password": f"{username}-pw-1"}, 201)
    return await central.login(username, f"{username}-pw-1")


async def record_seconds(central: Central, auth: Auth, room: Room, seconds: float,
                         name: str | None = "Review") -> dict[str, Any]:
    """A single session of the room, recorded for `seconds` and stopped (named `name`)."""
    (s,) = (await central.call("POST", "/sessions", auth, {"room_ids": [room.id]},
                               201))["sessions"]

    def long_enough() -> bool:
        rec = room.service.status().recording
        return rec is not None and rec.elapsed_s >= seconds

    await eventually(long_enough, 15)
    body = {} if name is None else {"name": name}
    (stopped,) = (await central.call("POST", f"/sessions/{s['id']}/stop", auth,
                                     body))["sessions"]
    assert room.service.room.recording is None
    return dict(stopped)


async def get(central: Central, path: str, headers: dict[str, str] | None = None,
              ) -> tuple[ClientResponse, bytes]:
    r = await central.client.get(path, headers=headers or {})
    return r, await r.read()


# -- locations: cameras, snapshots, names ------------------------------------------------


async def test_snapshots_and_the_camera_list(make_room: RoomFactory,
                                             make_central: CentralFactory) -> None:
    room, central, admin = await setup(make_room, make_central)
    other = await make_room("Sim B")
    await central.pair(admin, other)
    trainee = await add_user(central, admin, "tim", "trainee")

    def cameras_online() -> bool:
        st = central.co.locations.known[room.id].status
        return st is not None and all(cam.state == "online" for cam in st.cameras)

    await eventually(cameras_online, 10)
    loc = await wait_status(central, trainee, room.id, "idle")
    assert loc["camera_list"] == [{"name": "a", "state": "online"},
                                  {"name": "b", "state": "online"}]
    assert loc["cameras"] == 2 and loc["name"] == "Sim A"

    r, jpeg = await get(central, f"{P}/locations/{room.id}/cameras/a/snapshot", trainee)
    assert r.status == 200, jpeg
    assert r.content_type == "image/jpeg" and r.headers["Cache-Control"] == "no-store"
    assert jpeg[:2] == b"\xff\xd8"
    missing = await central.call("GET", f"/locations/{room.id}/cameras/zz/snapshot", trainee,
                                 status=404)
    assert "zz" in missing["detail"]
    await central.call("GET", "/locations/no-such-room/cameras/a/snapshot", trainee,
                       status=404)

    # A room that answers as another is flagged, and never called: not even for a picture.
    central.co.locations.known[room.id].port = other.service.port
    await wait_status(central, admin, room.id, "error")
    flagged = await central.call("GET", f"/locations/{room.id}/cameras/a/snapshot", trainee,
                                 status=409)
    assert flagged["error"] == "offline"
    await other.service.stop()
    await wait_status(central, admin, other.id, "offline")
    offline = await central.call("GET", f"/locations/{other.id}/cameras/a/snapshot",
                                 trainee, status=409)
    assert offline["error"] == "offline" and "offline" in offline["detail"]


async def test_a_room_that_fails_to_give_a_picture_is_a_room_error(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    # Nothing listens on port 9: the camera never connects, so the room has no picture.
    room = await make_room("Dark", cameras=[{"name": "dead",
                                             "url": "rtsp://127.0.0.1:9/none"}])
    central = await make_central()
    admin = await central.login(*ADMIN)
    await central.pair(admin, room)
    failed = await central.call("GET", f"/locations/{room.id}/cameras/dead/snapshot", admin,
                                status=502)
    assert failed["error"] == "room_error"


async def test_a_location_name_given_here_survives_heartbeats_and_restarts(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    room, central, admin = await setup(make_room, make_central)
    trainer = await add_user(central, admin, "tara", "trainer")
    events = central.co.subscribe()
    path = f"/locations/{room.id}"
    refused = await central.call("PATCH", path, trainer, {"name": "Resus"}, 403)
    assert refused["error"] == "forbidden"
    await central.call("PATCH", path, admin, {"name": ""}, 422)
    await central.call("PATCH", path, admin, {"name": "x" * 101}, 422)
    await central.call("PATCH", path, admin, {"name": "   "}, 422)
    await central.call("PATCH", path, admin, {"name": "Resus", "room": "x"}, 422)
    await central.call("PATCH", "/locations/no-such-room", admin, {"name": "Resus"}, 404)

    renamed = await central.call("PATCH", path, admin, {"name": " Resus bay 2 "})
    assert renamed["name"] == "Resus bay 2" and renamed["room_id"] == room.id
    await next_event(events, "location", room_id=room.id, name="Resus bay 2")
    loc = central.co.locations.known[room.id]
    assert await central.co.locations.refresh(loc) is not None  # a heartbeat
    assert loc.name == "Sim A"  # what the room calls itself is still followed
    (shown,) = (await central.call("GET", "/locations", trainer))["locations"]
    assert shown["name"] == "Resus bay 2"

    await central.co.close()  # the coordinator restarts
    again = await make_central()
    admin2 = await again.login(*ADMIN)
    after = await wait_status(again, admin2, room.id, "idle")
    assert after["name"] == "Resus bay 2"
    # The rules speak of the location by that name too.
    await again.call("POST", f"/locations/{room.id}/lock", admin2)
    tess = await add_user(again, admin2, "tess", "trainer")
    locked = await again.call("POST", "/sessions", tess, {"room_ids": [room.id]}, 409)
    assert locked["error"] == "locked"


# -- sessions: media and segments ----------------------------------------------------------


async def test_session_media_and_segments_through_the_coordinator(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    room, central, admin = await setup(make_room, make_central)
    await central.co.gatherer.close()  # served by the room until gathered, further down
    other = await make_room("Sim B")
    await central.pair(admin, other)
    tara = await add_user(central, admin, "tara", "trainer", "Tara Trainer")
    s = await record_seconds(central, tara, room, 3, name="Media check")
    sid = s["id"]
    trainee = await add_user(central, admin, "tim", "trainee")  # may view, and plays by cookie
    got = await central.call("GET", f"/sessions/{sid}/media", trainee)
    assert got["session_id"] == sid and got["name"] == "Media check"
    assert [(t["room_id"], t["room_name"], t["camera"], t["available"], t["reason"])
            for t in got["tracks"]] == [(room.id, "Sim A", "a", True, None),
                                        (room.id, "Sim A", "b", True, None)]
    (rec,) = [x for x in room.service.recordings().recordings if x.session_id == sid]
    manifest = c.Manifest.model_validate_json(room.service.manifest_json(rec.recording_id))
    for track in got["tracks"]:
        cam = manifest.cameras[track["camera"]]
        assert track["gaps"] == []
        assert [x["segment_id"] for x in track["segments"]] == [x.id for x in cam.segments]
        seg = track["segments"][0]
        assert seg["part"] == 1 and seg["complete"] and seg["size"] > 200
        assert seg["sha256"] == cam.segments[0].sha256
        assert seg["url"] == f"{P}/sessions/{sid}/segments/{room.id}/{seg['segment_id']}"
    origin = min(cam.segments[0].first_frame_utc for cam in manifest.cameras.values())
    assert datetime.fromisoformat(got["origin_utc"]) == origin
    assert 2.5 < got["duration_s"] < 30

    seg = got["tracks"][1]["segments"][0]
    url = seg["url"]
    r, whole = await get(central, url)  # the trainee's session cookie, no Bearer
    assert r.status == 200, whole
    assert r.content_type == "video/mp4" and r.headers["Accept-Ranges"] == "bytes"
    assert int(r.headers["Content-Length"]) == len(whole) == seg["size"]
    assert r.headers["X-Content-SHA256"] == seg["sha256"]
    assert hashlib.sha256(whole).hexdigest() == seg["sha256"]
    assert "Content-Disposition" not in r.headers
    seen = r.headers["Last-Modified"]

    r, part = await get(central, url, {"Range": "bytes=100-199"})
    assert r.status == 206 and part == whole[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    assert r.headers["Content-Length"] == "100"
    r, opened = await get(central, url, {"Range": "bytes=0-"})  # how Chromium begins
    assert r.status == 206 and opened == whole
    r, tail = await get(central, url, {"Range": f"bytes={len(whole) - 10}-"})
    assert r.status == 206 and tail == whole[-10:]
    r, _ = await get(central, url, {"Range": f"bytes={len(whole) + 10}-"})
    assert r.status == 416
    # If-Range: the range only if the file is still the one the browser saw, else it all.
    r, same = await get(central, url, {"Range": "bytes=100-199", "If-Range": seen})
    assert r.status == 206 and same == whole[100:200]
    r, again = await get(central, url, {"Range": "bytes=100-199",
                                        "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert r.status == 200 and again == whole

    r, saved = await get(central, f"{url}?download=1")
    assert r.status == 200 and saved == whole
    assert r.headers["Content-Disposition"].startswith(
        'attachment; filename="Media check - Sim A - b - part 1.mp4"')

    for wrong in (f"{P}/sessions/{sid}/segments/{room.id}/AAAAAAAAAAAAAAAA",
                  f"{P}/sessions/{sid}/segments/{other.id}/{seg['segment_id']}",
                  f"{P}/sessions/no-such-session/segments/{room.id}/{seg['segment_id']}"):
        r, text = await get(central, wrong)
        assert r.status == 404, text
    central.client.session.cookie_jar.clear()
    r, _ = await get(central, url)
    assert r.status == 401
    admin = await central.login(*ADMIN)  # the cookie again

    # Once gathered, the files are played from central storage, room or no room.
    await central.co.gatherer.start()
    async with asyncio.timeout(30):
        while (await central.call("GET", f"/sessions/{sid}", admin))["gathering"] \
                != "verified":  # noqa: ASYNC110 - polling the API as a user would
            await asyncio.sleep(0.1)
    await room.service.stop()
    await wait_status(central, admin, room.id, "offline")
    kept = await central.call("GET", f"/sessions/{sid}/media", admin)
    assert [(t["camera"], t["available"]) for t in kept["tracks"]] == [("a", True),
                                                                      ("b", True)]
    assert kept["origin_utc"] is not None and kept["duration_s"] > 0
    r, body = await get(central, url)
    assert r.status == 200 and hashlib.sha256(body).hexdigest() == seg["sha256"]
    r, part = await get(central, url, headers={"Range": "bytes=100-199"})
    assert r.status == 206 and part == body[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(body)}"


# -- sessions: what they show, renaming, deleting --------------------------------------------


async def test_sessions_are_renamed_and_deleted_by_the_rules(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    room, central, admin = await setup(make_room, make_central)
    tara = await add_user(central, admin, "tara", "trainer", "Tara Trainer")
    otto = await add_user(central, admin, "otto", "trainer")
    tim = await add_user(central, admin, "tim", "trainee")
    tess = await add_user(central, admin, "tess", "technician")
    events = central.co.subscribe()

    (s,) = (await central.call("POST", "/sessions", tara, {"room_ids": [room.id]},
                               201))["sessions"]
    sid = s["id"]
    assert s["name_display"] == "Unnamed session" and s["duration_s"] is None
    assert s["started_by"] == "tara" and s["started_by_display"] == "Tara Trainer"
    assert s["room_names"] == {room.id: "Sim A"}
    assert (s["gathering"], s["gathered_bytes"], s["total_bytes"]) == ("on_rooms", None, None)

    def past_its_start() -> bool:
        rec = room.service.status().recording
        return rec is not None and rec.elapsed_s >= 1.5

    await eventually(past_its_start, 10)
    busy = await central.call("PATCH", f"/sessions/{sid}", tara, {"name": "Early"}, 409)
    assert busy["error"] == "busy"
    busy = await central.call("DELETE", f"/sessions/{sid}", admin, status=409)
    assert busy["error"] == "busy"
    running = await central.call("GET", f"/sessions/{sid}", tim)
    assert running["duration_s"] is None
    (stopped,) = (await central.call("POST", f"/sessions/{sid}/stop", tara,
                                     {"name": "Ward round"}))["sessions"]
    assert stopped["name_display"] == "Ward round" and stopped["duration_s"] >= 0.5

    for who in (otto, tim):
        refused = await central.call("PATCH", f"/sessions/{sid}", who, {"name": "Mine"}, 403)
        assert refused["error"] == "forbidden"
    for bad in ("", "   ", "x" * 201, "two\nlines"):
        invalid = await central.call("PATCH", f"/sessions/{sid}", tara, {"name": bad}, 422)
        assert invalid["error"] == "name" and invalid["detail"].startswith("the session name")
    await central.call("PATCH", f"/sessions/{sid}", tara, {}, 422)
    await central.call("PATCH", "/sessions/no-such-session", tara, {"name": "x"}, 404)
    renamed = await central.call("PATCH", f"/sessions/{sid}", tara, {"name": " Débrief ✓ "})
    assert renamed["name"] == renamed["name_display"] == "Débrief ✓"
    await next_event(events, "session", session_id=sid, name="Débrief ✓")
    for who, name in ((admin, "By the administrator"), (tess, "Ward round, reviewed")):
        assert (await central.call("PATCH", f"/sessions/{sid}", who,
                                    {"name": name}))["name"] == name
    await central.call("PATCH", f"/locations/{room.id}", admin, {"name": "Resus"})
    shown = await central.call("GET", f"/sessions/{sid}", tim)
    assert shown["name"] == "Ward round, reviewed" and shown["room_names"] == {room.id: "Resus"}

    for who in (tara, tim):
        refused = await central.call("DELETE", f"/sessions/{sid}", who, status=403)
        assert refused["error"] == "forbidden"
    await central.call("DELETE", "/sessions/no-such-session", admin, status=404)
    await central.call("DELETE", f"/sessions/{sid}", tess, status=204)
    await next_event(events, "session", session_id=sid, deleted=True)
    assert (await central.call("GET", "/sessions", admin))["sessions"] == []
    for method, path in (("GET", ""), ("GET", "/media"), ("DELETE", ""),
                         ("GET", "/annotations.csv")):
        await central.call(method, f"/sessions/{sid}{path}", admin, status=404)
    await central.call("PATCH", f"/sessions/{sid}", admin, {"name": "Back"}, 404)
    # Its recording stays on the room, every file of it.
    (rec,) = [x for x in room.service.recordings().recordings if x.session_id == sid]
    # Released only where the central copy is verified (deleting a session does not
    # stop its files from being gathered: they exist twice until then).
    gathered = {r.segment_id for r in await central.co.gatherer.store.files(sid)
                if r.verified_utc is not None}
    released = {seg.id for cam in c.Manifest.model_validate_json(
        room.service.manifest_json(rec.recording_id)).cameras.values()
        for seg in cam.segments if seg.released_utc is not None}
    assert rec.segments >= 2 and released <= gathered
    manifest = c.Manifest.model_validate_json(room.service.manifest_json(rec.recording_id))
    folder = room.service.config.storage.path / rec.recording_id
    files = [folder / seg.file for cam in manifest.cameras.values() for seg in cam.segments]
    assert files and all(f.stat().st_size == seg.size for f, seg in zip(
        files, [seg for cam in manifest.cameras.values() for seg in cam.segments],
        strict=True))

    # The name given, and the deletion, survive a restart.
    (kept,) = (await central.call("POST", "/sessions", tara, {"room_ids": [room.id]},
                                  201))["sessions"]
    await eventually(recording(room), 10)
    await central.call("POST", f"/sessions/{kept['id']}/stop", tara, {"name": "Kept"})
    await central.call("PATCH", f"/sessions/{kept['id']}", tara, {"name": "Kept, renamed"})
    await central.co.close()
    again = await make_central()
    admin2 = await again.login(*ADMIN)
    listed = (await again.call("GET", "/sessions", admin2))["sessions"]
    assert [x["name"] for x in listed] == ["Kept, renamed"]
    await again.call("GET", f"/sessions/{sid}", admin2, status=404)


# -- naming settings -----------------------------------------------------------------------


async def test_naming_settings_apply_at_once_and_persist(
        make_room: RoomFactory, make_central: CentralFactory) -> None:
    room, central, admin = await setup(make_room, make_central, default_name="Drill")
    tara = await add_user(central, admin, "tara", "trainer")
    tim = await add_user(central, admin, "tim", "trainee")
    # Nothing stored: the configuration's values.
    assert await central.call("GET", "/settings/naming", tim) == {
        "default_name": "Drill", "edit_before_save": True}
    wanted = {"default_name": "Simulation", "edit_before_save": False}
    for who in (tara, tim):
        refused = await central.call("PUT", "/settings/naming", who, wanted, 403)
        assert refused["error"] == "forbidden"
    for bad in ("  ", "x" * 181, "two\nlines"):
        invalid = await central.call("PUT", "/settings/naming", admin,
                                     {"default_name": bad, "edit_before_save": True}, 422)
        assert invalid["error"] == "name" and "default session name" in invalid["detail"]
    await central.call("PUT", "/settings/naming", admin, {"edit_before_save": True}, 422)
    assert await central.call("PUT", "/settings/naming", admin,
                              {"default_name": " Simulation ", "edit_before_save": False}) \
        == wanted
    assert await central.call("GET", "/settings/naming", tim) == wanted

    first = await record_seconds(central, tara, room, 0.5, name=None)
    assert (first["proposal"], first["name"]) == ("Simulation 1", "Simulation 1")

    await central.co.close()
    again = await make_central(default_name="Drill")  # the stored settings win
    admin2 = await again.login(*ADMIN)
    assert await again.call("GET", "/settings/naming", admin2) == wanted
    await wait_status(again, admin2, room.id, "idle")
    second = await record_seconds(again, admin2, room, 0.5, name=None)
    assert second["name"] == "Simulation 2"
    await again.call("PUT", "/settings/naming", admin2,
                     {"default_name": None, "edit_before_save": True})
    (third,) = (await again.call("POST", "/sessions", admin2, {"room_ids": [room.id]},
                                 201))["sessions"]
    assert third["proposal"] is None and third["name_display"] == "Unnamed session"
    await eventually(recording(room), 10)
    await again.call("POST", f"/sessions/{third['id']}/stop", admin2, {"name": "Named"})


# -- codes lists ---------------------------------------------------------------------------


async def test_codes_lists_are_replaced_and_deleted(make_room: RoomFactory,
                                                    make_central: CentralFactory) -> None:
    room, central, admin = await setup(make_room, make_central)
    tara = await add_user(central, admin, "tara", "trainer")
    crm = await central.call("POST", "/codes-lists", admin, {
        "name": "CRM", "codes": [{"key": "a", "label": "Alpha"}, {"key": "b", "label": "Beta"}]},
        201)
    spare = await central.call("POST", "/codes-lists", admin, {"name": "Spare"}, 201)
    path = f"/codes-lists/{crm['id']}"
    new = {"name": "CRM 2", "codes": [{"key": "b", "label": "Bravo", "color": "#aa0000"},
                                      {"key": "z", "label": "Zulu"}]}
    refused = await central.call("PUT", path, tara, new, 403)
    assert refused["error"] == "forbidden"
    await central.call("DELETE", path, tara, status=403)
    await central.call("PUT", path, admin, {**new, "codes": [{"key": "z", "label": "x"}] * 2},
                       422)
    await central.call("PUT", path, admin, {**new, "codes": [{"key": "A", "label": "x"}]}, 422)
    taken = await central.call("PUT", path, admin, {**new, "name": "spare"}, 409)
    assert "exists already" in taken["detail"]
    await central.call("PUT", "/codes-lists/9999", admin, new, 404)
    await central.call("PUT", "/codes-lists/nine", admin, new, 404)
    replaced = await central.call("PUT", path, admin, new)
    assert replaced == {"id": crm["id"], "name": "CRM 2", "codes": [
        {"key": "b", "label": "Bravo", "color": "#aa0000"},
        {"key": "z", "label": "Zulu", "color": "#3366cc"}]}
    listed = (await central.call("GET", "/codes-lists", tara))["lists"]
    assert [x["name"] for x in listed] == ["CRM 2", "Spare"]

    # Scored with the list: scores keep their label; the list can still be edited, not
    # deleted.
    (s,) = (await central.call("POST", "/sessions", tara,
                               {"room_ids": [room.id], "codes_list_id": crm["id"]},
                               201))["sessions"]
    await central.call("POST", f"/sessions/{s['id']}/scores", tara, {"key": "b"}, 201)
    await central.call("PUT", path, admin, {"name": "CRM 3",
                                            "codes": [{"key": "b", "label": "Other"}]})
    rows = list(csv.DictReader(io.StringIO(
        await central.call("GET", f"/sessions/{s['id']}/annotations.csv", tara))))
    assert [(r["code"], r["label"]) for r in rows] == [("b", "Bravo")]
    in_use = await central.call("DELETE", path, admin, status=409)
    assert in_use["error"] == "conflict" and "used by sessions" in in_use["detail"]
    await central.call("DELETE", f"/codes-lists/{spare['id']}", admin, status=204)
    await central.call("DELETE", f"/codes-lists/{spare['id']}", admin, status=404)
    assert [x["name"] for x in (await central.call("GET", "/codes-lists", tara))["lists"]] \
        == ["CRM 3"]
    await eventually(recording(room), 10)
    await central.call("POST", f"/sessions/{s['id']}/stop", tara, {"name": "Scored"})


# -- who is logged in, and the document ------------------------------------------------------


async def test_me_says_what_the_role_may_do_and_the_document_lists_every_route(
        make_central: CentralFactory) -> None:
    central = await make_central()
    admin = await central.login(*ADMIN)
    me = await central.call("GET", "/me", admin)
    assert me["username"] == "admin" and me["role"] == "administrator"
    assert me["permissions"] == ["record", "view", "manage_users", "manage_locations",
                                 "delete_sessions"]
    tim = await add_user(central, admin, "tim", "trainee")
    tess = await add_user(central, admin, "tess", "technician")
    assert (await central.call("GET", "/me", tim))["permissions"] == ["view"]
    assert "force_stop" in (await central.call("GET", "/me", tess))["permissions"]

    doc = await central.call("GET", "/openapi.json", {})
    paths = doc["paths"]
    for path, method in [
            (f"{P}/locations/{{room_id}}/cameras/{{camera}}/snapshot", "get"),
            (f"{P}/locations/{{room_id}}", "patch"),
            (f"{P}/sessions/{{session_id}}", "patch"),
            (f"{P}/sessions/{{session_id}}", "delete"),
            (f"{P}/sessions/{{session_id}}/media", "get"),
            (f"{P}/sessions/{{session_id}}/segments/{{room_id}}/{{segment_id}}", "get"),
            (f"{P}/settings/naming", "get"), (f"{P}/settings/naming", "put"),
            (f"{P}/codes-lists/{{list_id}}", "put"), (f"{P}/codes-lists/{{list_id}}", "delete"),
            (f"{P}/me", "get")]:
        assert method in paths[path], (method, path)
    schemas = doc["components"]["schemas"]
    assert {"MeOut", "SessionMedia", "Track", "MediaSegment", "NamingSettingsBody",
            "CameraOut"} <= set(schemas)
    assert "permissions" in schemas["MeOut"]["properties"]
