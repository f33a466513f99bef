"""The edge service as systemd runs it: a process that is killed, stopped and restarted,
announcing itself over real mDNS on the loopback interface."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge import contract as c
from edge.config import CameraConfig, EdgeConfig
from edge.mdns import Browser
from edge.recorder.manifest import MANIFEST_NAME, load
from edge.sampleconfig import render
from tests.edge.recorder.conftest import eventually
from tests.edge.recorder.test_recording import check_files
from tests.edge.test_service import CODE, config_for
from tests.support.camera import RtspCamera
from tests.support.mdns import loopback_multicast_problem, next_event, unique_room_id

P = c.API_PREFIX


def toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, list):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {_v(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{key}]")
            lines += [f"{k} = {_v(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def _v(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_v(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class EdgeProcess:
    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.runs = 0
        self.started_at = 0.0

    def start(self) -> None:
        self.runs += 1
        out = self.logs / f"edge{self.runs}.out"
        self.started_at = time.monotonic()
        with out.open("wb") as o, (self.logs / f"edge{self.runs}.err").open("wb") as e:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge", "--config",
                                          str(self.config)], stdin=subprocess.DEVNULL,
                                         stdout=o, stderr=e)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = re.search(r"API on port (\d+)", out.read_text())
            if m:
                self.port = int(m.group(1))
                return
            assert self.proc.poll() is None, self.stderr()
            time.sleep(0.05)
        raise AssertionError(f"the service did not start: {self.stderr()}")

    def stderr(self) -> str:
        return (self.logs / f"edge{self.runs}.err").read_text()

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def edge_process(tmp_path: Path) -> Iterator[Callable[..., EdgeProcess]]:
    made: list[EdgeProcess] = []

    def make(cameras: list[dict[str, Any]], **sections: Any) -> EdgeProcess:
        cfg = tmp_path / "edge.toml"
        cfg.write_text(toml(config_for(tmp_path, cameras, **sections)))
        proc = EdgeProcess(cfg, tmp_path)
        made.append(proc)
        proc.start()
        return proc

    yield make
    for p in made:
        p.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def pair(http: aiohttp.ClientSession, port: int) -> dict[str, str]:
    async with http.post(f"http://127.0.0.1:{port}{P}/pair",
                         json={"coordinator_id": "coord", "code": CODE}) as r:
        assert r.status == 200
        return {"Authorization": f"Bearer {(await r.json())['secret']}"}


async def api(http: aiohttp.ClientSession, method: str, port: int, path: str,
              auth: dict[str, str], body: dict[str, Any] | None = None) -> Any:
    async with http.request(method, f"http://127.0.0.1:{port}{P}{path}", json=body,
                            headers=auth) as r:
        assert r.status < 300, await r.text()
        return await r.json()


def parts_opened(folder: Path, part: int) -> bool:
    try:
        m = load(folder / MANIFEST_NAME)
    except (OSError, ValueError):
        return False
    return all(any(s.part == part for s in cam.segments) for cam in m.cameras.values())


async def test_killed_service_resumes_the_recording_within_five_seconds(
        edge_process: Callable[..., EdgeProcess], http: aiohttp.ClientSession,
        rtsp_camera: Callable[..., RtspCamera], tmp_path: Path) -> None:
    cam = rtsp_camera(fps=30)
    edge = edge_process([{"name": "c", "url": cam.url},
                         {"name": "p", "url": "test:p?size=320x240&fps=15"}])
    auth = await pair(http, edge.port)
    rec = await api(http, "POST", edge.port, "/recording", auth, {"started_by": "ann"})
    folder = tmp_path / "rec" / rec["recording_id"]
    await eventually(lambda: parts_opened(folder, 1), 15)
    await asyncio.sleep(1)  # a second of recording in the files: what the kill cuts into
    edge.signal(signal.SIGKILL)

    edge.start()  # what systemd's Restart=always does
    await eventually(lambda: parts_opened(folder, 2), 10)
    assert time.monotonic() - edge.started_at < 5.0
    st = await api(http, "GET", edge.port, "/status", auth)  # the pairing survived
    assert st["recording"]["recording_id"] == rec["recording_id"]
    await api(http, "POST", edge.port, "/recording/stop", auth, {"stopped_by": "ann"})
    m = load(folder / MANIFEST_NAME)
    assert m.parts == 2 and m.state == "stopped"
    check_files(folder, m)
    for camera in m.cameras.values():
        assert [s.part for s in camera.segments] == [1, 2]
        assert camera.segments[0].recovered
        (gap,) = camera.gaps
        assert gap.reason == "edge service restarted" and gap.end_utc is not None


async def test_sigterm_suspends_and_the_next_start_resumes(
        edge_process: Callable[..., EdgeProcess], http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    edge = edge_process([{"name": "p", "url": "test:p?size=320x240&fps=15"}])
    auth = await pair(http, edge.port)
    rec = await api(http, "POST", edge.port, "/recording", auth, {"started_by": "ann"})
    folder = tmp_path / "rec" / rec["recording_id"]
    await eventually(lambda: parts_opened(folder, 1), 15)
    t0 = time.monotonic()
    assert edge.signal(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 3.0
    m = load(folder / MANIFEST_NAME)
    assert m.state == "recording" and m.suspended_utc is not None
    assert all(s.complete for s in m.cameras["p"].segments)
    edge.start()
    await eventually(lambda: parts_opened(folder, 2), 10)
    await api(http, "POST", edge.port, "/recording/stop", auth, {"stopped_by": "ann"})
    check_files(folder, load(folder / MANIFEST_NAME))


async def test_announced_over_mdns_with_its_state(
        edge_process: Callable[..., EdgeProcess], http: aiohttp.ClientSession) -> None:
    problem = loopback_multicast_problem()
    if problem:
        pytest.skip(f"no multicast on the loopback interface: {problem}")
    room_id = unique_room_id()
    async with Browser(["127.0.0.1"]) as browser:
        edge = edge_process([{"name": "p", "url": "test:p?size=320x240&fps=15"}],
                            room={"id": room_id, "name": "Lab one"},
                            announce={"enabled": True, "interfaces": ["127.0.0.1"]})
        found = await next_event(browser, room_id, timeout=15)
        room = found.room
        assert (room.name, room.port, room.api, room.state) == ("Lab one", edge.port, P, "idle")
        auth = await pair(http, edge.port)
        await api(http, "POST", edge.port, "/recording", auth, {"started_by": "ann"})
        await next_event(browser, room_id, lambda e: e.room.state == "recording", timeout=15)
        edge.signal(signal.SIGTERM)
        await next_event(browser, room_id, lambda e: e.kind == "removed", timeout=15)


def test_validate_config_names_every_problem(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(render())
    ok = subprocess.run([sys.executable, "-m", "edge", "--config", str(good),
                         "--validate-config"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(render().replace('reserve_mb = 512', 'reserve_mb = -5')
                   .replace("[api]", "[api]\nsurprise = 1")
                   .replace('url = "test:back', 'url = "rtsp://u:secret@cam/x?x=test:back'))
    res = subprocess.run([sys.executable, "-m", "edge", "--config", str(bad),
                          "--validate-config"], capture_output=True, text=True, check=False)
    assert res.returncode == 2
    for needle in ("storage.reserve_mb", "api.surprise", "cameras.1: put credentials"):
        assert needle in res.stderr
    assert "secret" not in res.stderr


def test_sample_config_documents_every_key() -> None:
    sample = render()
    data = tomllib.loads(sample)
    for section, info in EdgeConfig.model_fields.items():
        assert section in data
        model = info.annotation
        fields = getattr(model, "model_fields", None)
        if fields is None:  # the list of cameras
            fields = CameraConfig.model_fields
        for key, finfo in fields.items():
            assert re.search(rf"^#? ?{key} =", sample, re.M), f"{section}.{key} missing"
            assert finfo.description, f"{section}.{key} has no description"
    shipped = Path(__file__).resolve().parents[2] / "edge" / "data" / "roomrec-edge.toml"
    assert shipped.read_text() == sample, "edge/data/roomrec-edge.toml is out of date"


def test_panel_test_command_runs_with_the_simulated_pins(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(toml(config_for(tmp_path, [{"name": "p", "url": "test:p"}])))
    res = subprocess.run([sys.executable, "-m", "edge", "--config", str(cfg), "panel-test",
                          "--seconds", "1"], capture_output=True, text=True, check=False,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert "solid" in res.stdout.lower()
