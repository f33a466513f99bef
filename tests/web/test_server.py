"""The web page's server side without a browser: login redirects, safe targets, headers,
and the static files it serves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from coordinator.api import build
from coordinator.config import parse
from coordinator.db import Database
from coordinator.service import Coordinator
from coordinator.web import STATIC

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> TestClient[Any, Any]:
    cfg = parse({"database": {"path": str(tmp_path / "c.sqlite3")},
                 "storage": {"path": str(tmp_path / "central")},
                 "api": {"secure_cookies": False}, "discovery": {"enabled": False},
                 "first_admin": {"username": "admin", "password": "admin-password-1"}})
    db = await Database(cfg.database.path).open()
    http = aiohttp.ClientSession()
    co = Coordinator(cfg, db, http)
    await co.start()
    app, _ = build(co)

    async def close(_: Any) -> None:
        await co.close()
        await http.close()
        await db.close()

    app.on_cleanup.append(close)
    return await aiohttp_client(app)


async def login(client: TestClient[Any, Any]) -> None:
    r = await client.post("/api/v1/login", json={"username": "admin",
                                                 "password": "admin-password-1"})
    assert r.status == 200


@pytest.mark.parametrize("page", ["/locations", "/locations/room-1", "/sessions",
                                  "/sessions/abc", "/admin"])
async def test_pages_need_a_login_and_come_back(client: TestClient[Any, Any],
                                                page: str) -> None:
    r = await client.get(page, allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == f"/login?next={page}"
    await login(client)
    r = await client.get(page, allow_redirects=False)
    assert r.status == 200
    html = await r.text()
    assert "Administrator" in html  # who is logged in
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "<script>" not in html  # no inline script: the policy would block it


@pytest.mark.parametrize(("asked", "target"), [
    ("/sessions", "/sessions"), ("//evil.example/x", "/locations"),
    ("https://evil.example/", "/locations"), ("/\\evil.example", "/locations"),
    ("", "/locations")])
async def test_login_only_returns_to_this_site(client: TestClient[Any, Any], asked: str,
                                               target: str) -> None:
    r = await client.get("/login", params={"next": asked})
    assert r.status == 200
    assert f'"next": "{target}"' in await r.text()


async def test_boot_data_is_escaped(client: TestClient[Any, Any]) -> None:
    """A user name is data in a script tag: it cannot end the tag."""
    await login(client)
    r = await client.post("/api/v1/users", json={
        "username": "eve", "display_name": "</script><script>alert(1)</script>",
        "role": "trainer", "password": "eve-password-1"})
    assert r.status == 201
    await client.post("/api/v1/logout")
    r = await client.post("/api/v1/login", json={"username": "eve",
                                                 "password": "eve-password-1"})
    html = await (await client.get("/locations")).text()
    assert "<script>alert(1)" not in html
    assert "&lt;/script&gt;" in html  # in the header, as text


async def test_static_files_are_served(client: TestClient[Any, Any]) -> None:
    names = sorted(p.name for p in STATIC.iterdir())
    assert {"app.css", "app.js", "locations.js", "session.js"} <= set(names)
    for name in names:
        r = await client.get(f"/static/{name}")
        assert r.status == 200, name
        assert await r.read() == (STATIC / name).read_bytes()
    assert (await client.get("/static/../pages.py")).status in (403, 404)
    assert (await client.get("/")).url.path == "/login"
