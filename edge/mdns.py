"""The room on the LAN: its mDNS (DNS-SD) announcement, and a browser that finds rooms.

`Announcer` is the edge's side: one `SERVICE_TYPE` instance per room, whose TXT record
carries the room's id, name, API prefix, software version and state. `Browser` is the
client's side (the coordinator, tools): it follows every announced room and yields
found / updated / removed events.

The instance name is only a label (the room name plus a short form of the room id);
clients identify a room by its TXT id.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from zeroconf import (
    InterfaceChoice,
    RecordUpdate,
    RecordUpdateListener,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf._dns import DNSText  # zeroconf re-exports it, but not in __all__
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from edge.contract import (
    API_PREFIX,
    ROOM_ID_PATTERN,
    SERVICE_TYPE,
    TXT_API,
    TXT_ID,
    TXT_NAME,
    TXT_STATE,
    TXT_VERSION,
    RoomState,
)

log = logging.getLogger(__name__)

Interfaces = Sequence[str] | InterfaceChoice

LABEL_MAX = 63            # bytes of one DNS label (RFC 6763 §4.1.1: instance names)
RENAME_RESERVE = 3        # zeroconf appends "-2", "-3"... to a conflicting instance name
TXT_VALUE_MAX = 200       # bytes of a TXT value; a TXT string holds key=value in 255
SHORT_ID_MAX = 12


def _clip_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never inside a character."""
    return text.encode()[:limit].decode(errors="ignore")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:4]


def short_id(room_id: str) -> str:
    """The room id as it appears in the instance name: as it is when short and free of
    dots, else cut, with a hash of the whole id."""
    if len(room_id) <= SHORT_ID_MAX and "." not in room_id:
        return room_id
    return f"{room_id.replace('.', '-')[:SHORT_ID_MAX - 5]}-{_digest(room_id)}"


def instance_label(room_id: str, name: str) -> str:
    """The DNS-SD instance label, e.g. ``Room 101 (r101)``: no dots, no control characters,
    at most 63 bytes with room left for zeroconf's conflict suffix."""
    tail = f" ({short_id(room_id)})"
    clean = " ".join(re.sub(r"[\x00-\x1f\x7f.]", " ", name).split()) or "roomrec"
    head = _clip_utf8(clean, LABEL_MAX - RENAME_RESERVE - len(tail.encode())).rstrip()
    return head + tail


def host_name(room_id: str) -> str:
    """The SRV target, ``roomrec-<id>.local.``: a valid host label derived from the id, with
    a hash when the id had to be changed (so ``a.b`` and ``a_b`` stay distinct)."""
    clean = re.sub(r"[^a-z0-9-]+", "-", room_id.lower()).strip("-")[:48]
    if clean != room_id.lower():
        clean = f"{clean}-{_digest(room_id)}"
    return f"roomrec-{clean}.local."


