"""Live events fanned out to every listener (the API's server-sent event streams).

Used by the edge and the coordinator alike. A slow listener loses its oldest events,
never blocks the service, and never makes others wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from aiohttp import web

from edge import contract as c


class EventHub:
    def __init__(self, source_id: str, backlog: int = 1000) -> None:
        self._source = source_id
        self._backlog = backlog
        self._queues: set[asyncio.Queue[c.Event]] = set()

    def subscribe(self) -> asyncio.Queue[c.Event]:
        q: asyncio.Queue[c.Event] = asyncio.Queue(maxsize=self._backlog)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[c.Event]) -> None:
        self._queues.discard(q)

    def publish(self, event_type: str, **data: object) -> None:
        ev = c.Event(type=event_type, at_utc=datetime.now(UTC), room_id=self._source,
                     data=data)
        for q in list(self._queues):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()  # a slow reader loses the oldest, not the newest
            q.put_nowait(ev)


async def stream(request: web.Request, hub: EventHub,
                 keepalive_s: float = 15.0) -> web.StreamResponse:
    """Serve the hub's events as server-sent events until the client goes away."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store"})
    await resp.prepare(request)
    q = hub.subscribe()
    try:
        await resp.write(b": roomrec events\n\n")
        while True:
            try:
                ev = await asyncio.wait_for(q.get(), keepalive_s)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            await resp.write(f"event: {ev.type}\ndata: {ev.model_dump_json()}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(q)
    return resp
