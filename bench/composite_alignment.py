"""Composite alignment: how far apart the rooms' pictures are when played side by side.

R room boxes (default 4) run as separate processes, ``python -m edge --config FILE``, as
``roomrec-coordinator demo`` starts them: each with C synthetic cameras (default 2),
``test:NAME?size=640x360&fps=30``, which paint their capture wall-clock time into every
picture (`edge.clockcode`); storage in a temporary folder, API on port 0, a pairing code,
``clock.require_sync = false``, no mDNS. A Coordinator runs in this process
(``sessions.allow_unsynced_clock = true``), pairs every room by address, starts ONE
composite session over all rooms, records S seconds (default 10) and stops it.

Then alignment is measured the way a player aligned by the manifests would show it. For
each camera, its room's ``manifest.json`` gives the segments' ``first_frame_utc`` and
files; a frame's manifest wall time is its segment's ``first_frame_utc`` + the frame's
presentation time in the file. For session times t (default every 1 s from 1 s to 8 s
after the latest first frame of any camera) at wall time W = latest first frame + t,
each camera shows its latest frame whose manifest wall time is <= W; the clock painted
into that picture is decoded, and the spread at t is max - min of the painted times over
all cameras. Whole seconds at 30 fps all sample the same phase between the cameras'
frames, so the same span is also swept with W every millisecond. Even perfectly timed
cameras spread by up to one frame (33 ms at 30 fps) at some instants: their capture
instants are not phase-locked; and the painted clock has a 1 ms resolution.

Printed per camera: where its first frame lies against the synchronized start, frames
decoded, painted codes that did not read, holes in its file, late pictures (below), and
the manifest's timing error (manifest wall time minus painted time, per frame).

A caveat on the test cameras: a synthetic camera paints the time its thread actually
made the picture, while the picture's timestamp follows the ideal 30 fps schedule; on a
busy machine a late thread makes a picture whose content is later than its timestamp
says, and one late by two frames or more skips frames, leaving a hole in the file. No
recorder can see that; a real sensor's timestamps follow its real capture times. So
every instant whose spread exceeds one frame is put down to what explains it: a "camera
gap" (a camera shows a frame followed by a hole), a "late picture" (a shown picture
painted 5+ ms off its camera's median timing), or "timing" (neither: the manifests'
timing, the frame phases, the clock's resolution). A timing error of the recorder, such
as a camera's first_frame_utc off by some milliseconds, moves that camera's median and
lands in "timing". The worst over every instant whatever explains it is printed too;
the key figure leaves out the instants explained by the test cameras' own faults.

    python -m bench.composite_alignment [--rooms 4] [--cameras 2] [--seconds 10]

Goal (from the issue): a spread of at most one frame (33 ms at 30 fps). The last line
printed is ``composite alignment spread worst case: X ms``: the largest spread over the
t values and the 1 ms sweep, leaving out instants explained by camera gaps or late
pictures.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import logging
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.common import Child, fmt_table
from coordinator.config import parse as parse_coordinator
from coordinator.db import Database
from coordinator.db import Session as StoredSession
from coordinator.service import Actor, Coordinator
from edge import contract as c
from tests.support.media import painted_times

ADMIN = ("admin", "bench-admin-password")
READY_TIMEOUT_S = 60.0


@dataclass
class Room:
    index: int
    room_id: str
    folder: Path
    code: str
    child: Child
    port: int = 0

    @property
    def storage(self) -> Path:
        return self.folder / "recordings"


@dataclass(frozen=True)
class Frame:
    wall_s: float        # manifest-derived: segment first_frame_utc + pts
    pts_s: float
    painted_ms: int | None

    @property
    def err_ms(self) -> float | None:
        """Manifest wall time minus painted capture time."""
        return None if self.painted_ms is None else self.wall_s * 1000 - self.painted_ms


@dataclass
class CameraTrack:
    room_id: str
    camera: str
    first_frame_s: float
    time_source: str
    start_offset_s: float | None
    frames: list[Frame]
    segments: int
    first_pts_s: float
    walls: list[float] = field(init=False)  # the frames' wall_s, for bisecting
    median_err_ms: float = field(init=False)  # median of manifest wall - painted time

    def __post_init__(self) -> None:
        self.walls = [f.wall_s for f in self.frames]
        errs = [e for f in self.frames if (e := f.err_ms) is not None]
        self.median_err_ms = statistics.median(errs) if errs else float("nan")

    @property
    def label(self) -> str:
        return f"{self.room_id}/{self.camera}"


def edge_config(index: int, room_id: str, folder: Path, code: str, cameras: int, size: str,
                fps: int) -> str:
    cams = "".join(f'\n[[cameras]]\nname = "cam{j}"\nurl = "test:cam{j}?size={size}&fps={fps}"\n'
                   for j in range(1, cameras + 1))
    return f"""[room]
