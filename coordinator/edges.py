"""The one typed client of a room box's API. The coordinator talks to edges only here.

Every call checks the room's identity: a box that answers with another room id than
the one it was paired as is refused (`IdentityMismatch`) and must never be commanded.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ValidationError

from edge import contract as c

M = TypeVar("M", bound=BaseModel)

SEGMENT_CHUNK: Final = 64 * 1024
"""Bytes of a segment file passed on at a time: a file is never held whole in memory."""

SEGMENT_READ_S: Final = 30.0
"""How long a segment download may wait for the next bytes from the room."""

SEGMENT_HEADERS: Final = ("Content-Range", "Content-Length", "Accept-Ranges", "ETag",
                          "Last-Modified", "X-Content-SHA256", "Repr-Digest")
"""What a segment's response from the room says that a client of ours needs too."""


class EdgeError(Exception):
    """Base of what talking to a room box can raise."""


class EdgeUnavailable(EdgeError):
    """The box did not answer (offline, network cut, timeout)."""


class EdgeRefused(EdgeError):
    """The box answered with an error status."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


class IdentityMismatch(EdgeError):
    """The box at this address is not the room it was paired as."""


def _refused(status: int, text: str) -> EdgeRefused:
    try:
        err = c.ErrorBody.model_validate_json(text)
    except ValidationError:
        return EdgeRefused(status, "http_error", text[:200])
    return EdgeRefused(status, err.error, err.detail)


@dataclass(frozen=True)
class SegmentStream:
    """A segment file as the room sends it: status 200, 206 (a Range) or 416 (a Range
    outside the file), the headers of `SEGMENT_HEADERS` it sent, and the body in chunks
    of at most `SEGMENT_CHUNK` bytes."""

    status: int
    headers: Mapping[str, str]
    chunks: AsyncGenerator[bytes, None]


class EdgeClient:
    def __init__(self, http: aiohttp.ClientSession, host: str, port: int, room_id: str,
                 secret: str | None = None, api: str = c.API_PREFIX,
                 timeout_s: float = 5.0) -> None:
        self._http = http
        self.base = f"http://{_host(host)}:{port}{api}"
        self.room_id = room_id
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._secret}"} if self._secret else {}

    async def _call(self, method: str, path: str, body: BaseModel | None = None,
                    timeout: aiohttp.ClientTimeout | None = None) -> Any:
        try:
            async with self._http.request(
                    method, self.base + path, headers=self._headers(),
                    data=body.model_dump_json() if body is not None else None,
                    timeout=timeout or self._timeout) as r:
                text = await r.text()
                if r.status >= 400:
                    raise _refused(r.status, text)
                return json.loads(text) if text else None
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise EdgeUnavailable(f"{self.base}: {type(e).__name__}: {e}") from e

    async def _get(self, path: str, model: type[M]) -> M:
        return model.model_validate(await self._call("GET", path))

    def _check(self, room_id: str) -> None:
        if room_id != self.room_id:
            raise IdentityMismatch(f"expected room {self.room_id!r} at {self.base}, "
                                   f"found {room_id!r}")

    async def identify(self) -> c.Health:
        """Who answers at this address (no identity check: for pairing)."""
        return await self._get("/health", c.Health)

    async def health(self) -> c.Health:
        h = await self._get("/health", c.Health)
        self._check(h.room_id)
        return h

    async def status(self) -> c.Status:
        s = await self._get("/status", c.Status)
        self._check(s.room_id)
        return s

    async def pair(self, coordinator_id: str, code: str | None,
                   wait_s: float = 70.0) -> c.PairResponse:
        body = c.PairRequest(coordinator_id=coordinator_id, code=code)
        raw = await self._call("POST", "/pair", body, aiohttp.ClientTimeout(total=wait_s))
        resp = c.PairResponse.model_validate(raw)
        self._check(resp.room_id)
        self._secret = resp.secret
        return resp

    async def start(self, req: c.StartRequest) -> c.CurrentRecording:
        return c.CurrentRecording.model_validate(await self._call("POST", "/recording", req))

    async def stop(self, req: c.StopRequest) -> c.RecordingSummary:
        raw = await self._call("POST", "/recording/stop", req)
        return c.RecordingSummary.model_validate(raw)

    async def recordings(self) -> c.RecordingList:
        return await self._get("/recordings", c.RecordingList)

    async def manifest(self, recording_id: str) -> c.Manifest:
        m = await self._get(f"/recordings/{recording_id}", c.Manifest)
        if m.room_id is not None:
            self._check(m.room_id)
        return m

    async def release(self, recording_id: str, segment_ids: list[str]) -> c.ReleaseResult:
        raw = await self._call("POST", f"/recordings/{recording_id}/release",
                               c.ReleaseRequest(segment_ids=segment_ids))
        return c.ReleaseResult.model_validate(raw)

    async def snapshot(self, camera: str) -> bytes:
        try:
            async with self._http.get(f"{self.base}/cameras/{quote(camera, safe='')}/snapshot",
                                      headers=self._headers(), timeout=self._timeout) as r:
                if r.status >= 400:
                    raise _refused(r.status, await r.text())
                return await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise EdgeUnavailable(f"{self.base}: {e}") from e

    @contextlib.asynccontextmanager
    async def segment(self, segment_id: str, range_: str | None = None,
                      if_range: str | None = None) -> AsyncIterator[SegmentStream]:
        """A segment file, streamed: ``async with client.segment(id, "bytes=0-") as s:``
        then ``async for chunk in s.chunks``. `range_` and `if_range` are sent as the
        Range and If-Range headers. `EdgeRefused` for an error status other than 416;
        `EdgeUnavailable` if the room does not answer, or stops answering mid-file."""
        headers = self._headers()
        if range_:
            headers["Range"] = range_
        if if_range:
            headers["If-Range"] = if_range
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total,
                                        sock_read=SEGMENT_READ_S)
        url = f"{self.base}/segments/{quote(segment_id, safe='')}"
        try:
            r = await self._http.get(url, headers=headers, timeout=timeout)
            if r.status >= 400 and r.status != 416:
                try:
                    raise _refused(r.status, await r.text())
                finally:
                    r.release()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise EdgeUnavailable(f"{self.base}: {type(e).__name__}: {e}") from e
        chunks = self._chunks(r)
        try:
            yield SegmentStream(r.status, {h: r.headers[h] for h in SEGMENT_HEADERS
                                           if h in r.headers}, chunks)
        finally:
            await chunks.aclose()
            r.release()

    async def _chunks(self, r: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in r.content.iter_chunked(SEGMENT_CHUNK):
                yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise EdgeUnavailable(f"{self.base}: {type(e).__name__}: {e}") from e

    async def events(self) -> AsyncIterator[c.Event]:
        """The box's live events, until the connection ends."""
        try:
            async with self._http.get(f"{self.base}/events", headers=self._headers(),
                                      timeout=aiohttp.ClientTimeout(total=None,
                                                                    sock_read=60)) as r:
                if r.status >= 400:
                    raise EdgeRefused(r.status, "events", (await r.text())[:200])
                async for raw in r.content:
                    line = raw.decode().strip()
                    if line.startswith("data: "):
                        yield c.Event.model_validate_json(line[6:])
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise EdgeUnavailable(f"{self.base}: {e}") from e


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
