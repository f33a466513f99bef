"""Gathering: every segment of every session onto central storage, verified, then released.

A recording exists twice until the central copy is proven identical:

1. As soon as a room's manifest lists a segment as complete (so long recordings move
   while they run), it is downloaded into the storage's staging file, resuming with
   HTTP Range after any cut, and hashed as it is written. A sha256 that differs from
   the room's manifest throws the staged bytes away and starts again.
2. Once the session has stopped (and so has its name), the staged file is committed
   under the session's folder: the storage writes it atomically and durably and checks
   what it stored. Only then is the file recorded as verified in SQLite, and only then
   is the room told that it may release the segment.
3. When every file of a stopped session is verified, a `session.json` describing it is
   written beside them and the session counts as gathered.

Every step is idempotent and its state is in SQLite or on disk (the staged bytes), so
gathering resumes after a coordinator restart, a room restart or a network cut, and
never gives up: failures are retried with a capped backoff. A room serves at most
`per_room` downloads at a time, and an optional bandwidth limit caps the total, so
gathering never starves recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from coordinator.db import Database
from coordinator.db import Session as StoredSession
from coordinator.edges import EdgeClient
from coordinator.naming import safe_filename
from coordinator.storage import Storage, StorageError
from edge import contract as c

log = logging.getLogger(__name__)

RUNNING = frozenset({"starting", "recording", "partial", "stopping"})
WRITE_BLOCK = 1 << 20  # bytes gathered in memory before one write-and-hash in a thread
SESSION_FILE = "session.json"
INCOMING = "_incoming"  # staged files waiting for their session's name (and folder)


@dataclass(frozen=True)
class GatherSettings:
    per_room: int = 2                      # downloads at a time from one room
    max_bytes_per_s: float | None = None   # all downloads together; None: no limit
    poll_s: float = 2.0                    # how often the rooms' manifests are read
    retry_min_s: float = 0.5
    retry_max_s: float = 30.0


@dataclass(frozen=True)
class FileRow:
    room_id: str
    segment_id: str
    session_id: str
    recording_id: str
    camera: str
    file: str
    size: int
    sha256: str
    index: int
    first_frame_utc: str
    duration_s: float | None
    key: str | None
    staged_utc: str | None
    verified_utc: str | None
    released_utc: str | None


@dataclass(frozen=True)
class Progress:
    state: str                 # on_rooms | gathering | verified
    gathered_bytes: int | None
    total_bytes: int | None


class Corrupt(Exception):
    """The bytes received are not the room's file (size or sha256 differ)."""


# -- where files go ----------------------------------------------------------------------


def session_folder(session: StoredSession, name: str | None) -> str:
    """`YYYY/MM/DD/<name> <YYYY-MM-DD HHMM> <short id>` in UTC; the name made safe for
    every filesystem (the display name is kept as it is elsewhere)."""
    start = session.start_at_utc.astimezone(UTC)
    title = safe_filename(name or "Unnamed session", max_bytes=120)
    short = session.id.removeprefix("b-")[:6]
    return f"{start:%Y/%m/%d}/{title} {start:%Y-%m-%d %H%M} {short}"


def file_key(folder: str, room_name: str, camera: str, file: str) -> str:
    return (f"{folder}/{safe_filename(room_name, max_bytes=100)}/"
            f"{safe_filename(camera, max_bytes=64)}/{safe_filename(PurePosixPath(file).name)}")


def incoming_key(row: FileRow) -> str:
    """Where a file waits (staged) until its session has a name."""
    return f"{INCOMING}/{row.session_id}/{row.room_id}/{row.segment_id}.mp4"


# -- SQLite ------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _row(r: sqlite3.Row) -> FileRow:
    return FileRow(r["room_id"], r["segment_id"], r["session_id"], r["recording_id"],
                   r["camera"], r["file"], r["size"], r["sha256"], r["idx"],
                   r["first_frame_utc"], r["duration_s"], r["key"], r["staged_utc"],
                   r["verified_utc"], r["released_utc"])


