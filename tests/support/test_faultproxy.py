"""The fault proxy breaks exactly what it is told to, between a real aiohttp client and a
real aiohttp server, and passes everything else byte for byte."""

from __future__ import annotations

import asyncio
import gc
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.support.faultproxy import (
    CutAfter,
    DropResponse,
    Event,
    FaultProxy,
    FlipByte,
    Refuse,
    Stall,
)

SIZE = 2 << 20
BLOCK = 64 * 1024  # one chunk of /chunked: its size line is b"10000\r\n"


@dataclass
class Upstream:
    port: int
    data: bytes
    chunked: bytes
    peers: list[tuple[str, int]] = field(default_factory=list)  # one per request
    posts: list[int] = field(default_factory=list)  # body sizes of POST /count


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[Upstream]:
    rnd = random.Random(7)
    data, chunked = rnd.randbytes(SIZE), rnd.randbytes(4 * BLOCK)
    (tmp_path / "file").write_bytes(data)
    up = Upstream(0, data, chunked)

    @web.middleware
    async def note_peer(request: web.Request, handler: Handler) -> web.StreamResponse:
        assert request.transport is not None
        up.peers.append(request.transport.get_extra_info("peername"))
        return await handler(request)

    async def file(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(tmp_path / "file")

    async def count(request: web.Request) -> web.StreamResponse:
        up.posts.append(len(await request.read()))
        return web.json_response({"n": len(up.posts)})

    async def stream(request: web.Request) -> web.StreamResponse:
        r = web.StreamResponse()
        r.enable_chunked_encoding()
        await r.prepare(request)
        for i in range(0, len(chunked), BLOCK):
            await r.write(chunked[i:i + BLOCK])
        await r.write_eof()
        return r

    app = web.Application(middlewares=[note_peer])
    app.router.add_get("/file", file)
    app.router.add_post("/count", count)
    app.router.add_get("/chunked", stream)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up.port = runner.addresses[0][1]
    yield up
    await runner.cleanup()


@pytest.fixture
async def proxy(upstream: Upstream) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", upstream.port) as p:
        yield p


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Got:
    status: int
    body: bytes
    error: BaseException | None


async def get(http: aiohttp.ClientSession, proxy: FaultProxy, path: str,
              headers: dict[str, str] | None = None,
              timeout: aiohttp.ClientTimeout | None = None) -> Got:
    """GET through the proxy, keeping what arrived before an error."""
    status, body = 0, bytearray()
    try:
        async with http.get(f"http://127.0.0.1:{proxy.port}{path}", headers=headers,
                            timeout=timeout or aiohttp.ClientTimeout(total=10)) as r:
            status = r.status
            async for chunk in r.content.iter_any():
                body += chunk
    except aiohttp.ClientError as e:
        return Got(status, bytes(body), e)
    return Got(status, bytes(body), None)


async def post(http: aiohttp.ClientSession, proxy: FaultProxy, size: int) -> int:
    async with http.post(f"http://127.0.0.1:{proxy.port}/count", data=b"x" * size) as r:
        assert r.status == 200
        n: int = (await r.json())["n"]
        return n


def proxy_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "").startswith("FaultProxy.")]