class Announcer:
    """Announces one room. `start` it once, `update` it on every change, `close` it to
    withdraw the announcement (goodbye packets) and release the sockets.

    Calls are serialized; each returns once its packets have gone out (about half a
    second for start's announcements and update's re-announcements, a few seconds
    for start's probing)."""

    def __init__(self, room_id: str, name: str, port: int, version: str,
                 addresses: Sequence[str],
                 interfaces: Interfaces = InterfaceChoice.All) -> None:
        if not re.fullmatch(ROOM_ID_PATTERN, room_id):
            raise ValueError(f"room id {room_id!r} does not match {ROOM_ID_PATTERN}")
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        if not addresses:
            raise ValueError("a room needs at least one address to announce")
        for address in addresses:
            ipaddress.ip_address(address)    # a ValueError names the bad one
        self.room_id = room_id
        self.port = port
        self.version = version
        self.addresses = list(addresses)
        self._interfaces = interfaces
        self._name = name
        self._state: RoomState | None = None
        self._label = instance_label(room_id, name)
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._lock = asyncio.Lock()

    @property
    def service_name(self) -> str | None:
        """The full instance name once announced; after a name conflict, the new one."""
        return self._info.name if self._info is not None else None

    def _service_info(self, name: str) -> AsyncServiceInfo:
        assert self._state is not None
        return AsyncServiceInfo(
            SERVICE_TYPE, name, port=self.port, server=host_name(self.room_id),
            parsed_addresses=self.addresses,
            properties={
                TXT_ID: self.room_id,
                TXT_NAME: _clip_utf8(self._name, TXT_VALUE_MAX),
                TXT_API: API_PREFIX,
                TXT_VERSION: _clip_utf8(self.version, TXT_VALUE_MAX),
                TXT_STATE: self._state,
            })

    async def start(self, state: RoomState) -> None:
        async with self._lock:
            if self._zc is not None:
                raise RuntimeError("the announcer was already started")
            self._state = state
            info = self._service_info(f"{self._label}.{SERVICE_TYPE}")
            zc = self._zc = AsyncZeroconf(interfaces=self._interfaces)
            try:
                await (await zc.async_register_service(info, allow_name_change=True))
            except BaseException:
                self._zc = None
                await zc.async_close()
                raise
            self._info = info
            if info.name != f"{self._label}.{SERVICE_TYPE}":
                log.warning("mDNS name %r is taken; announcing as %r", self._label,
                            info.get_name())
            log.info("announced %s on port %d as %r", self.room_id, self.port, info.get_name())

    async def update(self, state: RoomState, name: str | None = None) -> bool:
        """Announce a new state (and display name); returns whether anything was sent.

        The instance label keeps the name it was started with: clients read TXT name.
        Before `start` and after `close` nothing is sent (a late state change at shutdown
        is not an error)."""
        async with self._lock:
            new_name = self._name if name is None else name
            if (state, new_name) == (self._state, self._name):
                return False
            self._state, self._name = state, new_name
            if self._zc is None or self._info is None:
                return False
            info = self._service_info(self._info.name)
            await (await self._zc.async_update_service(info))
            self._info = info
            return True

    async def close(self) -> None:
        async with self._lock:
            zc, info = self._zc, self._info
            self._zc = self._info = None
            if zc is None:
                return
            try:
                if info is not None:
                    await (await zc.async_unregister_service(info))
            finally:
                await zc.async_close()


# --- finding rooms ---


@dataclass(frozen=True)
class Room:
    """A room as announced. `instance` (the full DNS-SD name) is the key while it is on the
    network; `room_id` is the room's identity; addresses are only a hint."""

    instance: str
    room_id: str
    name: str
    state: str          # a RoomState from a well-behaved edge; not checked here
    version: str
    api: str
    host: str
    port: int
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class RoomEvent:
    kind: Literal["found", "updated", "removed"]
    room: Room          # for "removed", the room as last seen


def parse_txt(text: bytes) -> dict[str, str]:
    """TXT record data (length-prefixed strings) as a dict; keys are case-insensitive and
    the first occurrence of a key wins (RFC 6763 §6.4); a key without "=" maps to ""."""
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        item = text[i + 1:i + 1 + text[i]]
        i += 1 + text[i]
        key, _, value = item.partition(b"=")
        if key:
            out.setdefault(key.decode(errors="replace").lower(),
                           value.decode(errors="replace"))
    return out


def _room(info: AsyncServiceInfo, text: bytes, seen: Room | None = None) -> Room | None:
    """The room that `info` (SRV, addresses) and `text` (TXT) describe, or None if it is not
    one. What the cache no longer holds (host records live two minutes) is kept from `seen`,
    the room as last seen."""
    txt = parse_txt(text)
    room_id = txt.get(TXT_ID, "")
    if not re.fullmatch(ROOM_ID_PATTERN, room_id):
        return None
    # IPv4 first; sorted, since zeroconf reorders them as records are re-received
    addresses = tuple(sorted(info.parsed_scoped_addresses(), key=lambda a: (":" in a, a)))
    host, port = info.server, info.port
    if seen is not None:
        host, port, addresses = host or seen.host, port or seen.port, addresses or seen.addresses
    if not host or not port:
        return None
    return Room(instance=info.name, room_id=room_id, name=txt.get(TXT_NAME, ""),
                state=txt.get(TXT_STATE, ""), version=txt.get(TXT_VERSION, ""),
                api=txt.get(TXT_API, ""), host=host, port=port, addresses=addresses)


