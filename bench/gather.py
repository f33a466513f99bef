"""Gathering throughput: the coordinator's gatherer against curl, same files, same run.

A finished recording of random bytes (``bench.make_recording``: 2 cameras, 64 MiB
segments, 2 GiB in all by default) is fabricated on the storage folder of a real room box,
``python -m edge --config edge.toml`` run as a separate process (API on port 0 of
127.0.0.1, no mDNS, one idle synthetic camera), which the benchmark pairs with over HTTP.
Every round then copies every segment of it twice over loopback, once by each tool, in an
order that alternates between rounds:

* the peer: ``/usr/bin/curl --parallel --parallel-max 2`` with one ``-o`` per segment URL
  (``GET /api/v1/segments/{id}``, the pairing's bearer secret) into a fresh folder; then,
  timed apart, ``sync`` of its files (curl never fsyncs);
* ours: the coordinator's real gathering path in this process: a ``Gatherer`` on a fresh
  SQLite database and a fresh ``FolderStorage``, with a stopped session whose location
  holds the recording: it reads the room's manifest, downloads (``per_room`` = 2 at a
  time) into staging files while hashing, fsyncs, commits each file (link, fsync, read
  back from the disk and sha256 again), releases it on the room and writes session.json.
  Timed from ``Gatherer.start()`` until it reports the session verified.

Both write to the same filesystem as the source. Per run: wall time, throughput, CPU of
the tool (curl: wait4 of its process; ours: ``time.process_time()`` of this process, all
threads) and of the room's process (/proc). The last line is
``gather throughput ratio ours/curl: X.XX`` (median over rounds of ours' throughput over
curl's, curl timed without its sync; higher is better, the goal is 0.8 or more).

    python -m bench.gather [--gib 2 | --mib 256] [--rounds 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import MIB, Child, fmt_table, proc_cpu_s
from bench.make_recording import make_recording
from coordinator import edges as edges_module
from coordinator import gather as gather_module
from coordinator.config import GatherConfig
from coordinator.db import Database, NewSession
from coordinator.db import Session as StoredSession
from coordinator.edges import EdgeClient
from coordinator.gather import Gatherer, GatherSettings
from coordinator.storage import FolderStorage
from edge import contract as c

CURL = "/usr/bin/curl"
ROOM_ID = "bench-gather-room"
ROOM_NAME = "Bench room"
CODE = "bench-gather-code"
GB = 1e9   # throughput and CPU figures are per decimal MB and GB
MB = 1e6

EDGE_CONFIG = """[room]
id = "{room_id}"
name = "{room_name}"

[[cameras]]
name = "a"
url = "test:a?size=160x120&fps=5"

[storage]
path = "{storage}"
reserve_mb = 0

[api]
host = "127.0.0.1"
port = 0

[pairing]
code = "{code}"
state_dir = "{state}"

[retention]
release_after_hours = 100000  # released files stay: every round copies them again

[announce]
enabled = false