class GatherStore:
    """The gathering state, in the coordinator's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def unfinished(self) -> list[StoredSession]:
        """Sessions not gathered yet, oldest first (deleted ones too: their recordings
        are still kept twice until verified)."""
        ids = await self.db.read(lambda c: [r[0] for r in c.execute(
            "SELECT id FROM sessions WHERE gathered_utc IS NULL ORDER BY created_utc")])
        out = []
        for sid in ids:
            s = await self.db.get_session(sid)
            if s is not None:
                out.append(s)
        return out

    async def note(self, session_id: str, room_id: str, recording_id: str, camera: str,
                   seg: c.Segment) -> None:
        assert seg.size is not None and seg.sha256 is not None
        size, sha256 = seg.size, seg.sha256
        await self.db.run(lambda c: c.execute(
            "INSERT INTO gathered_files (room_id, segment_id, session_id, recording_id, "
            "camera, file, size, sha256, idx, first_frame_utc, duration_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (room_id, segment_id) DO UPDATE SET "
            "first_frame_utc = excluded.first_frame_utc, duration_s = excluded.duration_s",
            (room_id, seg.id, session_id, recording_id, camera, seg.file, size, sha256,
             seg.index, seg.first_frame_utc.isoformat(), seg.duration_s)))

    async def files(self, session_id: str) -> list[FileRow]:
        return await self.db.read(lambda c: [_row(r) for r in c.execute(
            "SELECT * FROM gathered_files WHERE session_id = ? ORDER BY room_id, camera, file",
            (session_id,))])

    async def file(self, room_id: str, segment_id: str) -> FileRow | None:
        def get(c: sqlite3.Connection) -> FileRow | None:
            r = c.execute("SELECT * FROM gathered_files WHERE room_id = ? AND segment_id = ?",
                          (room_id, segment_id)).fetchone()
            return _row(r) if r is not None else None

        return await self.db.read(get)

    async def mark(self, row: FileRow, **fields: object) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        await self.db.run(lambda c: c.execute(
            f"UPDATE gathered_files SET {cols} WHERE room_id = ? AND segment_id = ?",  # noqa: S608 - column names are ours
            (*fields.values(), row.room_id, row.segment_id)))

    async def failed(self, row: FileRow, error: str) -> None:
        await self.db.run(lambda c: c.execute(
            "UPDATE gathered_files SET attempts = attempts + 1, last_error = ? "
            "WHERE room_id = ? AND segment_id = ?", (error[:500], row.room_id,
                                                     row.segment_id)))

    async def folder(self, session: StoredSession) -> str:
        """The session's folder, fixed the first time a file of it is committed."""
        def get_or_set(c: sqlite3.Connection) -> str:
            r = c.execute("SELECT storage_folder, name FROM sessions WHERE id = ?",
                          (session.id,)).fetchone()
            if r["storage_folder"]:
                return str(r["storage_folder"])
            folder = session_folder(session, r["name"])
            c.execute("UPDATE sessions SET storage_folder = ? WHERE id = ?",
                      (folder, session.id))
            return folder

        return await self.db.run(get_or_set)

    async def gathered(self, session_id: str) -> None:
        await self.db.run(lambda c: c.execute(
            "UPDATE sessions SET gathered_utc = ? WHERE id = ?", (_now(), session_id)))

    async def progress(self, session_ids: list[str] | None = None) -> dict[str, Progress]:
        """Per session: bytes copied and checked on the coordinator, out of all bytes
        the rooms have listed so far."""
        def get(c: sqlite3.Connection) -> dict[str, Progress]:
            done = {r[0] for r in c.execute(
                "SELECT id FROM sessions WHERE gathered_utc IS NOT NULL")}
            out: dict[str, Progress] = {}
            for r in c.execute(
                    "SELECT session_id, SUM(size), SUM(CASE WHEN staged_utc IS NOT NULL OR "
                    "verified_utc IS NOT NULL THEN size ELSE 0 END) FROM gathered_files "
                    "GROUP BY session_id"):
                sid, total, have = r[0], int(r[1] or 0), int(r[2] or 0)
                state = "verified" if sid in done else ("gathering" if have else "on_rooms")
                out[sid] = Progress(state, have, total)
            for sid in done - out.keys():
                out[sid] = Progress("verified", 0, 0)
            return out

        found = await self.db.read(get)
        if session_ids is None:
            return found
        return {sid: found.get(sid, Progress("on_rooms", None, None)) for sid in session_ids}


