"""A coordinator and its rooms for tests: real room boxes (edge services with synthetic
cameras, real HTTP) and a coordinator driven through its API with aiohttp's test client.
The fixtures that make them are in tests/coordinator/conftest.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from coordinator.service import Coordinator
from edge.gpio.sim import SimPinFactory
from edge.service import EdgeService

P = "/api/v1"
ADMIN = ("admin", "admin-password-1")
AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


class Room:
    def __init__(self, service: EdgeService, pins: SimPinFactory, code: str) -> None:
        self.service = service
        self.pins = pins
        self.code = code

    @property
    def id(self) -> str:
        return self.service.config.room.id


RoomFactory = Callable[..., Awaitable[Room]]


class Central:
    def __init__(self, co: Coordinator, client: TestClient[Any, Any]) -> None:
        self.co = co
        self.client = client

    async def login(self, username: str, password: str) -> dict[str, str]:
        r = await self.client.post(f"{P}/login", json={"username": username,
                                                       "password": password})
        assert r.status == 200, await r.text()
        return {"Authorization": f"Bearer {(await r.json())['token']}"}

    async def call(self, method: str, path: str, auth: dict[str, str],
                   body: Any = None, status: int = 200) -> Any:
        r = await self.client.request(method, f"{P}{path}", json=body, headers=auth)
        text = await r.text()
        assert r.status == status, f"{method} {path}: {r.status} {text}"
        return json.loads(text) if text and r.content_type == "application/json" else text

    async def add_user(self, admin: dict[str, str], username: str, role: str) -> dict[str, str]:
        await self.call("POST", "/users", admin, {"username": username, "display_name": username,
                                                  "role": role, "password": f"{username}-pw-1"},
                        201)
        return await self.login(username, f"{username}-pw-1")

    async def pair(self, admin: dict[str, str], room: Room) -> None:
        port = room.service.port
        await self.call("POST", "/locations/pair", admin,
                        {"host": "127.0.0.1", "port": port, "code": room.code}, 201)


CentralFactory = Callable[..., Awaitable[Central]]


def recording(room: Room) -> Callable[[], bool]:
    return lambda: room.service.room.recording is not None


async def wait_status(central: Central, auth: dict[str, str], room_id: str,
                      status: str, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            locs = (await central.call("GET", "/locations", auth))["locations"]
            found = [loc for loc in locs if loc["room_id"] == room_id]
            if found and found[0]["status"] == status:
                loc: dict[str, Any] = found[0]
                return loc
            await asyncio.sleep(0.1)
