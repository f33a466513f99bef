"""The rooms the coordinator knows: found over mDNS or added by address, paired,
followed by heartbeats, and never commanded when their identity does not match.

A room is keyed by its stable id, never by its address: rediscovery (a new DHCP lease)
updates the stored address. mDNS does not cross subnets, so a room can also be added by
address. A room whose box answers with another id than the one it was paired as is
flagged and left alone until an administrator pairs it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from coordinator.edges import EdgeClient, EdgeError, EdgeRefused, IdentityMismatch
from edge import contract as c
from edge.mdns import Browser, Interfaces

log = logging.getLogger(__name__)

LocationStatus = str  # "idle", "recording", "locked", "offline", "error"


@dataclass
class Location:
    """`name` is what the room calls itself (its status, its announcement);
    `given_name` the name given on the coordinator, which wins (`display_name`)."""

    room_id: str
    name: str
    host: str
    port: int
    api: str = c.API_PREFIX
    version: str | None = None
    secret: str | None = field(default=None, repr=False)
    flagged: str | None = None
    status: c.Status | None = None
    last_seen: float = 0.0          # monotonic
    online: bool = False
    given_name: str | None = None

    @property
    def paired(self) -> bool:
        return self.secret is not None

    @property
    def display_name(self) -> str:
        return self.given_name or self.name or self.room_id


@dataclass(frozen=True)
class Discovered:
    """A room announced over mDNS and not paired yet."""

    room_id: str
    name: str
    host: str
    port: int
    api: str
    version: str
    state: str


Persist = Callable[[Location], Awaitable[None]]


class Locations:
    """The live view of every room; persistence is passed in."""

    def __init__(self, http: aiohttp.ClientSession, coordinator_id: str, persist: Persist,
                 heartbeat_s: float = 2.0, offline_after_s: float = 6.0,
                 interfaces: Interfaces | None = None, discover: bool = True,
                 on_change: Callable[[Location], None] | None = None) -> None:
        self._http = http
        self._coordinator_id = coordinator_id
        self._persist = persist
        self._heartbeat_s = heartbeat_s
        self._offline_after = offline_after_s
        self._interfaces = interfaces
        self._discover = discover
        self._on_change = on_change or (lambda _: None)
        self.known: dict[str, Location] = {}
        self.discovered: dict[str, Discovered] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._beats: dict[str, asyncio.Task[None]] = {}

    def client(self, loc: Location, timeout_s: float = 5.0) -> EdgeClient:
        return EdgeClient(self._http, loc.host, loc.port, loc.room_id, loc.secret, loc.api,
                          timeout_s)

    async def start(self, stored: list[Location]) -> None:
        for loc in stored:
            self.known[loc.room_id] = loc
            if loc.paired and not loc.flagged:
                self._beat(loc)
        if self._discover:
            self._tasks.append(asyncio.create_task(self._browse(), name="coordinator-mdns"))

    async def close(self) -> None:
        tasks = self._tasks + list(self._beats.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _beat(self, loc: Location) -> None:
        old = self._beats.pop(loc.room_id, None)
        if old is not None:
            old.cancel()
        self._beats[loc.room_id] = asyncio.create_task(self._heartbeat(loc),
                                                       name=f"heartbeat-{loc.room_id}")

    # --- discovery ---

    async def _browse(self) -> None:
        while True:
            try:
                browser = Browser() if self._interfaces is None else Browser(self._interfaces)
                async with browser:
                    async for ev in browser:
                        await self._seen(ev.kind, ev.room.room_id, ev.room.name,
                                         (ev.room.addresses or [ev.room.host])[0],
                                         ev.room.port, ev.room.api, ev.room.version,
                                         ev.room.state)
            except Exception:
                log.exception("mDNS browsing failed; starting again")
            await asyncio.sleep(5)

    async def _seen(self, kind: str, room_id: str, name: str, host: str, port: int, api: str,
                    version: str, state: str) -> None:
        if kind == "removed":
            self.discovered.pop(room_id, None)
            return
        loc = self.known.get(room_id)
        if loc is None:
            self.discovered[room_id] = Discovered(room_id, name, host, port, api, version,
                                                  state)
            return
        if (loc.host, loc.port) != (host, port):
            log.info("room %s moved from %s:%d to %s:%d", room_id, loc.host, loc.port, host,
                     port)
            loc.host, loc.port = host, port
            await self._persist(loc)
            if loc.paired and not loc.flagged:
                self._beat(loc)

    # --- pairing ---

    async def pair(self, host: str, port: int, code: str | None, api: str = c.API_PREFIX,
                   expect_room: str | None = None) -> Location:
        """Pair the box at host:port (its room id is learnt from it, or checked)."""
        health = await EdgeClient(self._http, host, port, expect_room or "", None,
                                  api).identify()
        if expect_room is not None and health.room_id != expect_room:
            raise IdentityMismatch(f"expected room {expect_room!r} at {host}:{port}, found "
                                   f"{health.room_id!r}")
        client = EdgeClient(self._http, host, port, health.room_id, None, api, timeout_s=75)
        resp = await client.pair(self._coordinator_id, code)
        loc = self.known.get(health.room_id) or Location(health.room_id, health.room_id, host,
                                                         port, api)
        loc.host, loc.port, loc.api = host, port, api
        loc.secret = resp.secret
        loc.flagged = None
        loc.version = health.version
        status = await self.client(loc).status()
        loc.name = status.name
        loc.status = status
        loc.online = True
        loc.last_seen = time.monotonic()
        self.known[loc.room_id] = loc
        self.discovered.pop(loc.room_id, None)
        await self._persist(loc)
        self._beat(loc)
        self._on_change(loc)
        return loc

    # --- heartbeats ---

    async def _heartbeat(self, loc: Location) -> None:
        while True:
            await self.refresh(loc)
            if loc.flagged:
                return  # never commanded again until paired again
            await asyncio.sleep(self._heartbeat_s)

    async def refresh(self, loc: Location) -> c.Status | None:
        """Ask the room for its status now; updates online/offline and flags."""
        was = (loc.online, loc.status.state if loc.status else None,
               loc.status.recording.recording_id if loc.status and loc.status.recording else None)
        client = self.client(loc, timeout_s=max(1.0, self._heartbeat_s))
        try:
            try:
                status = await client.status()
            except EdgeRefused as e:
                if e.status != 401:
                    raise
                # Our secret is refused: another box answers here, or this one was reset.
                found = (await client.identify()).room_id
                if found != loc.room_id:
                    raise IdentityMismatch(f"expected room {loc.room_id!r} at {loc.host}:"
                                           f"{loc.port}, found {found!r}") from None
                raise IdentityMismatch(f"room {loc.room_id} no longer accepts this "
                                       "coordinator's pairing: pair it again") from None
        except IdentityMismatch as e:
            log.error("room %s flagged: %s", loc.room_id, e)
            loc.flagged = str(e)
            loc.online = False
            await self._persist(loc)
            self._on_change(loc)
            return None
        except EdgeError:
            if loc.online and time.monotonic() - loc.last_seen > self._offline_after:
                loc.online = False
                self._on_change(loc)
            return None
        loc.status = status
        loc.last_seen = time.monotonic()
        loc.online = True
        if status.name != loc.name:
            loc.name = status.name
            await self._persist(loc)
        now = (loc.online, status.state,
               status.recording.recording_id if status.recording else None)
        if now != was:
            self._on_change(loc)
        return status

    async def refresh_all(self) -> None:
        """Every paired room's true state now (after a restart: reconcile)."""
        locs = [loc for loc in self.known.values() if loc.paired and not loc.flagged]
        with contextlib.suppress(Exception):
            await asyncio.gather(*(self.refresh(loc) for loc in locs))
