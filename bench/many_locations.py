"""Many locations: one Coordinator commanding 100 simulated locations at once.

THE SIMULATED LOCATIONS HAVE NO CAMERAS. This benchmark measures the coordinator's
fan-out (pairing, a composite start over every location, the group stop), not
recording. Each simulated location is a small aiohttp server in this process serving
the REAL edge API code, ``edge.api.build(backend, max_body)``, with its routes, pairing
check (the real `edge.pairing.Pairing`, with an enrollment code), request validation and
error mapping; only the backend behind it is a stand-in (`SimRoom`) that implements the
`edge.api.Backend` protocol without cameras: its status is idle or recording (with an
empty camera list), a start or stop just records the request and its arrival time, and
its manifests are minimal but valid. So that the coordinator's background wait for first
frames (``Coordinator._await_first_frames``, which polls each room's manifest) ends, a
manifest holds one placeholder camera entry ("none": no source, no segments, no files)
whose ``first_frame_utc`` is set to the requested start once that time has passed. With
no segment it is not "arrival"-timed, so the wait ends as for RTCP-timed cameras (for
arrival-timed ones the coordinator waits about 6.5 s more). The locations share this
machine's clock and report it synchronised.

The rooms run in the coordinator's own process and event loop, so the times below
include serving the 100 rooms' side of every request (the real rooms would do that on
their own boxes), and a simulated start or stop takes no time (a real box creates a
folder and writes a manifest): they measure the coordinator's own cost plus local HTTP.

Steps: 100 locations are paired by address (``Locations.pair``, concurrently) and must be
online; then, R times (default 3):

* the peer, as a lower bound: the same 100 start requests (``POST /recording``, same
  body, the pairing secrets) sent concurrently with plain aiohttp (one ClientSession,
  default connector, as the coordinator's), then the 100 stops (``POST /recording/stop``);
* ours: ``Coordinator.start_sessions(actor, all 100, "composite")`` and, once every
  location reported its first frames, ``Coordinator.stop_group``.

A start or stop is timed from the call until every location has received its command
AND the call has returned (whichever is later). Also shown: until the first and the last
location received it, and for ours the coordinator's SQLite write transactions during
the call (each a commit, ``synchronous = FULL``), the wall time while one was under way,
and when the coordinator had stored every first frame.

    python -m bench.many_locations [--locations 100] [--runs 3]

Goal (from the issue): composite start and group stop each within 1 s for 100 locations.
The last line printed is ``100-location composite start/stop: X.XX s / Y.YY s``, the
worst run of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import aiohttp
from aiohttp import web

from bench.common import fmt_table
from coordinator.config import parse as parse_coordinator
from coordinator.db import Database
from coordinator.service import Actor, Coordinator
from edge import __version__
from edge import contract as c
from edge.api import Forbidden, NotFound, build
from edge.errors import RecordingConflict
from edge.eventhub import EventHub
from edge.pairing import Pairing

ADMIN = ("admin", "bench-admin-password")
MAX_BODY = 64 * 1024
T = TypeVar("T")
PLACEHOLDER = "none"  # the manifest's placeholder camera entry: no camera behind it


def _now() -> datetime:
    return datetime.now(UTC)


class SimRoom:
    """A simulated location without cameras: the `edge.api.Backend` protocol, no more."""

    def __init__(self, index: int, state_dir: Path, code: str) -> None:
        self.room_id = f"sim-{index:03d}"
        self.name = f"Simulated location {index:03d}"
        self.code = code
        self.pairing = Pairing(state_dir, code)
        self.port = 0
        self.running: c.Manifest | None = None
        self.manifests: dict[str, c.Manifest] = {}
        self.starts: list[float] = []  # perf_counter() when each start request arrived
        self.stops: list[float] = []
        self.events = EventHub(self.room_id)  # nothing is published: no cameras
        self._count = 0

    # --- the Backend protocol ---

    def health(self) -> c.Health:
        return c.Health(ok=True, room_id=self.room_id, version=__version__)

    def _current(self) -> c.CurrentRecording | None:
        m = self.running
        if m is None:
            return None
        elapsed = max(0.0, time.time() - m.requested_start_utc.timestamp())
        return c.CurrentRecording(recording_id=m.recording_id, session_id=m.session_id,
                                  name=m.name, started_by=m.started_by,
                                  requested_start_utc=m.requested_start_utc,
                                  elapsed_s=round(elapsed, 3))

    def status(self) -> c.Status:
        return c.Status(room_id=self.room_id, name=self.name, version=__version__,
                        state="idle" if self.running is None else "recording", cameras=[],
                        recording=self._current(),
                        disk=c.DiskStatus(free_bytes=1 << 40, reserve_bytes=0),
                        clock="synchronised", unsafe_to_unplug=False,
                        paired=self.pairing.paired)

    async def start_recording(self, req: c.StartRequest) -> c.CurrentRecording:
        self.starts.append(time.perf_counter())
        if self.running is not None:
            raise RecordingConflict(f"recording {self.running.recording_id} is already running")
        self._count += 1
        now = _now()
        rid = f"{self.room_id}-{self._count}"
        m = c.Manifest(recording_id=rid, room_id=self.room_id, session_id=req.session_id,
                       name=req.name, started_by=req.started_by,
                       software="bench.many_locations (simulated location, no cameras)",
                       requested_start_utc=req.start_at_utc or now, created_utc=now,
                       cameras={PLACEHOLDER: c.CameraRecord(
                           name=PLACEHOLDER, source="simulated: no camera")})
        self.running = self.manifests[rid] = m
        current = self._current()
        assert current is not None
        return current

    async def stop_recording(self, req: c.StopRequest) -> c.RecordingSummary:
        self.stops.append(time.perf_counter())
        m = self.running
        if m is None:
            raise RecordingConflict("no recording is running")
        if req.stopped_by != m.started_by and not req.technician:
            raise Forbidden(f"only {m.started_by} (who started it) or a Technician may stop "
                            "this session")
        m.state = "stopped"
        m.stop_reason = "stopped"
        m.stopped_utc = _now()
        for cam in m.cameras.values():
            cam.state = "ended"
            cam.end_reason = "stopped"
        self.running = None
        return self._summary(m)

    @staticmethod
    def _summary(m: c.Manifest) -> c.RecordingSummary:
        return c.RecordingSummary(recording_id=m.recording_id, session_id=m.session_id,
                                  name=m.name, started_by=m.started_by, state=m.state,
                                  requested_start_utc=m.requested_start_utc,
                                  stopped_utc=m.stopped_utc, segments=0, bytes=0)

    def recordings(self) -> c.RecordingList:
        return c.RecordingList(recordings=[self._summary(m) for m in self.manifests.values()])

    def manifest_json(self, recording_id: str) -> str:
        m = self.manifests.get(recording_id)
        if m is None:
            raise NotFound(f"no recording {recording_id!r} on this box")
        cam = m.cameras[PLACEHOLDER]
        if cam.first_frame_utc is None and _now() >= m.requested_start_utc:
            # What a real room reports once its cameras' first frames are written.
            cam.first_frame_utc = m.requested_start_utc
            cam.start_offset_s = 0.0
            cam.state = "recording" if m.state == "recording" else "ended"
        return m.model_dump_json(indent=2)

    def segment_file(self, segment_id: str) -> tuple[str, str]:
        raise NotFound(f"no segment {segment_id!r}: a simulated location records nothing")

    async def release(self, recording_id: str, req: c.ReleaseRequest) -> c.ReleaseResult:
        if recording_id not in self.manifests:
            raise NotFound(f"no recording {recording_id!r} on this box")
        return c.ReleaseResult(released=[], unknown=sorted(set(req.segment_ids)))

    async def snapshot(self, camera: str) -> bytes:
        raise NotFound(f"no camera {camera!r}: a simulated location has no cameras")

    async def pair(self, req: c.PairRequest) -> c.PairResponse:
        async def no_button() -> bool:
            return False

        secret = await self.pairing.pair(req.coordinator_id, req.code, no_button)
        return c.PairResponse(room_id=self.room_id, secret=secret)


class CountingDatabase(Database):
    """The coordinator's database, counting its write transactions (each one commit,
    synchronous=FULL: one fsync of the WAL) and the wall time while any is under way
    or queued (they run one at a time on the database's thread)."""

    writes = 0
    write_s = 0.0
    _inflight = 0
    _since = 0.0

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._inflight == 0:
            self._since = time.perf_counter()
        self._inflight += 1
        try:
            return await super().run(fn)
        finally:
            self.writes += 1
            self._inflight -= 1
            if self._inflight == 0:
                self.write_s += time.perf_counter() - self._since


async def serve(room: SimRoom) -> web.AppRunner:
    app, _ = build(room, MAX_BODY)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    room.port = int(runner.addresses[0][1])
    return runner


@dataclass(frozen=True)
class Timing:
    """One fan-out, in seconds from the call."""

    first_rx: float      # the first location received its command
    last_rx: float       # every location had received it
    returned: float      # the call returned
    received: int        # locations that received it
    ok: int              # locations that accepted it (2xx / started)
    extra: float | None = None  # ours: every first frame known to the coordinator
    db_writes: int | None = None  # ours: database write transactions during the call
    db_write_s: float | None = None  # ...and the wall time while any was under way

    @property
    def total(self) -> float:
        return max(self.last_rx, self.returned)


def timing(rooms: Sequence[SimRoom], stamps: Callable[[SimRoom], list[float]], t0: float,
           returned: float, ok: int, extra: float | None = None,
           db: tuple[int, float] | None = None) -> Timing:
    got = [t - t0 for r in rooms for t in stamps(r) if t >= t0]
    return Timing(min(got, default=float("nan")), max(got, default=float("nan")),
                  returned, len(got), ok, extra, *(db or (None, None)))


@dataclass
class Results:
    peer_start: list[Timing] = field(default_factory=list)
    peer_stop: list[Timing] = field(default_factory=list)
    start: list[Timing] = field(default_factory=list)
    stop: list[Timing] = field(default_factory=list)
    pair_s: float = 0.0
    online_s: float = 0.0


async def fan_out(rooms: Sequence[SimRoom], send: Callable[[SimRoom], Awaitable[bool]],
                  stamps: Callable[[SimRoom], list[float]]) -> Timing:
    t0 = time.perf_counter()
    oks = await asyncio.gather(*(send(r) for r in rooms))
    returned = time.perf_counter() - t0
    return timing(rooms, stamps, t0, returned, sum(oks))


async def peer_run(http: aiohttp.ClientSession, rooms: Sequence[SimRoom],
                   tokens: dict[str, str], run: int, lead_s: float) -> tuple[Timing, Timing]:
    """The lower bound: the same requests, sent concurrently with plain aiohttp."""
    start_body = c.StartRequest(session_id=f"peer-{run}", started_by="bench-peer",
                                start_at_utc=_now() + timedelta(seconds=lead_s),
                                name="peer").model_dump_json()
    stop_body = c.StopRequest(stopped_by="bench-peer").model_dump_json()

    def sender(path: str, body: str) -> Callable[[SimRoom], Awaitable[bool]]:
        async def send(r: SimRoom) -> bool:
            async with http.post(f"http://127.0.0.1:{r.port}{c.API_PREFIX}{path}", data=body,
                                 headers={"Authorization": f"Bearer {tokens[r.room_id]}"},
                                 timeout=aiohttp.ClientTimeout(total=5)) as resp:
                await resp.read()
                return resp.status < 300
        return send

    start = await fan_out(rooms, sender("/recording", start_body), lambda r: r.starts)
    stop = await fan_out(rooms, sender("/recording/stop", stop_body), lambda r: r.stops)
    return start, stop


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float,
                     what: str) -> float:
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - polling state
                await asyncio.sleep(0.05)
    except TimeoutError:
        print(f"  timed out after {timeout_s:g} s waiting for {what}", file=sys.stderr)
    return time.perf_counter() - t0