id = "{room_id}"
name = "Bench room {index}"
{cams}
[storage]
path = "{folder / 'recordings'}"
reserve_mb = 0

[api]
host = "127.0.0.1"
port = 0

[pairing]
code = "{code}"
state_dir = "{folder / 'state'}"

[announce]
enabled = false

[clock]
require_sync = false
"""


def start_room(work: Path, i: int, cameras: int, size: str, fps: int) -> Room:
    folder = work / f"room-{i}"
    folder.mkdir(parents=True, exist_ok=True)
    rid = f"bench-room-{i}"
    code = secrets.token_urlsafe(8)
    cfg = folder / "edge.toml"
    cfg.write_text(edge_config(i, rid, folder, code, cameras, size, fps))
    child = Child([sys.executable, "-m", "edge", "--config", str(cfg)], folder / "edge")
    return Room(i, rid, folder, code, child)


async def wait_port(room: Room) -> int:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = room.child.out.read_text(errors="replace")
        for line in text.splitlines():
            if "API on port " in line:
                return int(line.rsplit(" ", 1)[1])
        if room.child.wait(0) is not None:
            raise RuntimeError(f"{room.room_id} exited: {room.child.stderr_tail(10)}")
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{room.room_id} did not start in {READY_TIMEOUT_S:g} s")


def stop_rooms(rooms: Sequence[Room]) -> None:
    for room in rooms:
        room.child.kill(signal.SIGTERM)
    for room in rooms:
        if room.child.wait(20) is None:
            print(f"  {room.room_id}: pid {room.child.pid} ignored SIGTERM; killed",
                  file=sys.stderr)
        room.child.stop()


async def all_cameras_online(co: Coordinator, rooms: Sequence[Room], cameras: int) -> bool:
    for room in rooms:
        loc = co.locations.known.get(room.room_id)
        st = loc.status if loc is not None else None
        if st is None or sum(1 for cam in st.cameras if cam.state == "online") < cameras:
            return False
    return True


async def wait_session_measured(db: Database, sid: str, cameras: int,
                                timeout_s: float) -> StoredSession | None:
    deadline = time.monotonic() + timeout_s
    s = await db.get_session(sid)
    while time.monotonic() < deadline:
        s = await db.get_session(sid)
        if s is not None and s.spread_s is not None and all(
                len(sl.first_frames) == cameras for sl in s.locations):
            return s
        await asyncio.sleep(0.2)
    return s


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclass(frozen=True)
class SessionResult:
    session: StoredSession
    start_call_s: float
    stop_call_s: float
    measured: bool
    busy: float  # the machine's CPU use while recording, 0..1 of all cores


async def run_session(work: Path, rooms: Sequence[Room], cameras: int,
                      seconds: float) -> SessionResult:
    cfg = parse_coordinator({
        "database": {"path": str(work / "coordinator.sqlite3")},
        "storage": {"path": str(work / "central")},
        "discovery": {"enabled": False, "heartbeat_s": 1.0},
        "sessions": {"allow_unsynced_clock": True},
        "first_admin": {"username": ADMIN[0], "password": ADMIN[1]},
    })
    async with Database(cfg.database.path) as db, aiohttp.ClientSession() as http:
        co = Coordinator(cfg, db, http)
        await co.start()
        try:
            for room in rooms:
                await co.locations.pair("127.0.0.1", room.port, room.code)
            user = await db.get_user_by_name(ADMIN[0])
            assert user is not None
            actor = Actor(user.id, user.username, user.role)
            async with asyncio.timeout(READY_TIMEOUT_S):
                while not await all_cameras_online(co, rooms, cameras):  # noqa: ASYNC110 - polling heartbeats
                    await asyncio.sleep(0.2)
            # Let every camera fill its pre-roll and learn its arrival-time offset (2 s).
            await asyncio.sleep(3.0)
            before = cpu_ticks()
            t0 = time.monotonic()
            (session,) = await co.start_sessions(actor, [r.room_id for r in rooms], "composite")
            start_call = time.monotonic() - t0
            print(f"composite session {session.id}: start_sessions returned in "
                  f"{start_call * 1000:.0f} ms; synchronized start at "
                  f"{session.start_at_utc.isoformat(timespec='milliseconds')}", flush=True)
            measured = await wait_session_measured(db, session.id, cameras,
                                                   20 + cfg.sessions.start_lead_s)
            after_start = time.time() - session.start_at_utc.timestamp()
            print(f"the coordinator stored every camera's first frame (spread_s) "
                  f"{time.monotonic() - t0:.1f} s after the start call, {after_start:.1f} s "
                  f"after the synchronized start", flush=True)
            left = session.start_at_utc.timestamp() + seconds - time.time()
            if left > 0:
                await asyncio.sleep(left)
            after = cpu_ticks()
            busy = (after[0] - before[0]) / max(1, after[1] - before[1])
            t0 = time.monotonic()
            await co.stop_group(actor, session.id, name="bench composite alignment")
            stop_call = time.monotonic() - t0
            final = await db.get_session(session.id)
            assert final is not None
            ok = measured is not None and measured.spread_s is not None
            return SessionResult(final, start_call, stop_call, ok, busy)
        finally:
            await co.close()


def load_tracks(rooms: Sequence[Room], session: StoredSession) -> list[CameraTrack]:
    by_room = {r.room_id: r for r in rooms}
    tracks: list[CameraTrack] = []
    for sl in session.locations:
        if sl.recording_id is None:
            print(f"  {sl.room_id}: no recording ({sl.state}, {sl.failure})", file=sys.stderr)
            continue
        folder = by_room[sl.room_id].storage / sl.recording_id
        m = c.Manifest.model_validate_json((folder / "manifest.json").read_text())
        for name, cam in sorted(m.cameras.items()):
            if cam.first_frame_utc is None or not cam.segments:
                print(f"  {sl.room_id}/{name}: no first frame", file=sys.stderr)
                continue
            frames: list[Frame] = []
            first_pts = float("nan")
            for seg in sorted(cam.segments, key=lambda s: s.index):
                base = seg.first_frame_utc.timestamp()
                pics = painted_times(folder / seg.file)
                if seg is cam.segments[0] and pics:
                    first_pts = pics[0][0]
                frames.extend(Frame(base + pts, pts, ms) for pts, ms in pics)
            frames.sort(key=lambda f: f.wall_s)
            tracks.append(CameraTrack(sl.room_id, name, cam.first_frame_utc.timestamp(),
                                      cam.segments[0].time_source, cam.start_offset_s, frames,
                                      len(cam.segments), first_pts))
    return tracks


def shown_at(track: CameraTrack, wall_s: float) -> Frame | None:
    """The frame a player aligned by the manifest shows at `wall_s`: the latest frame
    whose manifest wall time is at or before it."""
    i = bisect.bisect_right(track.walls, wall_s) - 1
    return track.frames[i] if i >= 0 else None


LATE_MS = 5.0  # a picture painted this much off its camera's usual timing is "late"


@dataclass(frozen=True)
class Instant:
    spread_ms: float
    cause: str  # for spreads above one frame: "camera gap", "late picture" or "timing"


def instant(tracks: Sequence[CameraTrack], wall_s: float, frame_ms: float) -> Instant | None:
    """The spread at `wall_s` and, above one frame, what explains it: a camera showing a
    frame followed by a hole in its file (frames the test camera never made), a picture
    whose painted time is off its camera's usual timing (the test camera's thread ran
    late), or neither (the manifests' timing: what the recorder controls)."""
    painted: list[int] = []
    gap = late = False
    for t in tracks:
        i = bisect.bisect_right(t.walls, wall_s) - 1
        f = t.frames[i] if i >= 0 else None
        if f is None or f.painted_ms is None:
            return None
        painted.append(f.painted_ms)
        if i + 1 < len(t.frames) and (t.walls[i + 1] - f.wall_s) * 1000 > 1.5 * frame_ms:
            gap = True
        err = f.err_ms
        if err is not None and abs(err - t.median_err_ms) > LATE_MS:
            late = True
    spread = max(painted) - min(painted)
    cause = "" if spread <= frame_ms else \
        "camera gap" if gap else "late picture" if late else "timing"
    return Instant(spread, cause)


def holes(track: CameraTrack, frame_ms: float) -> int:
    """Frames missing from the file's timeline (the test camera skips frames when its
    thread falls two frames or more behind)."""
    return sum(max(0, round((b - a) * 1000 / frame_ms) - 1)
               for a, b in itertools.pairwise(track.walls) if (b - a) * 1000 > 1.5 * frame_ms)


def late_pictures(track: CameraTrack) -> int:
    """Pictures painted LATE_MS or more off the camera's usual timing."""
    return sum(1 for f in track.frames
               if (e := f.err_ms) is not None and abs(e - track.median_err_ms) > LATE_MS)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.composite_alignment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rooms", type=int, default=4, help="room boxes (processes), default 4")
    p.add_argument("--cameras", type=int, default=2, help="cameras per room, default 2")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="recording length after the synchronized start, default 10")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--size", default="640x360")
    p.add_argument("--times", default="1,2,3,4,5,6,7,8",
                   help="session times t (s after the latest first frame), comma-separated")
    p.add_argument("--work", type=Path, default=None,
                   help="keep everything here (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="  log %(levelname)s %(name)s: %(message)s")
    times = [float(t) for t in args.times.split(",") if t.strip()]
    frame_ms = 1000 / args.fps
    print(f"{args.rooms} room boxes x {args.cameras} synthetic cameras "
          f"(test:camN?size={args.size}&fps={args.fps}), {args.seconds:g} s composite "
          f"session; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)

    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="composite_alignment-")))
        else:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        rooms: list[Room] = []
        try:
            for i in range(1, args.rooms + 1):
                rooms.append(start_room(work, i, args.cameras, args.size, args.fps))

            async def go() -> SessionResult:
                for room in rooms:
                    room.port = await wait_port(room)
                return await run_session(work, rooms, args.cameras, args.seconds)

            result = asyncio.run(go())
        finally:
            stop_rooms(rooms)
        tracks = load_tracks(rooms, result.session)

    session = result.session
    cpu = sum(r.child.usage.cpu_s for r in rooms if r.child.usage is not None)
    life = max((r.child.usage.wall_s for r in rooms if r.child.usage is not None), default=0)
    print(f"machine busy while recording: {result.busy:.0%} of {os.cpu_count()} CPUs; the "
          f"{len(rooms)} room processes used {cpu:.1f} CPU s in {life:.1f} s "
          f"({cpu / max(life, 1e-9):.2f} cores)")
    print(f"stop_group returned in {result.stop_call_s * 1000:.0f} ms; session state "
          f"{session.state}, coordinator spread_s "
          f"{'-' if session.spread_s is None else f'{session.spread_s * 1000:.1f} ms'}"
          f"{'' if result.measured else ' (first frames NOT all reported in time)'}")
    if not tracks:
        print("no recordings to measure")
        print("composite alignment spread worst case: nan ms")
        return 1

    return report(session, tracks, times, frame_ms, args.fps)