class _TxtWatch(RecordUpdateListener):
    """Remembers the TXT record of each instance as last received.

    zeroconf's cache keeps the previous TXT for a second after a change, and a TXT that
    comes back (idle -> starting -> idle) within that time neither fires an update nor
    becomes the one the cache returns; the arrival order here is the truth."""

    def __init__(self, changed: Callable[[set[str]], None]) -> None:
        self.text: dict[str, bytes] = {}
        self._changed = changed
        self._pending: set[str] = set()

    def async_update_records(self, zc: Zeroconf, now: float,
                             records: list[RecordUpdate]) -> None:
        for update in records:
            rec = update.new
            if (isinstance(rec, DNSText) and rec.key.endswith(SERVICE_TYPE.lower())
                    and not rec.is_expired(now) and self.text.get(rec.key) != rec.text):
                self.text[rec.key] = rec.text
                self._pending.add(rec.key)

    def async_update_records_complete(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, set()
            self._changed(pending)


class Browser:
    """Follows every announced room: iterate it (``async for event in browser``) for
    found / updated / removed events; iteration ends when the browser is closed. Use it
    as an async context manager, or call `start` and `close` (once each).

    Rooms are keyed by instance name. An instance that comes back with another room id
    (another box took the name) is reported as removed, then found."""

    def __init__(self, interfaces: Interfaces = InterfaceChoice.All,
                 resolve_timeout_s: float = 3.0) -> None:
        self._interfaces = interfaces
        self._resolve_timeout_s = resolve_timeout_s
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._txt = _TxtWatch(self._on_txt)
        self._rooms: dict[str, Room] = {}            # by lower-cased instance name
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._events: asyncio.Queue[RoomEvent | None] = asyncio.Queue()
        self._closed = False

    @property
    def rooms(self) -> list[Room]:
        """The rooms found so far and not removed."""
        return list(self._rooms.values())

    async def start(self) -> None:
        if self._zc is not None or self._closed:
            raise RuntimeError("a browser starts once")
        self._zc = AsyncZeroconf(interfaces=self._interfaces)
        self._zc.zeroconf.async_add_listener(self._txt, None)
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE,
                                            handlers=[self._on_change])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        zc, browser = self._zc, self._browser
        self._zc = self._browser = None
        tasks = list(self._resolving.values())
        self._resolving.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if browser is not None:
            await browser.async_cancel()
        if zc is not None:
            zc.zeroconf.async_remove_listener(self._txt)
            await zc.async_close()
        self._events.put_nowait(None)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RoomEvent:
        event = await self._events.get()
        if event is None:
            self._events.put_nowait(None)    # every later call ends too
            raise StopAsyncIteration
        return event

    # --- zeroconf's callbacks, on the event loop ---

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        key = name.lower()
        if state_change is ServiceStateChange.Removed:
            task = self._resolving.pop(key, None)
            if task is not None:
                task.cancel()
            self._txt.text.pop(key, None)
            room = self._rooms.pop(key, None)
            if room is not None:
                self._events.put_nowait(RoomEvent("removed", room))
        elif key in self._rooms:
            self._refresh(key, name)
        elif key not in self._resolving:
            task = asyncio.create_task(self._resolve(key, name), name=f"mdns-resolve {name}")
            self._resolving[key] = task

    def _on_txt(self, keys: set[str]) -> None:
        for key in keys:
            room = self._rooms.get(key)
            if room is not None:
                self._refresh(key, room.instance)

    def _info_from_cache(self, name: str) -> AsyncServiceInfo | None:
        if self._zc is None:
            return None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        info.load_from_cache(self._zc.zeroconf)
        return info

    def _refresh(self, key: str, name: str) -> None:
        info = self._info_from_cache(name)
        seen = self._rooms.get(key)
        if info is None or seen is None:
            return
        room = _room(info, self._txt.text.get(key, info.text), seen)
        if room is None or room == seen:
            return
        self._rooms[key] = room
        if room.room_id == seen.room_id:
            self._events.put_nowait(RoomEvent("updated", room))
        else:
            self._events.put_nowait(RoomEvent("removed", seen))
            self._events.put_nowait(RoomEvent("found", room))

    async def _resolve(self, key: str, name: str) -> None:
        try:
            assert self._zc is not None
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if not await info.async_request(self._zc.zeroconf,
                                            self._resolve_timeout_s * 1000):
                log.info("mDNS: %r did not answer in %.1f s", name, self._resolve_timeout_s)
                return
            room = _room(info, self._txt.text.get(key, info.text))
            if room is None:
                log.warning("mDNS: %r is not a room (TXT %r)", name, info.text)
                return
            self._rooms[key] = room
            self._events.put_nowait(RoomEvent("found", room))
        finally:
            if self._resolving.get(key) is asyncio.current_task():
                del self._resolving[key]
