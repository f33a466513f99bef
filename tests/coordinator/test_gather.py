"""Gathering onto central storage, with real rooms (edge services, real HTTP) and a real
folder as central storage: verified copies, released only after, and resumable."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from coordinator.gather import INCOMING, RateLimit, session_folder
from coordinator.storage import S3Storage
from edge import contract as c
from edge.panel import LedPattern
from tests.support.central import Central, CentralFactory, Room, RoomFactory
from tests.support.seaweedfs import SeaweedS3


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_of(room: Room, recording_id: str) -> c.Manifest:
    [path] = room.service.config.storage.path.glob(f"*{recording_id}*/manifest.json")
    return c.Manifest.model_validate_json(path.read_text())


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def until_gathered(central: Central, auth: dict[str, str], session_id: str,
                         timeout: float = 60) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            s: dict[str, Any] = await central.call("GET", f"/sessions/{session_id}", auth)
            if s["gathering"] == "verified":
                return s
            await asyncio.sleep(0.1)


async def record(central: Central, auth: dict[str, str], rooms: list[Room], kind: str,
                 seconds_of_video: float, name: str) -> list[dict[str, Any]]:
    """Start a session of these rooms, wait until every camera has this much video in
    its files, stop it with this name."""
    started = await central.call("POST", "/sessions", auth,
                                 {"room_ids": [r.id for r in rooms], "kind": kind}, 201)
    sid = started["sessions"][0]["id"]

    def every_camera_has_a_file() -> bool:
        recs = [room.service.room.recording for room in rooms]
        return all(rec is not None and all(cam.segments for cam in rec.cameras.values())
                   for rec in recs)

    async with asyncio.timeout(30):
        while not every_camera_has_a_file():  # noqa: ASYNC110 - files grow; nothing to await
            await asyncio.sleep(0.1)
    await asyncio.sleep(seconds_of_video)  # video on purpose: a few seconds recorded
    stopped = await central.call("POST", f"/sessions/{sid}/stop", auth, {"name": name})
    return list(stopped["sessions"])


async def test_a_stopped_session_is_gathered_verified_then_released(
        make_room: RoomFactory, make_central: CentralFactory, tmp_path: Path) -> None:
    r1 = await make_room("Sim room 1")
    r2 = await make_room("Sim room/2")  # a name that is not a safe folder name
    central = await make_central()
    admin = await central.login("admin", "admin-password-1")
    for r in (r1, r2):
        await central.pair(admin, r)
    [session] = await record(central, admin, [r1, r2], "composite", 2, "Airway: drill 1")
    await central.call("POST", f"/sessions/{session['id']}/remarks", admin,
                       {"text": "debrief"}, 201)
    done = await until_gathered(central, admin, session["id"])
    assert done["gathered_bytes"] == done["total_bytes"] > 0

    root = tmp_path / "central"
    stored = await central.co.db.get_session(session["id"])
    assert stored is not None
    folder = root / session_folder(stored, "Airway: drill 1")
    assert folder.parent.relative_to(root).parts == (
        f"{stored.start_at_utc:%Y}", f"{stored.start_at_utc:%m}", f"{stored.start_at_utc:%d}")
    assert folder.name.startswith("Airway_ drill 1 ")
    for room in (r1, r2):
        rec_id = next(sl["recording_id"] for sl in session["locations"]
                      if sl["room_id"] == room.id)
        m = manifest_of(room, rec_id)
        for cam in m.cameras.values():
            assert cam.segments
            for seg in cam.segments:
                room_dir = "Sim room 1" if room is r1 else "Sim room_2"
                copy = folder / room_dir / cam.name / Path(seg.file).name
                assert sha256_of(copy) == seg.sha256
                assert seg.released_utc is not None  # released, only now
        assert room.service.status().unsafe_to_unplug is False
        led = room.service.led
        assert led is not None
        async with asyncio.timeout(5):
            while led.pattern is LedPattern.UNSAFE:  # noqa: ASYNC110 - the LED's own tick
                await asyncio.sleep(0.05)

    described = json.loads((folder / "session.json").read_text())
    assert described["name"] == "Airway: drill 1"
    assert described["started_by"]["username"] == "admin"
    assert {loc["name"] for loc in described["locations"]} == {"Sim room 1", "Sim room/2"}
    assert [a["text"] for a in described["annotations"]] == ["debrief"]
    assert set(described["timing"]) == {r1.id, r2.id}
    files = stored_files(root)
    assert len(files) == 1 + len(described["files"])  # the files and session.json only
    assert not any(".partial" in p.name for p in files)
    assert not stored_files(root / INCOMING) if (root / INCOMING).exists() else True


async def test_long_recordings_move_while_they_run(make_room: RoomFactory,
                                                   make_central: CentralFactory,
                                                   tmp_path: Path) -> None:
    room = await make_room("Sim room 1", recorder={"segment_s": 5})
    central = await make_central()
    admin = await central.login("admin", "admin-password-1")
    await central.pair(admin, room)
    started = await central.call("POST", "/sessions", admin, {"room_ids": [room.id]}, 201)
    sid = started["sessions"][0]["id"]
    async with asyncio.timeout(40):
        while True:
            s = await central.call("GET", f"/sessions/{sid}", admin)
            if s["gathering"] == "gathering" and (s["gathered_bytes"] or 0) > 0:
                break
            await asyncio.sleep(0.2)
    assert s["state"] in ("starting", "recording")  # still running: bytes already moved
    room_rec = room.service.room.recording
    assert room_rec is not None
    assert all(seg.released_utc is None for cam in room_rec.cameras.values()
               for seg in cam.segments)  # nothing released before its copy is verified
    await central.call("POST", f"/sessions/{sid}/stop", admin, {"name": "Long one"})
    done = await until_gathered(central, admin, sid)
    assert done["gathered_bytes"] == done["total_bytes"]
    copies = [p for p in stored_files(tmp_path / "central") if p.suffix == ".mp4"]
    assert len(copies) >= 4  # two cameras, at least two files each


async def test_gathering_resumes_after_a_coordinator_restart(
        make_room: RoomFactory, make_central: CentralFactory, tmp_path: Path) -> None:
    room = await make_room("Sim room 1")
    central = await make_central()
    admin = await central.login("admin", "admin-password-1")
    await central.pair(admin, room)
    # Gathering paused (a very long poll and no wake-ups) while the session is recorded.
    await central.co.gatherer.close()
    [session] = await record(central, admin, [room], "single", 2, "Before restart")
    assert (await central.call("GET", f"/sessions/{session['id']}", admin))["gathering"] \
        == "on_rooms"
    await central.co.close()
    again = await make_central()
    admin = await again.login("admin", "admin-password-1")
    done = await until_gathered(again, admin, session["id"])
    assert done["gathered_bytes"] == done["total_bytes"] > 0


async def test_a_bandwidth_limit_holds_the_pace() -> None:
    limit = RateLimit(2_000_000)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(20):
        await limit.take(50_000)  # 1 MB at 2 MB/s, from an empty bucket
    assert loop.time() - t0 >= 0.45
    free = RateLimit(None)
    t0 = loop.time()
    for _ in range(1000):
        await free.take(1 << 20)
    assert loop.time() - t0 < 0.45


async def test_a_session_is_gathered_onto_s3(make_room: RoomFactory,
                                             make_central: CentralFactory,
                                             seaweed: SeaweedS3, tmp_path: Path) -> None:
    prefix = f"gather-{secrets.token_hex(4)}/"
    storage = S3Storage(seaweed.endpoint_url, seaweed.bucket, prefix, "us-east-1",
                        seaweed.access_key, seaweed.secret_key, tmp_path / "spool")
    room = await make_room("Sim room 1")
    central = await make_central(storage=storage)
    try:
        admin = await central.login("admin", "admin-password-1")
        await central.pair(admin, room)
        [session] = await record(central, admin, [room], "single", 2, "On S3")
        await until_gathered(central, admin, session["id"])
        s3 = seaweed.client()
        listed = s3.list_objects_v2(Bucket=seaweed.bucket, Prefix=prefix)["Contents"]
        objects = {o["Key"].removeprefix(prefix): o["Size"] for o in listed}
        [m] = [manifest_of(room, sl["recording_id"]) for sl in session["locations"]]
        for cam in m.cameras.values():
            for seg in cam.segments:
                [key] = [k for k in objects if k.endswith(f"/{cam.name}/{Path(seg.file).name}")]
                body = s3.get_object(Bucket=seaweed.bucket, Key=prefix + key)["Body"].read()
                assert hashlib.sha256(body).hexdigest() == seg.sha256
                assert seg.released_utc is not None
        [described] = [k for k in objects if k.endswith("/session.json")]
        assert described.split("/")[3].startswith("On S3 ")
        assert not list((tmp_path / "spool").glob("*.partial"))  # nothing left staged
    finally:
        await central.co.close()
        await storage.close()
