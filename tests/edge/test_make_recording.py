"""A recording fabricated by bench.make_recording is one a real edge service serves."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import aiohttp

from bench.make_recording import make_recording
from edge import contract as c
from edge.config import parse
from edge.gpio.sim import SimPinFactory
from edge.recorder.manifest import MANIFEST_NAME, load
from edge.service import EdgeService

MIB = 1 << 20


async def serve(storage: Path, room_id: str, tmp_path: Path) -> EdgeService:
    """A real edge service on the storage folder (pairing code "code-<room id>")."""
    config = parse({
        "room": {"id": room_id, "name": f"Lab {room_id}"},
        "cameras": [{"name": "a", "url": "test:a?size=160x120&fps=5"}],
        "storage": {"path": str(storage), "reserve_mb": 0, "expected_minutes": 1},
        "api": {"host": "127.0.0.1", "port": 0},
        "pairing": {"code": f"code-{room_id}", "state_dir": str(tmp_path / "state")},
        "announce": {"enabled": False},
        "clock": {"require_sync": False},
    })
    service = EdgeService(config, SimPinFactory(), state_every_s=0.05)
    await service.start()
    return service


async def test_a_fabricated_recording_is_listed_and_served(tmp_path: Path) -> None:
    storage = tmp_path / "rec"
    rid = await asyncio.to_thread(make_recording, storage, "lab-9", 10 * MIB,
                                  segment_bytes=4 * MIB, cameras=1)
    on_disk = load(storage / rid / MANIFEST_NAME)
    segments = on_disk.cameras["cam1"].segments
    assert [s.size for s in segments] == [4 * MIB, 4 * MIB, 2 * MIB]
    assert all(s.complete for s in segments)
    assert sorted(p.name for p in (storage / rid / "cam1").iterdir()) == [
        "00001.mp4", "00002.mp4", "00003.mp4"]

    service = await serve(storage, "lab-9", tmp_path)
    base = f"http://127.0.0.1:{service.port}{c.API_PREFIX}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/pair",
                                 json={"coordinator_id": "bench", "code": "code-lab-9"}) as r:
                assert r.status == 200, await r.text()
                auth = {"Authorization": f"Bearer {(await r.json())['secret']}"}
            async with http.get(f"{base}/recordings", headers=auth) as r:
                listed = c.RecordingList.model_validate(await r.json()).recordings
            assert [(x.recording_id, x.state, x.segments, x.bytes) for x in listed] == [
                (rid, "stopped", 3, 10 * MIB)]
            async with http.get(f"{base}/recordings/{rid}", headers=auth) as r:
                assert c.Manifest.model_validate(json.loads(await r.text())) == on_disk
            for seg in segments:
                async with http.get(f"{base}/segments/{seg.id}", headers=auth) as r:
                    assert r.status == 200
                    assert r.headers["X-Content-SHA256"] == seg.sha256
                    body = await r.read()
                assert len(body) == seg.size
                assert hashlib.sha256(body).hexdigest() == seg.sha256
    finally:
        await service.stop()


async def test_releases_at_the_same_time_are_all_kept(tmp_path: Path) -> None:
    """Each release reads, changes and writes the manifest; two at once must not write a
    copy without the other's change (the coordinator releases files as each is
    verified, several at a time)."""
    storage = tmp_path / "rec"
    rid = await asyncio.to_thread(make_recording, storage, "lab-7", 8 * MIB,
                                  segment_bytes=1 * MIB, cameras=2)
    segments = [s for cam in load(storage / rid / MANIFEST_NAME).cameras.values()
                for s in cam.segments]
    service = await serve(storage, "lab-7", tmp_path)
    try:
        assert service.unsafe()
        results = await asyncio.gather(*(
            service.release(rid, c.ReleaseRequest(segment_ids=[s.id])) for s in segments))
        assert sorted(x for r in results for x in r.released) == sorted(s.id for s in segments)
        kept = load(storage / rid / MANIFEST_NAME)
        assert all(s.released_utc is not None for cam in kept.cameras.values()
                   for s in cam.segments)
        assert not service.unsafe()
    finally:
        await service.stop()