[clock]
require_sync = false
"""


@dataclass(frozen=True)
class SegmentFile:
    id: str
    camera: str
    file: str
    size: int
    sha256: str
    path: Path  # the source, on the room's storage


@dataclass(frozen=True)
class Run:
    tool: str            # "ours" | "curl"
    round: int
    first: bool          # ran first in its round
    nbytes: int
    wall_s: float        # ours: until verified; curl: until its process exited
    cpu_s: float         # ours: this process, all threads; curl: its process (wait4)
    edge_cpu_s: float    # the room's process during the run
    steal_s: float       # CPU time the hypervisor gave to others meanwhile, all CPUs
    sync_s: float = 0.0  # curl only: `sync` of its files afterwards

    @property
    def mbps(self) -> float:
        return self.nbytes / self.wall_s / MB

    @property
    def mbps_synced(self) -> float:
        return self.nbytes / (self.wall_s + self.sync_s) / MB

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu_s / (self.nbytes / GB)

    @property
    def edge_cpu_per_gb(self) -> float:
        return self.edge_cpu_s / (self.nbytes / GB)


# -- the room ----------------------------------------------------------------------------


class Room:
    """`python -m edge` on a storage folder, its output in files, paired over HTTP."""

    def __init__(self, work: Path, storage: Path) -> None:
        cfg = work / "edge.toml"
        cfg.write_text(EDGE_CONFIG.format(room_id=ROOM_ID, room_name=ROOM_NAME,
                                          storage=storage, code=CODE, state=work / "state"))
        self.child = Child([sys.executable, "-m", "edge", "--config", str(cfg)], work / "edge")
        self.port = self._port()
        self.base = f"http://127.0.0.1:{self.port}{c.API_PREFIX}"
        self.secret = ""

    def _port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = re.search(r"API on port (\d+)", self.child.out.read_text(errors="replace"))
            if m:
                return int(m.group(1))
            if self.child.wait(0) is not None:
                raise RuntimeError(f"the room exited: {self.child.stderr_tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"the room did not start in 60 s: {self.child.stderr_tail()}")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers["Authorization"] = f"Bearer {self.secret}"
        req = urllib.request.Request(self.base + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body else None)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def pair(self) -> None:
        resp = c.PairResponse.model_validate(
            self.call("POST", "/pair", {"coordinator_id": "bench-gather", "code": CODE}))
        if resp.room_id != ROOM_ID:
            raise RuntimeError(f"paired with {resp.room_id!r}, not {ROOM_ID!r}")
        self.secret = resp.secret

    def segments(self, recording_id: str, storage: Path) -> list[SegmentFile]:
        m = c.Manifest.model_validate(self.call("GET", f"/recordings/{recording_id}"))
        out = []
        for cam in m.cameras.values():
            for s in cam.segments:
                assert s.complete and s.size is not None and s.sha256 is not None
                out.append(SegmentFile(s.id, cam.name, s.file, s.size, s.sha256,
                                       storage / recording_id / s.file))
        return sorted(out, key=lambda s: (s.camera, s.file))  # the gatherer's order

    def cpu_s(self) -> float:
        cpu = proc_cpu_s(self.child.pid)
        if cpu is None:
            raise RuntimeError(f"the room is gone: {self.child.stderr_tail()}")
        return cpu

    def stop(self) -> None:
        self.child.kill(signal.SIGTERM)
        if self.child.wait(10) is None:
            self.child.stop()


# -- curl --------------------------------------------------------------------------------


def curl_config(room: Room, segs: Sequence[SegmentFile], out: Path, parallel: int) -> str:
    """A curl config file (-K): the secret stays off the command line."""
    lines = ["parallel", f"parallel-max = {parallel}", "fail", "silent", "show-error",
             f'header = "Authorization: Bearer {room.secret}"']
    for s in segs:
        lines += [f'url = "{room.base}/segments/{s.id}"',
                  f'output = "{out / f"{s.camera}-{Path(s.file).name}"}"']
    return "\n".join(lines) + "\n"


def run_waited(cmd: Sequence[str], log: Path) -> tuple[float, float, int]:
    """Run a command to its end: (wall s, its user+sys CPU s from wait4, exit code).
    Reaped with a blocking wait4, so the wall time has no polling slack."""
    with log.open("wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
    try:
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_utime + ru.ru_stime, proc.returncode


def run_curl(room: Room, segs: Sequence[SegmentFile], work: Path, rnd: int, first: bool,
             parallel: int) -> Run:
    out = work / f"curl-r{rnd}"
    out.mkdir()
    cfg = work / f"curl-r{rnd}.cfg"
    cfg.write_text(curl_config(room, segs, out, parallel))
    cfg.chmod(0o600)
    edge0, steal0 = room.cpu_s(), steal_s()
    wall, cpu, code = run_waited([CURL, "-K", str(cfg)], work / f"curl-r{rnd}.err")
    edge_cpu, steal = room.cpu_s() - edge0, steal_s() - steal0
    if code != 0:
        raise RuntimeError(f"curl exited {code}: "
                           f"{(work / f'curl-r{rnd}.err').read_text()[-500:]}")
    files = sorted(out.iterdir())
    sync_s, _, sync_code = run_waited(["sync", *map(str, files), str(out)],
                                      work / f"sync-r{rnd}.err")
    if sync_code != 0:
        raise RuntimeError(f"sync exited {sync_code}")
    # Did curl fetch the right bytes? (untimed)
    for s in segs:
        got = out / f"{s.camera}-{Path(s.file).name}"
        if got.stat().st_size != s.size or _sha256(got) != s.sha256:
            raise RuntimeError(f"curl's copy {got} is not the room's file")
    return Run("curl", rnd, first, sum(s.size for s in segs), wall, cpu, edge_cpu, steal,
               sync_s)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            h.update(block)
    return h.hexdigest()


# -- ours --------------------------------------------------------------------------------


async def gather_once(room: Room, recording_id: str, segs: Sequence[SegmentFile], work: Path,
                      rnd: int, per_room: int,
                      read_bufsize: int | None) -> tuple[float, float, float, float]:
    """One session gathered by a real Gatherer: (wall s, CPU s of this process, room CPU s,
    steal s), from Gatherer.start() until it publishes the session as verified."""
    folder = work / f"ours-r{rnd}"
    folder.mkdir()
    sid = f"bench-gather-r{rnd}"
    http_args: dict[str, Any] = {} if read_bufsize is None else {"read_bufsize": read_bufsize}
    async with Database(folder / "coordinator.sqlite3") as db, \
            aiohttp.ClientSession(**http_args) as http:
        await db.add_location(ROOM_ID, name=ROOM_NAME, host="127.0.0.1", port=room.port,
                              api_path=c.API_PREFIX)
        await db.set_location_secret(ROOM_ID, room.secret)
        now = datetime.now(UTC)
        await db.create_sessions([NewSession(
            id=sid, kind="single", started_by=None, start_at_utc=now, created_utc=now,
            room_ids=(ROOM_ID,), state="stopped", location_state="stopped",
            name="Bench gather")])
        await db.update_session_location(sid, ROOM_ID, recording_id=recording_id)
        client = EdgeClient(http, "127.0.0.1", room.port, ROOM_ID, room.secret)
        verified = asyncio.Event()

        def publish(kind: str, **fields: Any) -> None:
            if fields.get("session_id") == sid and fields.get("state") == "verified":
                verified.set()

        async def describe(s: StoredSession) -> dict[str, Any]:
            return {"format": "roomrec.session/1", "id": s.id, "name": s.name}

        defaults = GatherConfig()
        gatherer = Gatherer(db, FolderStorage(folder / "central"), lambda _: client,
                            lambda _: ROOM_NAME, describe,
                            GatherSettings(per_room=per_room, poll_s=defaults.poll_s),
                            publish)
        await client.health()  # a running coordinator talks to its rooms all the time
        edge0, steal0 = room.cpu_s(), steal_s()
        cpu0 = time.process_time()
        t0 = time.monotonic()
        try:
            await gatherer.start()
            async with asyncio.timeout(3600):
                await verified.wait()
            wall = time.monotonic() - t0
            cpu = time.process_time() - cpu0
            edge_cpu, steal = room.cpu_s() - edge0, steal_s() - steal0
        finally:
            await gatherer.close()
        rows = await gatherer.store.files(sid)
    # What the gatherer says it stored must be there (its own read-back checked sha256).
    if len(rows) != len(segs) or any(r.verified_utc is None or r.key is None for r in rows):
        raise RuntimeError(f"ours: {len(rows)} files noted, not all verified")
    for r in rows:
        assert r.key is not None
        if (folder / "central" / r.key).stat().st_size != r.size:
            raise RuntimeError(f"ours: {r.key} has the wrong size")
    return wall, cpu, edge_cpu, steal


def run_ours(room: Room, recording_id: str, segs: Sequence[SegmentFile], work: Path,
             rnd: int, first: bool, per_room: int, read_bufsize: int | None) -> Run:
    async def cancellable() -> tuple[float, float, float, float]:
        """Ctrl-C or SIGTERM cancels the run, so the gatherer and database close."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await gather_once(room, recording_id, segs, work, rnd, per_room,
                                 read_bufsize)

    try:
        wall, cpu, edge_cpu, steal = asyncio.run(cancellable())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        trap_signals()  # the loop's handlers are gone with it
    return Run("ours", rnd, first, sum(s.size for s in segs), wall, cpu, edge_cpu, steal)