async def test_passes_bytes_unchanged_on_one_kept_alive_connection(
        upstream: Upstream, proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    for _ in range(3):
        got = await get(http, proxy, "/file")
        assert (got.status, got.error) == (200, None)
        assert got.body == upstream.data
    assert len(upstream.peers) == 3 and len(set(upstream.peers)) == 1
    assert [e[:3] for e in proxy.log] == [("GET", "/file", None)] * 3
    assert all(e.passed > SIZE for e in proxy.log)  # the headers count too


async def test_ranges_chunked_bodies_and_request_bodies_share_a_connection(
        upstream: Upstream, proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    got = await get(http, proxy, "/file", {"Range": "bytes=1000-1999"})
    assert (got.status, got.body) == (206, upstream.data[1000:2000])
    got = await get(http, proxy, "/chunked")
    assert (got.status, got.body) == (200, upstream.chunked)
    assert await post(http, proxy, 300_000) == 1
    got = await get(http, proxy, "/file", {"Range": f"bytes={SIZE - 10}-"})
    assert (got.status, got.body) == (206, upstream.data[-10:])
    assert upstream.posts == [300_000]
    assert len(set(upstream.peers)) == 1
    assert [(e.method, e.path) for e in proxy.log] == [
        ("GET", "/file"), ("GET", "/chunked"), ("POST", "/count"), ("GET", "/file")]


async def test_many_concurrent_connections(upstream: Upstream, proxy: FaultProxy,
                                           http: aiohttp.ClientSession) -> None:
    n, part = 30, SIZE // 30
    ranges = [(i * part, (i + 1) * part - 1) for i in range(n)]
    gots = await asyncio.gather(*(get(http, proxy, "/file", {"Range": f"bytes={a}-{b}"})
                                  for a, b in ranges))
    for (a, b), got in zip(ranges, gots, strict=True):
        assert (got.status, got.error) == (206, None)
        assert got.body == upstream.data[a:b + 1]
    assert len(set(upstream.peers)) == n


async def test_cut_after_then_a_range_request_fetches_the_rest(
        upstream: Upstream, proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    cut = proxy.add(CutAfter("/file", 100_000))
    first = await get(http, proxy, "/file")
    assert first.status == 200 and first.error is not None
    assert await proxy.wait_fired(cut) == 1
    assert 0 < len(first.body) < 100_000
    assert first.body == upstream.data[:len(first.body)]
    rest = await get(http, proxy, "/file", {"Range": f"bytes={len(first.body)}-"})
    assert (rest.status, rest.error) == (206, None)
    assert first.body + rest.body == upstream.data
    assert proxy.log[0] == Event("GET", "/file", "CutAfter", 100_000)
    assert proxy.log[1].fault is None


async def test_flip_byte_changes_exactly_that_byte_of_the_body(
        upstream: Upstream, proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    offset = 1_234_567
    flip = proxy.add(FlipByte("/file", offset))
    got = await get(http, proxy, "/file")
    assert (got.status, got.error, len(got.body)) == (200, None, SIZE)
    assert got.body[offset] == upstream.data[offset] ^ 0x01
    assert got.body[:offset] == upstream.data[:offset]
    assert got.body[offset + 1:] == upstream.data[offset + 1:]
    assert proxy.fired(flip) == 1
    assert (await get(http, proxy, "/file")).body == upstream.data  # spent


async def test_flip_byte_counts_raw_bytes_of_a_chunked_body(
        upstream: Upstream, proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    proxy.add(FlipByte("/chunked", len(b"10000\r\n") + 5))
    got = await get(http, proxy, "/chunked")
    assert got.error is None
    assert [i for i, (a, b) in enumerate(zip(got.body, upstream.chunked, strict=True))
            if a != b] == [5]


async def test_drop_response_after_the_server_did_the_work(
        upstream: Upstream, proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    drop = proxy.add(DropResponse("/count", method="POST"))
    with pytest.raises(aiohttp.ClientError):
        await post(http, proxy, 5000)
    await proxy.wait_fired(drop)
    assert upstream.posts == [5000]
    assert await post(http, proxy, 5000) == 2  # the retry goes through
    assert [(e.method, e.fault, e.passed) for e in proxy.log] == [
        ("POST", "DropResponse", 0), ("POST", None, proxy.log[1].passed)]


async def test_a_rule_fires_its_times_then_is_spent(
        upstream: Upstream, proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    cut = proxy.add(CutAfter("/file", 50_000, times=2))
    errors = [(await get(http, proxy, "/file")).error is not None for _ in range(3)]
    assert errors == [True, True, False]
    assert proxy.fired(cut) == 2
    assert [e.fault for e in proxy.log] == ["CutAfter", "CutAfter", None]


async def test_rules_match_method_and_path_and_wait_for_a_long_enough_response(
        upstream: Upstream, proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    exact = proxy.add(CutAfter(re.compile(r"/file$"), 10, method="GET", times=2))
    cut = proxy.add(CutAfter("/", 50_000))
    assert await post(http, proxy, 10) == 1  # a short answer: `cut` gives its claim back
    assert (await get(http, proxy, "/file?x=1")).error is not None  # not `exact`: `cut`
    assert (await get(http, proxy, "/chunked")).error is None  # `cut` is spent
    assert (await get(http, proxy, "/file")).status == 0  # cut in the headers, twice
    assert (proxy.fired(exact), proxy.fired(cut)) == (2, 1)
    assert [(e.path, e.fault, e.passed) for e in proxy.log] == [
        ("/count", None, proxy.log[0].passed), ("/file?x=1", "CutAfter", 50_000),
        ("/chunked", None, proxy.log[2].passed), ("/file", "CutAfter", 10),
        ("/file", "CutAfter", 10)]


async def test_refuse_resets_new_connections(
        upstream: Upstream, proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    refuse = proxy.add(Refuse())  # a POST: aiohttp may retry a GET (see faultproxy)
    with pytest.raises(aiohttp.ClientError):
        await post(http, proxy, 10)
    assert proxy.fired(refuse) == 1
    assert await post(http, proxy, 10) == 1
    assert upstream.posts == [10]
    assert proxy.log[0] == Event("", "", "Refuse", 0)


async def test_stall_makes_a_read_time_out_and_close_ends_everything(
        upstream: Upstream, proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    stall = proxy.add(Stall("/file", 10_000, seconds=3600, times=2))
    got = await get(http, proxy, "/file", timeout=aiohttp.ClientTimeout(sock_read=0.3))
    assert isinstance(got.error, TimeoutError)
    assert 0 < len(got.body) < 10_000
    assert await proxy.wait_fired(stall, count=1) == 1
    assert (await get(http, proxy, "/chunked")).error is None  # leaves an idle connection
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
    head_and_body = await reader.readexactly(10_000)  # then the proxy stalls for an hour
    assert head_and_body.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(proxy_tasks()) >= 2 * 3  # at least two connections, each with two pumps
    async with asyncio.timeout(5):
        await proxy.close()
    assert proxy_tasks() == []
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    gc.collect()  # an unclosed socket or transport would warn now, failing the test