# -- bandwidth ---------------------------------------------------------------------------


class RateLimit:
    """A token bucket shared by every download; `None` is no limit."""

    def __init__(self, bytes_per_s: float | None) -> None:
        self.rate = bytes_per_s
        self._tokens = 0.0
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        if self.rate is None:
            return
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)


# -- the gatherer ------------------------------------------------------------------------

ClientOf = Callable[[str], EdgeClient]   # raises (e.g. Refusal) for a room not callable now
Describe = Callable[[StoredSession], Awaitable[dict[str, Any]]]


class Gatherer:
    def __init__(self, db: Database, storage: Storage, client_of: ClientOf,
                 room_name: Callable[[str], str], describe: Describe,
                 settings: GatherSettings = GatherSettings(),
                 publish: Callable[..., None] = lambda *a, **k: None) -> None:
        self.store = GatherStore(db)
        self.storage = storage
        self._client_of = client_of
        self._room_name = room_name
        self._describe = describe
        self.settings = settings
        self._publish = publish
        self._rate = RateLimit(settings.max_bytes_per_s)
        self._rooms: dict[str, asyncio.Semaphore] = {}
        # Per file, keyed (room id, segment id): the task at work on it, with its session,
        # and when to try again after a failure, with the delay used.
        self._busy: dict[tuple[str, str], tuple[str, asyncio.Task[None]]] = {}
        self._retry: dict[tuple[str, str], tuple[float, float]] = {}
        self._wake = asyncio.Event()
        self._noted: set[tuple[str, str, datetime]] = set()  # files written down already
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gatherer")

    async def close(self) -> None:
        tasks = [t for t in [self._task, *(t for _, t in self._busy.values())] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        """Look at the rooms now (a session stopped, a room came back)."""
        self._wake.set()

    def room_back(self, room_id: str) -> None:
        """A room is reachable again: its files are tried now, not after their backoff."""
        for key in [k for k in self._retry if k[0] == room_id]:
            del self._retry[key]
        self.wake()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.pass_once()
            except Exception:
                log.exception("gathering pass failed; trying again")
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # arrives as the event is set, and close() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_s):
                    await self._wake.wait()

    async def pass_once(self) -> None:
        for session in await self.store.unfinished():
            await self._session(session)

    async def _session(self, session: StoredSession) -> None:
        final = session.state not in RUNNING
        manifests, listed = await self._listed(session)
        complete = final and listed
        rows = await self.store.files(session.id)
        release: dict[tuple[str, str], list[FileRow]] = {}
        for row in rows:
            if row.verified_utc is None:
                complete = False
                self._schedule(session, row, final)
            elif row.released_utc is None:
                release.setdefault((row.room_id, row.recording_id), []).append(row)
        for (room_id, recording_id), todo in release.items():
            await self._release(room_id, recording_id, todo)
        if complete and final and not any(self._busy_for(session.id)):
            await self._finish(session, manifests)

    async def _listed(self, session: StoredSession) -> tuple[dict[str, c.Manifest], bool]:
        """Note every complete file the session's rooms list. Also whether every file of
        the session is known: each room answered, and none is still writing one."""
        manifests: dict[str, c.Manifest] = {}
        known = True
        for sl in session.locations:
            if sl.recording_id is None:
                known = known and sl.state in ("failed", "stopped")
                continue
            try:
                m = await self._client_of(sl.room_id).manifest(sl.recording_id)
            except Exception as e:  # an offline room is asked again later
                log.debug("gathering %s: %s not readable now: %s", session.id, sl.room_id, e)
                known = False
                continue
            manifests[sl.room_id] = m
            known = known and m.state != "recording"
            for cam in m.cameras.values():
                for seg in cam.segments:
                    if seg.complete and seg.sha256 is not None and seg.size is not None:
                        noted = (sl.room_id, seg.id, seg.first_frame_utc)
                        if noted not in self._noted:  # one durable write per file, not
                            await self.store.note(session.id, sl.room_id,  # per pass
                                                  m.recording_id, cam.name, seg)
                            self._noted.add(noted)
                    elif seg.deleted_utc is None:
                        known = False
        return manifests, known

    def _busy_for(self, session_id: str) -> list[asyncio.Task[None]]:
        return [t for sid, t in self._busy.values() if sid == session_id]

    def _schedule(self, session: StoredSession, row: FileRow, final: bool) -> None:
        if row.staged_utc is not None and not final:
            return  # staged and checked: it waits for the session's name
        key = (row.room_id, row.segment_id)
        if key in self._busy:
            return
        at, _ = self._retry.get(key, (0.0, 0.0))
        if time.monotonic() < at:
            return
        task = asyncio.create_task(self._file(session, row, final),
                                   name=f"gather-{row.room_id}-{row.segment_id}")
        self._busy[key] = (row.session_id, task)
        task.add_done_callback(lambda _: self._busy.pop(key, None))

    async def _file(self, session: StoredSession, row: FileRow, final: bool) -> None:
        key = (row.room_id, row.segment_id)
        sem = self._rooms.setdefault(row.room_id, asyncio.Semaphore(self.settings.per_room))
        try:
            async with sem:
                client = self._client_of(row.room_id)
                staged = self.storage.staging(incoming_key(row))
                if row.staged_utc is None or not await _has_size(staged, row.size):
                    await self._download(client, row, staged)
                    await self.store.mark(row, staged_utc=_now())
                    self._publish("gathering", session_id=row.session_id)
                if not final:
                    return
                folder = await self.store.folder(session)
                dest = file_key(folder, self._room_name(row.room_id), row.camera, row.file)
                await self.storage.commit(dest, staged, row.sha256)
                await self.store.mark(row, key=dest, verified_utc=_now(), last_error=None)
            self._retry.pop(key, None)
            self._publish("gathering", session_id=row.session_id)
            await self._release(row.room_id, row.recording_id, [row])
            self.wake()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # whatever it was, try again later
            _, delay = self._retry.get(key, (0.0, 0.0))
            delay = min(self.settings.retry_max_s, max(self.settings.retry_min_s, delay * 2))
            self._retry[key] = (time.monotonic() + delay, delay)
            log.warning("gathering %s of %s from %s: %s (again in %.1f s)", row.file,
                        row.session_id, row.room_id, e, delay)
            await self.store.failed(row, f"{type(e).__name__}: {e}")
            asyncio.get_running_loop().call_later(delay, self.wake)

    async def _download(self, client: EdgeClient, row: FileRow, staged: Path) -> None:
        """The file into `staged`, resuming what is there; Corrupt if it is not the
        room's file (the staged bytes are then dropped, so the next try starts anew)."""
        have, digest = await asyncio.to_thread(_resume, staged, row.size)
        if have < row.size:
            async with client.segment(row.segment_id, f"bytes={have}-") as up:
                if up.status == 416:
                    have, digest = await asyncio.to_thread(_resume, staged, 0)
                    raise Corrupt(f"the room has no byte {have} of {row.file}")
                if up.status == 200 and have:  # the room sent the whole file
                    have, digest = await asyncio.to_thread(_resume, staged, 0)
                writer = StagedWriter(staged, digest)
                try:
                    buf = bytearray()
                    async for chunk in up.chunks:
                        buf += chunk
                        await self._rate.take(len(chunk))
                        if len(buf) >= WRITE_BLOCK:
                            await writer.write(buf)
                            buf = bytearray()  # the thread has the old one: no copy
                    await writer.write(buf, sync=True)
                finally:
                    writer.close()
        size = await asyncio.to_thread(lambda: staged.stat().st_size)
        if size != row.size or digest.hexdigest() != row.sha256:
            await asyncio.to_thread(staged.unlink, True)
            raise Corrupt(f"{row.file} from {row.room_id}: {size} bytes with sha256 "
                          f"{digest.hexdigest()[:12]}…, not {row.size} with "
                          f"{row.sha256[:12]}…; starting again")

    async def _release(self, room_id: str, recording_id: str, rows: list[FileRow]) -> None:
        """Tell the room that these files are verified centrally (idempotent)."""
        try:
            client = self._client_of(room_id)
            result = await client.release(recording_id, [r.segment_id for r in rows])
        except Exception as e:  # the next pass asks again
            log.info("release on %s not confirmed yet: %s", room_id, e)
            return
        done = set(result.released)
        for r in rows:
            if r.segment_id in done:
                await self.store.mark(r, released_utc=_now())

    async def _finish(self, session: StoredSession, manifests: dict[str, c.Manifest]) -> None:
        """Every file is verified: the session's description beside them; gathered."""
        rows = await self.store.files(session.id)
        if not rows and not manifests:
            await self.store.gathered(session.id)
            return
        folder = await self.store.folder(session)
        described = await self._describe(session)
        described["files"] = [{
            "room_id": r.room_id, "camera": r.camera, "key": r.key, "size": r.size,
            "sha256": r.sha256} for r in rows]
        described["timing"] = {room: {name: {
            "first_frame_utc": cam.first_frame_utc.isoformat() if cam.first_frame_utc else None,
            "segments": [{"file": s.file, "first_frame_utc": s.first_frame_utc.isoformat(),
                          "duration_s": s.duration_s, "time_source": s.time_source}
                         for s in cam.segments],
            "gaps": [g.model_dump(mode="json") for g in cam.gaps]}
            for name, cam in m.cameras.items()} for room, m in manifests.items()}
        data = json.dumps(described, ensure_ascii=False, indent=2).encode()
        try:
            await self.storage.put_bytes(f"{folder}/{SESSION_FILE}", data)
        except StorageError as e:
            log.warning("session file of %s not written: %s", session.id, e)
            return
        await self.store.gathered(session.id)
        self._publish("gathering", session_id=session.id, state="verified")
        log.info("session %s gathered: %d files in %s", session.id, len(rows), folder)


# -- file work (in threads) --------------------------------------------------------------


def _resume(staged: Path, size: int) -> tuple[int, Any]:
    """How much of `staged` to keep (0 when `size` is 0 or the file is longer than the
    whole), and the sha256 state of those bytes."""
    digest = hashlib.sha256()
    try:
        have = staged.stat().st_size
    except FileNotFoundError:
        return 0, digest
    if size == 0 or have > size:
        staged.unlink()
        return 0, digest
    with staged.open("rb") as f:
        while block := f.read(WRITE_BLOCK):
            digest.update(block)
    return have, digest


class StagedWriter:
    """Appends to a staged file and hashes what it appends, in order, on a thread of its
    own. `close()` queues the close after the last write, so a cancelled download (the
    coordinator stopping) still closes its file, without waiting."""

    def __init__(self, path: Path, digest: Any) -> None:
        self._path = path
        self._digest = digest
        self._file: IO[bytes] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gather-write")

    async def write(self, data: bytes | bytearray, sync: bool = False) -> None:
        await asyncio.wrap_future(self._pool.submit(self._write, data, sync))

    def _write(self, data: bytes | bytearray, sync: bool) -> None:
        if self._file is None:
            self._file = self._path.open("ab")
        self._file.write(data)
        self._digest.update(data)
        if sync:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._pool.submit(self._close)
        self._pool.shutdown(wait=False)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()


async def _has_size(path: Path, size: int) -> bool:
    try:
        return (await asyncio.to_thread(path.stat)).st_size == size
    except FileNotFoundError:
        return False