# -- the run -----------------------------------------------------------------------------


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def trap_signals() -> None:
    """SIGTERM and SIGINT (even if inherited as ignored) clean up as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)


def steal_s() -> float:
    """CPU seconds stolen by the hypervisor so far, all CPUs (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def settle() -> None:
    """Every dirty page written out, then a moment of quiet before the next run."""
    os.sync()
    time.sleep(1.0)


def warm(segs: Sequence[SegmentFile]) -> None:
    """Read the sources once (untimed), so both tools find them in the page cache."""
    for s in segs:
        with s.path.open("rb") as f:
            while f.read(8 * MIB):
                pass


def fs_type(path: Path) -> str:
    """The filesystem type of `path`, from /proc/self/mounts (longest mount point)."""
    best, kind = "", "?"
    real = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) > len(best):
                best, kind = mnt, parts[2]
    return f"{kind} at {best}"


def patch(name: str, module: Any, value: int | None) -> str:
    """Set a module constant for this run (a tuning experiment); describes it."""
    current = int(vars(module)[name])
    if value is None or value == current:
        return f"{name}={current // 1024} KiB"
    vars(module)[name] = value
    return f"{name}={value // 1024} KiB (patched; code has {current // 1024} KiB)"


def row(r: Run) -> list[str]:
    return [str(r.round), "first" if r.first else "second", r.tool, f"{r.wall_s:.2f}",
            f"{r.mbps:.0f}", f"{r.cpu_s:.2f}", f"{r.cpu_per_gb:.2f}",
            f"{r.edge_cpu_s:.2f}",
            f"{r.sync_s:.2f}" if r.tool == "curl" else "-",
            f"{r.mbps_synced:.0f}" if r.tool == "curl" else f"{r.mbps:.0f}",
            f"{r.steal_s:.2f}"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gather", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--gib", type=float, default=2.0, help="recording size (default 2)")
    size.add_argument("--mib", type=int, help="recording size in MiB (for a quick run)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the order alternating "
                                                         "(default 3)")
    p.add_argument("--per-room", type=int, default=GatherConfig().per_room,
                   help="downloads at a time, ours and curl's (default: the coordinator's, "
                        "%(default)s)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()),
                   help="a temporary folder is made (and removed) in here; everything is "
                        "written in it, one filesystem (default %(default)s)")
    p.add_argument("--keep", action="store_true", help="leave the temporary folder")
    tune = p.add_argument_group("tuning experiments (ours only; patched in this process)")
    tune.add_argument("--segment-chunk-kib", type=int, help="coordinator.edges.SEGMENT_CHUNK")
    tune.add_argument("--write-block-kib", type=int, help="coordinator.gather.WRITE_BLOCK")
    tune.add_argument("--read-bufsize-kib", type=int,
                      help="aiohttp.ClientSession(read_bufsize=...) (default: aiohttp's)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.per_room < 1:
        p.error("--rounds and --per-room must be at least 1")
    total = args.mib * MIB if args.mib is not None else int(args.gib * 1024 * MIB)
    per_room: int = args.per_room
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = [
        patch("SEGMENT_CHUNK", edges_module,
              args.segment_chunk_kib * 1024 if args.segment_chunk_kib else None),
        patch("WRITE_BLOCK", gather_module,
              args.write_block_kib * 1024 if args.write_block_kib else None)]
    read_bufsize = args.read_bufsize_kib * 1024 if args.read_bufsize_kib else None
    settings.append(f"aiohttp read_bufsize={read_bufsize // 1024} KiB (patched)"
                    if read_bufsize else "aiohttp read_bufsize=default")

    args.work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.work).free
    if free < 2.2 * total:  # the source and one copy at a time, and some room
        print(f"not enough space in {args.work}: {free / GB:.1f} GB free, need about "
              f"{2.2 * total / GB:.1f} GB", file=sys.stderr)
        return 2
    trap_signals()
    work = Path(tempfile.mkdtemp(prefix="bench-gather-", dir=args.work))
    room: Room | None = None
    runs: list[Run] = []
    try:
        storage = work / "room-storage"
        storage.mkdir()
        print(f"work folder {work} ({fs_type(work)}); {os.cpu_count()} CPUs; "
              f"{shutil.disk_usage(work).free / GB:.0f} GB free", flush=True)
        t = time.monotonic()
        rid = make_recording(storage, ROOM_ID, total)
        print(f"fabricated recording {rid}: {total / MIB:.0f} MiB, 2 cameras, 64 MiB "
              f"segments, in {time.monotonic() - t:.1f} s", flush=True)
        room = Room(work, storage)
        room.pair()
        segs = room.segments(rid, storage)
        nbytes = sum(s.size for s in segs)
        assert nbytes == total
        idle0, t_idle = room.cpu_s(), time.monotonic()
        warm(segs)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t_idle)))
        idle = (room.cpu_s() - idle0) / (time.monotonic() - t_idle)
        print(f"room: python -m edge on port {room.port} (pid {room.child.pid}), "
              f"{len(segs)} segments, idle CPU {idle:.3f} cores", flush=True)
        print(f"curl: {CURL} --parallel --parallel-max {per_room} -K CONFIG (one url and "
              f"output per segment, bearer header), then `sync FILES DIR` timed apart")
        print(f"ours: Gatherer(per_room={per_room}) + FolderStorage + SQLite, in this "
              f"process; {', '.join(settings)}")
        print(f"load average {os.getloadavg()[0]:.2f}\n", flush=True)

        # Round 0 is a warm-up of each tool, not counted: the first large writes after
        # the recording was made run slower (on a VM, memory and disk blocks touched for
        # the first time), whichever tool does them.
        for rnd in range(args.rounds + 1):
            order = ["curl", "ours"] if rnd % 2 == 0 else ["ours", "curl"]
            for i, tool in enumerate(order):
                warm(segs)
                settle()
                if tool == "curl":
                    r = run_curl(room, segs, work, rnd, i == 0, per_room)
                    shutil.rmtree(work / f"curl-r{rnd}")
                else:
                    r = run_ours(room, rid, segs, work, rnd, i == 0, per_room, read_bufsize)
                    shutil.rmtree(work / f"ours-r{rnd}")
                if rnd > 0:
                    runs.append(r)
                extra = (f", then sync {r.sync_s:.2f} s ({r.mbps_synced:.0f} MB/s with it)"
                         if tool == "curl" else "")
                print(f"{'warm-up' if rnd == 0 else f'round {rnd}'} {tool:4s}: "
                      f"{r.wall_s:6.2f} s, {r.mbps:4.0f} MB/s{extra}; CPU {r.cpu_s:.2f} s "
                      f"({r.cpu_per_gb:.2f} s/GB), room CPU {r.edge_cpu_s:.2f} s, steal "
                      f"{r.steal_s:.2f} s", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if room is not None:
            room.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    ours = [r for r in runs if r.tool == "ours"]
    curl = [r for r in runs if r.tool == "curl"]
    ratios = [o.mbps / p.mbps for o, p in zip(ours, curl, strict=True)]
    ratios_synced = [o.mbps / p.mbps_synced for o, p in zip(ours, curl, strict=True)]
    med = statistics.median
    print(f"\nPer run ({nbytes / GB:.2f} GB, {len(segs)} files; MB/s and GB decimal). CPU: "
          "user+sys s of the tool; room CPU: the room's\nprocess meanwhile; sync s: curl's "
          "files fsynced afterwards; MB/s to disk: counting that sync (ours fsyncs\nitself); "
          "steal: CPU s the hypervisor gave to other guests meanwhile (noise when high)")
    print(fmt_table(["round", "order", "tool", "wall s", "MB/s", "CPU s", "CPU s/GB",
                     "room CPU s", "sync s", "MB/s to disk", "steal s"],
                    [row(r) for r in runs]))
    print(f"\nMedians over {len(ours)} rounds:")
    print(f"  ours: {med(o.mbps for o in ours):6.0f} MB/s, files fsynced, read back and "
          f"verified; CPU {med(o.cpu_per_gb for o in ours):.2f} s/GB (coordinator process), "
          f"room {med(o.edge_cpu_per_gb for o in ours):.2f} s/GB")
    print(f"  curl: {med(p.mbps for p in curl):6.0f} MB/s, files in the page cache "
          f"({med(p.mbps_synced for p in curl):.0f} MB/s counting the sync of its files); "
          f"CPU {med(p.cpu_per_gb for p in curl):.2f} s/GB (curl), room "
          f"{med(p.edge_cpu_per_gb for p in curl):.2f} s/GB")
    print("  ratio ours/curl per round: " + ", ".join(f"{x:.2f}" for x in ratios)
          + "; against curl + sync: " + ", ".join(f"{x:.2f}" for x in ratios_synced)
          + f" (median {med(ratios_synced):.2f})")
    print("Goal: ours/curl >= 0.80 (throughput, curl timed without its sync).")
    print(f"gather throughput ratio ours/curl: {med(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