def report(session: StoredSession, tracks: Sequence[CameraTrack], times: Sequence[float],
           frame_ms: float, fps: int) -> int:
    start_at = session.start_at_utc.timestamp()
    latest_first = max(t.first_frame_s for t in tracks)
    cam_rows = []
    for t in tracks:
        errs = [e for f in t.frames if (e := f.err_ms) is not None]
        cam_rows.append([
            t.label, t.time_source, f"{(t.first_frame_s - start_at) * 1000:+.1f}",
            f"{t.first_pts_s * 1000:.1f}", str(len(t.frames)),
            str(sum(1 for f in t.frames if f.painted_ms is None)),
            str(holes(t, frame_ms)), str(late_pictures(t)),
            f"{t.median_err_ms:+.1f}" if errs else "-",
            f"{min(errs):+.1f}..{max(errs):+.1f}" if errs else "-",
        ])
    print("\nPer camera. first frame: first_frame_utc minus the synchronized start (ms); "
          "first pts: the file's\nfirst presentation time; manifest - painted: each frame's "
          "manifest wall time minus the time\npainted into it (ms; the camera's timing "
          "error as the manifest states it: alignment needs it equal\nacross cameras). "
          "holes: frames missing from the file (the test camera skipped them); late:\n"
          f"pictures painted {LATE_MS:g}+ ms off their camera's median (its thread ran late).")
    print(fmt_table(["camera", "time src", "first frame ms", "first pts ms", "frames",
                     "unreadable", "holes", "late", "manifest-painted med", "range"],
                    cam_rows))

    per_t: list[Instant] = []
    t_rows = []
    for t_s in times:
        wall = latest_first + t_s
        shown = [f for tr in tracks if (f := shown_at(tr, wall)) is not None]
        it = instant(tracks, wall, frame_ms)
        if it is None:
            t_rows.append([f"{t_s:g}", "-", "-", "-", "-", "unreadable or no frame"])
            continue
        per_t.append(it)
        lags = [wall * 1000 - f.painted_ms for f in shown if f.painted_ms is not None]
        t_rows.append([f"{t_s:g}", f"{it.spread_ms:.0f}", f"{it.spread_ms / frame_ms:.2f}",
                       f"{min(lags):.1f}", f"{max(lags):.1f}", it.cause])
    print(f"\nAlignment at wall time W = latest first frame + t ({len(tracks)} cameras). "
          "spread: max - min of the\npainted clocks shown at W (ms); lag: W minus a painted "
          "clock (ms; 0..1 frame is ideal); cause:\nwhat explains a spread above one frame "
          "(see below).")
    print(fmt_table(["t s", "spread ms", "frames", "min lag ms", "max lag ms", "cause"],
                    t_rows))

    # Every millisecond of the same span: the phases between the cameras' frames matter,
    # and whole seconds sample a single phase (30 fps divides a second exactly).
    lo, hi = latest_first + min(times), latest_first + max(times)
    sweep = [it for k in range(int((hi - lo) * 1000) + 1)
             if (it := instant(tracks, lo + k / 1000, frame_ms)) is not None]
    dense = [it.spread_ms for it in sweep]
    print(f"\nDense sweep, W every 1 ms from t = {min(times):g} s to {max(times):g} s "
          f"({len(sweep)} instants): spread median "
          f"{statistics.median(dense) if dense else float('nan'):.0f} ms, worst "
          f"{max(dense, default=float('nan')):.0f} ms.\nInstants above one frame, by what "
          "explains them (camera gap: a camera shows a frame followed by a\nhole in its "
          f"file; late picture: a shown picture painted {LATE_MS:g}+ ms off its camera's "
          "median;\ntiming: neither, i.e. the manifests' timing, the frame phases and the "
          "clock's 1 ms resolution):")
    cause_rows = []
    for cause in ("camera gap", "late picture", "timing"):
        hits = [it.spread_ms for it in sweep if it.cause == cause]
        cause_rows.append([cause, str(len(hits)),
                           f"{len(hits) / len(sweep):.1%}" if sweep else "-",
                           f"{max(hits):.0f}" if hits else "-"])
    print(fmt_table(["cause", "instants", "share", "worst spread ms"], cause_rows))

    every = [*per_t, *sweep]
    worst_all = max((it.spread_ms for it in every), default=float("nan"))
    worst = max((it.spread_ms for it in every if it.cause in ("", "timing")),
                default=float("nan"))
    medians = [t.median_err_ms for t in tracks]
    first_spread = session.spread_s * 1000 if session.spread_s is not None else float("nan")
    print(f"\nFirst-frame spread reported by the coordinator (spread_s): {first_spread:.1f} ms "
          "(each camera begins at its keyframe\nat or before the synchronized start; "
          "playback aligns by the manifests, so this is no playback misalignment).")
    t_spreads = [it.spread_ms for it in per_t]
    print(f"Per-t spread: median "
          f"{statistics.median(t_spreads) if t_spreads else float('nan'):.0f} ms, "
          f"worst {max(t_spreads, default=float('nan')):.0f} ms. "
          f"Worst of every instant (per-t and sweep), whatever\nexplains it: "
          f"{worst_all:.0f} ms = {worst_all / frame_ms:.2f} frames.")
    print(f"Worst not explained by the test cameras' own faults (camera gaps, late "
          f"pictures): {worst:.0f} ms = {worst / frame_ms:.2f} frames.\nThe cameras' "
          f"timing as the manifests state it (per-camera medians of manifest - painted) "
          f"differs by {max(medians) - min(medians):.1f} ms.")
    print(f"Goal: at most one frame ({frame_ms:.1f} ms at {fps} fps): "
          f"{'met' if worst <= frame_ms else 'NOT met'} (on the worst not explained by the "
          "test cameras).")
    print(f"composite alignment spread worst case: {worst:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
