"""The web page in a real browser: Debian's Chromium driven by Playwright for Python.

Playwright is given Chromium's executable path and never downloads a browser of its
own. The coordinator runs in the test's event loop behind a real TCP port, with real
room boxes (edge services) recording real RTSP test cameras; the rooms' GPIO pins are
the only fake (simulated pins).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from coordinator.api import build
from coordinator.config import parse as parse_coordinator
from coordinator.db import Database
from coordinator.service import Coordinator
from edge.config import parse as parse_edge
from edge.gpio.sim import SimPinFactory
from edge.service import EdgeService
from tests.support.camera import RtspCamera
from tests.support.mdns import unique_room_id

CHROMIUM = "/usr/bin/chromium"
# Headless, and nothing that reaches for the Internet (the test machine has none).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 "--autoplay-policy=no-user-gesture-required"]
ADMIN = ("admin", "admin-password-1")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


class Site:
    """The coordinator with its web page on a real port, and the rooms it knows."""

    def __init__(self, co: Coordinator, client: TestClient[Any, Any],
                 rooms: list[EdgeService]) -> None:
        self.co = co
        self.client = client
        self.rooms = rooms
        self.page_errors: list[str] = []  # uncaught script errors of every page
        self.contexts: list[BrowserContext] = []

    @property
    def base(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def api(self, method: str, path: str, auth: tuple[str, str] = ADMIN,
                  body: Any = None, status: int = 200) -> Any:
        r = await self.client.post("/api/v1/login",
                                   json={"username": auth[0], "password": auth[1]})
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
        r = await self.client.request(method, f"/api/v1{path}", json=body,
                                      headers={"Authorization": f"Bearer {token}"})
        assert r.status == status, f"{method} {path}: {r.status} {await r.text()}"
        return await r.json() if r.content_type == "application/json" else None

    async def add_user(self, username: str, role: str) -> tuple[str, str]:
        password = f"{username}-password-1"
        await self.api("POST", "/users", body={"username": username, "display_name":
                                               username.capitalize(), "role": role,
                                               "password": password}, status=201)
        return username, password

    async def login(self, browser: Browser, user: tuple[str, str] = ADMIN,
                    shot: str | None = None) -> tuple[BrowserContext, Page]:
        """A new browser context (its own cookies) logged in through the login form."""
        ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
        self.contexts.append(ctx)
        page = await ctx.new_page()
        page.on("pageerror", lambda e: self.page_errors.append(f"{user[0]}: {e}"))
        await page.goto(f"{self.base}/locations")
        await page.wait_for_url("**/login?next=/locations")
        await page.fill("#username", user[0])
        await page.fill("#password", user[1])
        if shot:
            await screenshot(page, shot)
        await page.click("button[type=submit]")
        await page.wait_for_url(lambda url: urlsplit(url).path == "/locations")
        await expect(page.locator("[data-testid=who]")).to_be_visible()
        return ctx, page


async def screenshot(page: Page, name: str) -> None:
    """A picture of the page for the README (docs/screenshots), taken by the test run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png")


SiteFactory = Callable[..., Awaitable[Site]]


@pytest.fixture
async def make_site(tmp_path: Path, aiohttp_client: AiohttpClient,
                    rtsp_camera: Callable[..., RtspCamera]) -> AsyncIterator[SiteFactory]:
    """make_site(["Sim room 1", "Sim room 2"]): paired rooms, one RTSP camera each."""
    services: list[EdgeService] = []
    made: list[tuple[Coordinator, Database, aiohttp.ClientSession]] = []
    sites: list[Site] = []

    async def make(room_names: list[str], cameras_per_room: int = 1) -> Site:
        rooms = []
        for name in room_names:
            rid = unique_room_id()
            cams = [rtsp_camera(width=320, height=240, fps=15, keyint=15)
                    for _ in range(cameras_per_room)]
            cfg = parse_edge({
                "room": {"id": rid, "name": name},
                "cameras": [{"name": f"cam{i + 1}", "url": cam.url}
                            for i, cam in enumerate(cams)],
                "storage": {"path": str(tmp_path / rid / "rec"), "reserve_mb": 0,
                            "expected_minutes": 1},
                "api": {"host": "127.0.0.1", "port": 0},
                "pairing": {"code": f"code-{rid}", "state_dir": str(tmp_path / rid / "st")},
                "announce": {"enabled": False},
                "clock": {"require_sync": False},
            })
            service = EdgeService(cfg, SimPinFactory(), state_every_s=0.1,
                                  clock_sync=lambda: "synchronised")
            await service.start()
            services.append(service)
            rooms.append(service)
        cfg_co = parse_coordinator({
            "database": {"path": str(tmp_path / "central.sqlite3")},
            "storage": {"path": str(tmp_path / "central")},
            "api": {"secure_cookies": False},
            "discovery": {"enabled": False, "heartbeat_s": 0.3, "offline_after_s": 2},
            "sessions": {"start_lead_s": 1.0},
            "first_admin": {"username": ADMIN[0], "password": ADMIN[1]},
        })
        db = await Database(cfg_co.database.path).open()
        http = aiohttp.ClientSession()
        co = Coordinator(cfg_co, db, http)
        made.append((co, db, http))
        await co.start()
        app, _ = build(co)
        site = Site(co, await aiohttp_client(app), rooms)
        for room in rooms:
            await site.api("POST", "/locations/pair", body={
                "host": "127.0.0.1", "port": room.port,
                "code": f"code-{room.config.room.id}"}, status=201)
        sites.append(site)
        return site

    yield make
    for site in sites:  # the pages stop asking before the coordinator goes
        for ctx in site.contexts:
            await ctx.close()
    for co, db, http in made:
        await co.close()
        await http.close()
        await db.close()
    for service in services:
        await service.stop()