async def ours_run(co: Coordinator, db: CountingDatabase, actor: Actor,
                   rooms: Sequence[SimRoom], run: int) -> tuple[Timing, Timing]:
    ids = [r.room_id for r in rooms]
    w0, ws0 = db.writes, db.write_s
    t0 = time.perf_counter()
    (session,) = await co.start_sessions(actor, ids, "composite")
    returned = time.perf_counter() - t0
    writes = (db.writes - w0, db.write_s - ws0)
    ok = sum(1 for sl in session.locations if sl.recording_id is not None)

    async def all_first_frames() -> bool:
        s = await db.get_session(session.id)
        return s is not None and all(sl.first_frames for sl in s.locations)

    await wait_until(all_first_frames, 30, "every first frame")
    frames_s = time.perf_counter() - t0
    start = timing(rooms, lambda r: r.starts, t0, returned, ok, frames_s, writes)
    await asyncio.sleep(0.5)
    w0, ws0 = db.writes, db.write_s
    t0 = time.perf_counter()
    stopped = await co.stop_group(actor, session.id, name=f"bench many locations {run}")
    returned = time.perf_counter() - t0
    writes = (db.writes - w0, db.write_s - ws0)
    ok = sum(1 for s in stopped for sl in s.locations if sl.state == "stopped")
    stop = timing(rooms, lambda r: r.stops, t0, returned, ok, None, writes)
    return start, stop


