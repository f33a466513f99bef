"""The edge service's API through aiohttp's test client, with real recorders and cameras.

The GPIO pins are the only fake here (the simulated backend, driven by the tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import av
import pytest
from aiohttp.test_utils import TestClient

from edge import contract as c
from edge.api import build
from edge.config import parse
from edge.gpio.sim import SimPinFactory
from edge.panel import LedPattern
from edge.recorder.manifest import MANIFEST_NAME, load
from edge.service import EdgeService
from tests.edge.recorder.conftest import eventually
from tests.support.camera import RtspCamera

P = c.API_PREFIX
CODE = "enroll-7f3a"
BUTTON, LED = 17, 27

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


class Edge:
    def __init__(self, service: EdgeService, client: TestClient[Any, Any],
                 pins: SimPinFactory) -> None:
        self.service = service
        self.client = client
        self.pins = pins
        self.auth: dict[str, str] = {}

    async def pair(self) -> None:
        r = await self.client.post(f"{P}/pair", json={"coordinator_id": "coord-1", "code": CODE})
        assert r.status == 200, await r.text()
        self.auth = {"Authorization": f"Bearer {(await r.json())['secret']}"}

    async def get(self, path: str) -> Any:
        r = await self.client.get(f"{P}{path}", headers=self.auth)
        assert r.status == 200, await r.text()
        return await r.json()

    async def post(self, path: str, body: dict[str, Any], status: int = 200) -> Any:
        r = await self.client.post(f"{P}{path}", json=body, headers=self.auth)
        assert r.status == status, await r.text()
        return await r.json()

    async def online(self) -> None:
        async def all_online() -> bool:
            st = await self.get("/status")
            return all(cam["state"] == "online" for cam in st["cameras"])
        async with asyncio.timeout(15):
            while not await all_online():  # noqa: ASYNC110 - polling the API as a client does
                await asyncio.sleep(0.1)


EdgeFactory = Callable[..., Awaitable[Edge]]


def config_for(tmp_path: Path, cameras: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "room": {"id": "lab-1", "name": "Lab one"},
        "cameras": cameras,
        "storage": {"path": str(tmp_path / "rec"), "reserve_mb": 0, "expected_minutes": 1},
        "api": {"host": "127.0.0.1", "port": 0},
        "pairing": {"code": CODE, "state_dir": str(tmp_path / "state"),
                    "button_window_s": 10},
        "announce": {"enabled": False},
        "clock": {"require_sync": False},
        "gpio": {"button_pin": BUTTON, "led_pin": LED, "debounce_ms": 20},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


@pytest.fixture
async def make_edge(tmp_path: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[EdgeFactory]:
    services: list[EdgeService] = []

    async def make(cameras: list[dict[str, Any]], **sections: Any) -> Edge:
        pins = SimPinFactory()
        service = EdgeService(parse(config_for(tmp_path, cameras, **sections)), pins,
                              state_every_s=0.05)
        services.append(service)
        await service.start(serve=False)
        assert service.app is not None
        return Edge(service, await aiohttp_client(service.app), pins)

    yield make
    for service in services:
        await service.stop()


PATTERN = [{"name": "pattern", "url": "test:pattern?size=320x240&fps=15"}]


async def test_public_routes_and_everything_else_needs_the_secret(make_edge: EdgeFactory) -> None:
    edge = await make_edge(PATTERN)
    r = await edge.client.get(f"{P}/health")
    assert r.status == 200 and (await r.json())["room_id"] == "lab-1"
    doc = await (await edge.client.get(f"{P}/openapi.json")).json()
    _, routes = build(edge.service, 1024)
    for route in routes:
        assert route.method.lower() in doc["paths"][route.path]
        if route.public:
            continue
        path = route.path.replace("{recording_id}", "x").replace("{segment_id}", "x") \
            .replace("{camera}", "pattern")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            resp = await edge.client.request(route.method, path, headers=headers, json={})
            assert resp.status == 401, (route.path, headers)
            assert (await resp.json())["error"] == "unauthorized"
    assert "StartRequest" in doc["components"]["schemas"]


async def test_pairing_needs_a_local_confirmation(make_edge: EdgeFactory) -> None:
    edge = await make_edge(PATTERN)
    r = await edge.client.post(f"{P}/pair", json={"coordinator_id": "x", "code": "nope"})
    assert r.status == 403 and (await r.json())["error"] == "pairing_refused"
    await edge.pair()
    first = dict(edge.auth)
    assert (await edge.get("/status"))["paired"] is True
    again = await edge.client.post(f"{P}/pair", json={"coordinator_id": "x", "code": CODE})
    assert again.status == 403  # the code is one-time

    # Without a code: the room's button, pressed while the pairing waits.
    task = asyncio.ensure_future(edge.client.post(f"{P}/pair", json={"coordinator_id": "c2"}))
    await eventually(edge.service.pairing_pending)
    assert edge.service.room.recording is None
    edge.pins.sim_input(BUTTON).press(0.05)
    resp = await task
    assert resp.status == 200
    assert edge.service.room.recording is None  # the press paired; it did not record
    new = {"Authorization": f"Bearer {(await resp.json())['secret']}"}
    assert (await edge.client.get(f"{P}/status", headers=first)).status == 401
    assert (await edge.client.get(f"{P}/status", headers=new)).status == 200


async def test_status_start_stop_and_the_rules(make_edge: EdgeFactory,
                                               rtsp_camera: Callable[..., RtspCamera]) -> None:
    cam = rtsp_camera(width=320, height=240, fps=30, audio=True)
    edge = await make_edge([{"name": "wide", "url": cam.url}])
    await edge.pair()
    await edge.online()
    st = await edge.get("/status")
    (wide,) = st["cameras"]
    assert [s["codec"] for s in wide["streams"]] == ["h264", "aac"]
    assert (wide["streams"][0]["width"], wide["streams"][0]["height"]) == (320, 240)
    assert st["state"] == "idle" and st["recording"] is None
    assert st["disk"]["free_bytes"] > 0
    await eventually(lambda: edge.service.room.rate_of("wide") is not None, 5)
    st = await edge.get("/status")
    assert st["cameras"][0]["bitrate_bps"] > 0 and st["disk"]["runway_minutes"] > 0

    started = await edge.post("/recording", {"started_by": "ann", "session_id": "s-1",
                                             "name": "Sim 1"}, 201)
    assert started["started_by"] == "ann"
    conflict = await edge.post("/recording", {"started_by": "bob"}, 409)
    assert conflict["error"] == "recording_conflict" and started["recording_id"] in \
        conflict["detail"]
    st = await edge.get("/status")
    assert st["recording"]["recording_id"] == started["recording_id"]
    live = edge.service.room.recording
    await eventually(lambda: live is not None and bool(live.cameras["wide"].segments))
    denied = await edge.post("/recording/stop", {"stopped_by": "bob"}, 403)
    assert "ann" in denied["detail"]
    stopped = await edge.post("/recording/stop", {"stopped_by": "tess", "technician": True})
    assert stopped["state"] == "stopped" and stopped["segments"] >= 1
    none = await edge.post("/recording/stop", {"stopped_by": "ann"}, 409)
    assert none["error"] == "recording_conflict"


async def test_synchronized_start(make_edge: EdgeFactory,
                                  rtsp_camera: Callable[..., RtspCamera]) -> None:
    cam = rtsp_camera(fps=30, keyint=15)
    edge = await make_edge([{"name": "c", "url": cam.url}])
    await edge.pair()
    await edge.online()
    t = datetime.now(UTC) + timedelta(seconds=1.5)
    started = await edge.post("/recording", {"started_by": "ann",
                                             "start_at_utc": t.isoformat()}, 201)
    m = edge.service.room.recording
    assert m is not None and m.requested_start_utc == t
    await eventually(lambda: m.cameras["c"].first_frame_utc is not None, 10)
    first = m.cameras["c"].first_frame_utc
    assert first is not None
    assert timedelta(0) <= t - first <= timedelta(seconds=0.55)
    await edge.post("/recording/stop", {"stopped_by": "ann"})
    assert started["recording_id"] == m.recording_id


async def test_download_release_and_retention(make_edge: EdgeFactory, tmp_path: Path) -> None:
    edge = await make_edge(PATTERN)
    await edge.pair()
    await edge.online()
    kept = await edge.post("/recording", {"started_by": "ann"}, 201)
    await eventually(lambda: bool(edge.service.room.recording
                                  and edge.service.room.recording.cameras["pattern"].segments))
    # A segment being written cannot be downloaded yet.
    seg_id = edge.service.room.recording.cameras["pattern"].segments[0].id  # type: ignore[union-attr]
    busy = await edge.client.get(f"{P}/segments/{seg_id}", headers=edge.auth)
    assert busy.status == 409
    await edge.post("/recording/stop", {"stopped_by": "ann"})
    rec = await edge.post("/recording", {"started_by": "ann"}, 201)
    await asyncio.sleep(1.0)  # some video to download: the length is the point here
    await edge.post("/recording/stop", {"stopped_by": "ann"})

    listing = await edge.get("/recordings")
    assert [r["recording_id"] for r in listing["recordings"]] == [rec["recording_id"],
                                                                   kept["recording_id"]]
    manifest = await edge.get(f"/recordings/{rec['recording_id']}")
    segs = manifest["cameras"]["pattern"]["segments"]
    for seg in segs:
        r = await edge.client.get(f"{P}/segments/{seg['id']}", headers=edge.auth)
        data = await r.read()
        assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
        assert hashlib.sha256(data).hexdigest() == seg["sha256"] == r.headers["X-Content-SHA256"]
        part = await edge.client.get(f"{P}/segments/{seg['id']}",
                                     headers={**edge.auth, "Range": "bytes=100-199"})
        assert part.status == 206 and await part.read() == data[100:200]
    for bad in ("nope", "..%2F..%2Fetc%2Fpasswd", segs[0]["file"].replace("/", "%2F")):
        r = await edge.client.get(f"{P}/segments/{bad}", headers=edge.auth)
        assert r.status == 404
    assert (await edge.client.get(f"{P}/recordings/nope", headers=edge.auth)).status == 404

    assert edge.service.unsafe()
    result = await edge.post(f"/recordings/{rec['recording_id']}/release",
                             {"segment_ids": [s["id"] for s in segs] + ["unknown"]})
    assert sorted(result["released"]) == sorted(s["id"] for s in segs)
    assert result["unknown"] == ["unknown"]
    assert await edge.service.delete_released(keep_s=0) == len(segs)
    folder = tmp_path / "rec" / rec["recording_id"]
    assert not any((folder / s["file"]).exists() for s in segs)
    after = load(folder / MANIFEST_NAME)
    assert all(s.deleted_utc is not None for s in after.cameras["pattern"].segments)
    gone = await edge.client.get(f"{P}/segments/{segs[0]['id']}", headers=edge.auth)
    assert gone.status == 404
    # The recording nobody released is untouched, and the room is still not safe to unplug.
    other = load(tmp_path / "rec" / kept["recording_id"] / MANIFEST_NAME)
    for seg in other.cameras["pattern"].segments:
        assert (tmp_path / "rec" / kept["recording_id"] / seg.file).exists()
    assert edge.service.unsafe()


def established_connections(port: int) -> int:
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


async def test_snapshot_comes_from_the_recorders_own_connection(
        make_edge: EdgeFactory, rtsp_camera: Callable[..., RtspCamera]) -> None:
    cam = rtsp_camera(width=320, height=240, fps=30, keyint=15)
    edge = await make_edge([{"name": "c", "url": cam.url}])
    await edge.pair()
    await edge.online()
    for _ in range(2):
        r = await edge.client.get(f"{P}/cameras/c/snapshot", headers=edge.auth)
        assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
        jpeg = await r.read()
        assert jpeg[:2] == b"\xff\xd8"
        with av.open(io.BytesIO(jpeg), mode="r") as img:
            frame = next(img.decode(video=0))
            assert (frame.width, frame.height) == (320, 240)
    assert established_connections(cam.port) == 1
    missing = await edge.client.get(f"{P}/cameras/none/snapshot", headers=edge.auth)
    assert missing.status == 404


async def test_live_events(make_edge: EdgeFactory) -> None:
    edge = await make_edge(PATTERN)
    await edge.pair()
    await edge.online()
    resp = await edge.client.get(f"{P}/events", headers=edge.auth)
    assert resp.headers["Content-Type"] == "text/event-stream"
    await edge.post("/recording", {"started_by": "ann"}, 201)
    seen: list[str] = []
    async with asyncio.timeout(10):
        while "recording_started" not in seen:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                ev = c.Event.model_validate_json(line[6:])
                seen.append(ev.type)
    resp.close()
    await edge.post("/recording/stop", {"stopped_by": "ann"})


async def test_bad_input_gets_a_clear_error_and_changes_nothing(make_edge: EdgeFactory) -> None:
    edge = await make_edge(PATTERN, api={"max_body_kb": 1})
    await edge.pair()
    cases: list[tuple[Any, int, str]] = [
        (b"{not json", 422, "invalid_body"),
        ({"started_by": "ann", "surprise": 1}, 422, "surprise"),
        ({"started_by": ""}, 422, "started_by"),
        ({"started_by": "ann", "session_id": "../../x"}, 422, "session_id"),
        ({"started_by": "a" * 5000}, 413, ""),
    ]
    for payload, status, needle in cases:
        kwargs = {"data": payload} if isinstance(payload, bytes) else {"json": payload}
        r = await edge.client.post(f"{P}/recording", headers=edge.auth, **kwargs)
        assert r.status == status, (payload, await r.text())
        text = await r.text()
        assert needle in text
        assert json.loads(text)["error"]
    assert edge.service.room.recording is None


async def test_button_starts_stops_and_refuses(make_edge: EdgeFactory) -> None:
    edge = await make_edge(PATTERN)
    await edge.pair()
    await edge.online()
    button = edge.pins.sim_input(BUTTON)
    led = edge.pins.sim_output(LED)
    room = edge.service.room

    button.press(0.05)
    await eventually(lambda: room.recording is not None)
    assert room.recording is not None
    assert room.recording.started_by == "room button" and room.recording.started_by_button
    await eventually(lambda: edge.service.led is not None
                     and edge.service.led.pattern == LedPattern.SOLID)
    assert led.states()[-1] is True
    button.press(0.05)
    await eventually(lambda: room.recording is None)
    await eventually(lambda: edge.service.led is not None
                     and edge.service.led.pattern == LedPattern.UNSAFE)

    await edge.post("/recording", {"started_by": "ann"}, 201)
    events = edge.service.subscribe()
    before = len(led.history)
    button.press(0.05)
    async with asyncio.timeout(5):
        while (ev := await events.get()).type != "button_refused":
            pass
    assert "ann" in str(ev.data["reason"])
    await eventually(lambda: len(led.history) >= before + 6)  # three quick flashes
    assert room.recording is not None and room.recording.started_by == "ann"
    await edge.post("/recording/stop", {"stopped_by": "ann"})


async def test_camera_password_stays_secret(make_edge: EdgeFactory, tmp_path: Path,
                                            rtsp_camera: Callable[..., RtspCamera],
                                            caplog: pytest.LogCaptureFixture) -> None:
    password = "Canary-9q2z!w"

    cam = rtsp_camera(user="viewer", password=password)
    edge = await make_edge([{"name": "c", "url": cam.url, "username": "viewer",
                             "password": password},
                            {"name": "bad", "url": cam.url, "username": "viewer",
                             "password": password + "-wrong"}])
    await edge.pair()
    events = edge.service.subscribe()
    await eventually(lambda: edge.service.room.camera_states()["c"] == "online", 15)
    await eventually(lambda: edge.service.room.camera_states()["bad"] == "lost", 15)
    await edge.post("/recording", {"started_by": "ann"}, 201)
    await asyncio.sleep(1)  # a second of recording: some segments and events to search
    await edge.post("/recording/stop", {"stopped_by": "ann"})
    texts = [json.dumps(await edge.get("/status")), json.dumps(await edge.get("/recordings")),
             caplog.text, repr(edge.service.config)]
    texts += [p.read_text() for p in (tmp_path / "rec").rglob(MANIFEST_NAME)]
    while not events.empty():
        texts.append(events.get_nowait().model_dump_json())
    for text in texts:
        for form in (password, quote(password, safe=""), quote(password)):
            assert form not in text
    assert "lost" in json.dumps(await edge.get("/status"))


async def test_a_room_without_cameras_answers_pairs_and_refuses_to_record(
        make_edge: EdgeFactory) -> None:
    """A freshly flashed box has no cameras yet: it must still be found, paired and
    asked for its status, and say plainly why it will not record."""
    edge = await make_edge([])
    await edge.pair()
    status = await edge.get("/status")
    assert status["cameras"] == [] and status["name"] == "Lab one"
    assert status["state"] == "error"
    r = await edge.client.post(f"{P}/recording", json={"started_by": "ann"}, headers=edge.auth)
    assert r.status == 409
    body = await r.json()
    assert body["error"] == "no_cameras" and "[[cameras]]" in body["detail"]
    assert (await edge.get("/status"))["recording"] is None
    assert "no cameras configured" in edge.service.errors()