async def bench(n: int, runs: int, work: Path) -> Results:
    res = Results()
    rooms = [SimRoom(i, work / f"sim-{i:03d}", f"code-{i:03d}") for i in range(1, n + 1)]
    runners: list[web.AppRunner] = []
    try:
        for room in rooms:
            runners.append(await serve(room))
        cfg = parse_coordinator({
            "database": {"path": str(work / "coordinator.sqlite3")},
            "storage": {"path": str(work / "central")},
            "discovery": {"enabled": False},
            "sessions": {"allow_unsynced_clock": True},
            "first_admin": {"username": ADMIN[0], "password": ADMIN[1]},
        })
        async with CountingDatabase(cfg.database.path) as db, aiohttp.ClientSession() as http, \
                aiohttp.ClientSession() as peer_http:
            co = Coordinator(cfg, db, http)
            await co.start()
            try:
                t0 = time.perf_counter()
                await asyncio.gather(*(co.locations.pair("127.0.0.1", r.port, r.code)
                                       for r in rooms))
                res.pair_s = time.perf_counter() - t0

                async def all_idle() -> bool:
                    known = co.locations.known
                    return all(r.room_id in known and
                               co.location_status(known[r.room_id]) == "idle" for r in rooms)

                res.online_s = await wait_until(all_idle, 30, "every location online")
                user = await db.get_user_by_name(ADMIN[0])
                assert user is not None
                actor = Actor(user.id, user.username, user.role)
                tokens = {rid: loc.secret for rid, loc in co.locations.known.items()
                           if loc.secret is not None}
                for run in range(1, runs + 1):
                    p_start, p_stop = await peer_run(peer_http, rooms, tokens, run,
                                                     cfg.sessions.start_lead_s)
                    res.peer_start.append(p_start)
                    res.peer_stop.append(p_stop)
                    # The coordinator's heartbeats (every 2 s) must see the rooms idle again.
                    await wait_until(all_idle, 30, "every location idle after the peer")
                    start, stop = await ours_run(co, db, actor, rooms, run)
                    res.start.append(start)
                    res.stop.append(stop)
                    print(f"  run {run}: peer {p_start.total:.3f} s / {p_stop.total:.3f} s, "
                          f"ours {start.total:.3f} s / {stop.total:.3f} s", flush=True)
                    await wait_until(all_idle, 30, "every location idle after the stop")
            finally:
                await co.close()
    finally:
        for runner in runners:
            await runner.cleanup()
    return res


def _ms(x: float) -> str:
    return f"{x * 1000:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.many_locations", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--locations", type=int, default=100, help="simulated locations (100)")
    p.add_argument("--runs", type=int, default=3, help="start/stop rounds (3)")
    p.add_argument("--work", type=Path, default=None,
                   help="keep the database and pairing state here (default: temporary)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="  log %(levelname)s %(name)s: %(message)s")
    n: int = args.locations
    print(f"{n} simulated locations (edge API, no cameras) in this process, one Coordinator; "
          f"{args.runs} runs; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
          flush=True)
    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="many_locations-")))
        else:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        res = asyncio.run(bench(n, args.runs, work))

    print(f"\npairing {n} locations by address (concurrently): {res.pair_s:.2f} s; all "
          f"online and idle {res.online_s:.2f} s later")
    header = ["run", "what", "first rx ms", "last rx ms", "returned ms", "received", "ok",
              "total ms", "db writes", "db busy ms", "all first frames ms"]
    rows = []
    for i in range(len(res.start)):
        for what, t in (("peer start", res.peer_start[i]), ("ours start", res.start[i]),
                        ("peer stop", res.peer_stop[i]), ("ours stop", res.stop[i])):
            rows.append([str(i + 1), what, _ms(t.first_rx), _ms(t.last_rx), _ms(t.returned),
                         f"{t.received}/{n}", f"{t.ok}/{n}", _ms(t.total),
                         "-" if t.db_writes is None else str(t.db_writes),
                         "-" if t.db_write_s is None else _ms(t.db_write_s),
                         "-" if t.extra is None else _ms(t.extra)])
    print("\nFan-out, from the call: first/last rx = the first/last location received its "
          "command; total = max(last rx,\nreturned). ok: peer = 2xx answers; ours start = "
          "locations with a recording id, stop = locations stopped.\ndb writes: the "
          "coordinator's SQLite write transactions during the call (each a commit), db busy: "
          "the wall\ntime while one was under way or queued (one thread). all first frames: "
          "until the coordinator stored every\nlocation's first frames (background, after "
          "the call; the synchronized start is 1.5 s ahead).")
    print(fmt_table(header, rows))
    if not res.start:
        print(f"{n}-location composite start/stop: nan s / nan s")
        return 1

    def worst(ts: list[Timing]) -> float:
        return max(t.total for t in ts)

    def med(ts: list[Timing]) -> float:
        return statistics.median(t.total for t in ts)

    summary = [
        ["start", f"{med(res.start):.3f}", f"{worst(res.start):.3f}",
         f"{med(res.peer_start):.3f}", f"{worst(res.peer_start):.3f}",
         f"{med(res.start) / med(res.peer_start):.1f}x"],
        ["stop", f"{med(res.stop):.3f}", f"{worst(res.stop):.3f}",
         f"{med(res.peer_stop):.3f}", f"{worst(res.peer_stop):.3f}",
         f"{med(res.stop) / med(res.peer_stop):.1f}x"],
    ]
    print(f"\n{n} locations, {len(res.start)} runs (s): ours = Coordinator.start_sessions "
          "(composite) / stop_group; peer = the same\nrequests sent concurrently with plain "
          "aiohttp (lower bound).")
    print(fmt_table(["", "ours median", "ours worst", "peer median", "peer worst",
                     "ours/peer (median)"], summary))
    s_w, p_w = worst(res.start), worst(res.stop)
    print(f"Goal: composite start and group stop each within 1 s: start "
          f"{'met' if s_w <= 1 else 'NOT met'}, stop {'met' if p_w <= 1 else 'NOT met'} "
          "(worst run).")
    print(f"{n}-location composite start/stop: {s_w:.2f} s / {p_w:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
