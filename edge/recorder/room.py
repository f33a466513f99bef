"""The room's recorder: every camera of the room, one recording at a time.

The asyncio side of recording. It starts one `CameraRecorder` thread per camera when
the box starts (their connections stay open, feeding the pre-roll), turns the cameras'
events into the recording's manifest, guards the disk, and watches the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import __version__
from edge.clock import NS, WallClock, utc
from edge.errors import DiskSpaceError, NoCameras, RecordingConflict
from edge.recorder import disk
from edge.recorder.camera import (
    CameraRecorder,
    CameraSettings,
    Connected,
    Event,
    GapEnded,
    GapStarted,
    Lost,
    RecordingBegan,
    RecordingEnded,
    SegmentClosed,
    SegmentOpened,
    SegmentTimed,
    Snapshot,
    Start,
    Stop,
)
from edge.recorder.manifest import (
    MANIFEST_NAME,
    CameraRecord,
    ClockStep,
    Gap,
    Manifest,
    Segment,
    load,
    segment_id,
    stream_params,
    write_atomic,
)
from edge.recorder.recover import recover
from edge.recorder.sources import Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoomSettings:
    reserve_bytes: int = 512 * 1024 * 1024   # never recorded into
    expected_s: float = 3600.0                # a recording must fit this long to start
    assumed_bytes_per_s: float = 500_000.0    # per camera, until its rate is measured
    low_space_margin_s: float = 10.0          # stop when less than this much fits
    check_s: float = 1.0                      # disk and clock checks
    stop_timeout_s: float = 2.8               # cameras finalize within this on stop
    camera: CameraSettings = field(default_factory=CameraSettings)


def new_recording_id(now_ns: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_ns / NS)) + "-" + secrets.token_hex(3)


class _Rate:
    """Bytes per second of a counter, over the last ~10 s of samples."""

    def __init__(self) -> None:
        self._samples: deque[tuple[int, int]] = deque(maxlen=11)

    def sample(self, mono_ns: int, total: int) -> None:
        self._samples.append((mono_ns, total))

    def per_s(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / ((t1 - t0) / NS) if t1 > t0 else None


@dataclass
class _Active:
    manifest: Manifest
    directory: Path
    ended: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    final: bool = True  # False when suspended: the recording stays resumable


class RoomRecorder:
    def __init__(self, cameras: dict[str, Source], storage: Path, clock: WallClock,
                 settings: RoomSettings | None = None, room_id: str | None = None) -> None:
        self._sources = cameras
        self.storage = storage
        self._clock = clock
        self.settings = settings or RoomSettings()
        self.room_id = room_id
        self._cams: dict[str, CameraRecorder] = {}
        self._rates: dict[str, _Rate] = {name: _Rate() for name in cameras}
        self._active: _Active | None = None       # the recording that is running
        self._recs: dict[str, _Active] = {}      # every recording whose cameras have not all ended
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self._save_task: asyncio.Task[None] | None = None
        self._dirty: dict[str, _Active] = {}
        self.listeners: list[asyncio.Queue[Event]] = []

    # --- lifecycle ---

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.storage.mkdir(parents=True, exist_ok=True)
        for name, source in self._sources.items():
            cam = CameraRecorder(name, source, self._emit_threadsafe, self._clock,
                                 self.settings.camera)
            self._cams[name] = cam
            cam.start()
        self._monitor = asyncio.create_task(self._watch(), name="room-monitor")

    async def close(self) -> None:
        if self._active is not None:
            await self.stop_recording("shutdown")
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(c.close) for c in self._cams.values()))
        await self._flush()

    # --- the cameras' events ---

    def _emit_threadsafe(self, event: Event) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_event, event)

    def _on_event(self, ev: Event) -> None:  # noqa: PLR0912 - one branch per event kind
        for q in self.listeners:
            q.put_nowait(ev)
        if isinstance(ev, Connected | Lost | Snapshot):
            return
        act = self._recs.get(ev.recording_id)
        if act is None:
            return
        cam = act.manifest.cameras[ev.camera]
        if isinstance(ev, SegmentOpened):
            cam.state = "recording"
            cam.streams = [stream_params(s) for s in ev.streams]
            rel = str(ev.path.relative_to(act.directory))
            cam.segments.append(Segment(
                index=ev.index, id=segment_id(act.manifest.recording_id, rel),
                part=act.manifest.parts, file=rel, complete=False,
                first_frame_utc=utc(ev.first_frame_ns),
                time_source="rtcp" if ev.time_source == "rtcp" else "arrival"))
        elif isinstance(ev, SegmentTimed):
            for seg in cam.segments:
                if seg.index == ev.index:
                    for gap in cam.gaps:  # a gap that ended at this frame ends at its new time
                        if gap.end_utc == seg.first_frame_utc:
                            gap.end_utc = utc(ev.first_frame_ns)
                    seg.first_frame_utc = utc(ev.first_frame_ns)
                    seg.time_source = "rtcp"
            if cam.segments and cam.segments[0].index == ev.index:
                cam.first_frame_utc = utc(ev.first_frame_ns)
                requested = act.manifest.requested_start_utc.timestamp()
                cam.start_offset_s = round(requested - ev.first_frame_ns / NS, 6)
        elif isinstance(ev, SegmentClosed):
            for seg in cam.segments:
                if seg.index == ev.index:
                    seg.complete = ev.complete
                    seg.size = ev.size
                    seg.sha256 = ev.sha256
                    seg.frames = ev.frames
                    seg.duration_s = ev.duration_s
        elif isinstance(ev, RecordingBegan):
            cam.first_frame_utc = utc(ev.first_frame_ns)
            cam.start_offset_s = ev.offset_s
        elif isinstance(ev, GapStarted):
            cam.gaps.append(Gap(start_utc=utc(ev.at_ns), reason=ev.reason))
        elif isinstance(ev, GapEnded):
            if cam.gaps and cam.gaps[-1].end_utc is None:
                cam.gaps[-1].end_utc = utc(ev.at_ns)
        elif isinstance(ev, RecordingEnded):
            cam.state = "ended"
            cam.end_reason = ev.reason if not ev.detail else f"{ev.reason}: {ev.detail}"
            act.ended.add(ev.camera)
            if ev.reason == "disk_full" and act.manifest.state == "recording":
                self._spawn(self.stop_recording("disk_full"))
            if act.ended >= set(act.manifest.cameras):
                self._finish(act, ev.reason, ev.at_ns)
                self._recs.pop(act.manifest.recording_id, None)
        self._mark_dirty(act)

    def _finish(self, act: _Active, reason: str, at_ns: int) -> None:
        m = act.manifest
        if m.state == "recording" and act.final:
            m.state = "disk_full" if reason == "disk_full" else "stopped"
            m.stop_reason = m.stop_reason or reason
            m.stopped_utc = utc(at_ns)
        act.done.set()
        self._mark_dirty(act)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- recording ---

    @property
    def recording(self) -> Manifest | None:
        return self._active.manifest if self._active else None

    def rate_of(self, camera: str) -> float | None:
        """A camera's measured bytes per second, or None before it is known."""
        return self._rates[camera].per_s()

    def save_soon(self, manifest: Manifest) -> None:
        """Write a changed manifest of a running recording (e.g. segments released)."""
        act = self._recs.get(manifest.recording_id)
        if act is not None:
            self._mark_dirty(act)

    def bytes_per_s(self) -> float:
        total = 0.0
        for name in self._sources:
            rate = self._rates[name].per_s()
            total += rate if rate is not None else self.settings.assumed_bytes_per_s
        return total

    async def start_recording(self, recording_id: str | None = None, at_ns: int | None = None,
                              directory: Path | None = None, stop_after_s: float | None = None,
                              session_id: str | None = None, name: str | None = None,
                              started_by: str | None = None) -> Manifest:
        """Start recording every camera at wall-clock time `at_ns` (default: now)."""
        if self._active is not None:
            raise RecordingConflict(
                f"recording {self._active.manifest.recording_id} is already running")
        if not self._sources:
            raise NoCameras("this room has no cameras configured: add [[cameras]] to its "
                            "configuration")
        now = self._clock.now_ns()
        at = now if at_ns is None else at_ns
        free = await asyncio.to_thread(disk.free_bytes, self.storage)
        why = disk.refuse_start(free, self.settings.reserve_bytes, self.bytes_per_s(),
                                stop_after_s or self.settings.expected_s)
        if why:
            raise DiskSpaceError(why)
        rid = recording_id or new_recording_id(at)
        folder = directory or self.storage / rid
        if (folder / MANIFEST_NAME).exists():
            raise RecordingConflict(f"{folder} already holds a recording")
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        manifest = Manifest(
            recording_id=rid, room_id=self.room_id, session_id=session_id, name=name,
            started_by=started_by, software=f"roomrec-edge {__version__}",
            requested_start_utc=utc(at), created_utc=utc(now),
            cameras={n: CameraRecord(name=n, source=s.description)
                     for n, s in self._sources.items()},
        )
        self._active = self._recs[rid] = _Active(manifest, folder)
        await self._save_now(self._active)
        for cam_name, cam in self._cams.items():
            cam.send(Start(rid, folder / cam_name, at, stop_after_s=stop_after_s))
        log.info("recording %s started in %s", rid, folder)
        return manifest

    async def resume_recording(self, folder: Path, max_interruption_s: float) -> Manifest:
        """Take up a recording this service was running when it was killed or stopped.

        Files cut by the crash are closed at their last whole fragment. If the
        interruption was short, recording goes on in the same folder as a new part, with
        the gap recorded and numbering continued; otherwise the recording is finished
        as `interrupted`.
        """
        if self._active is not None:
            raise RecordingConflict("a recording is already running")
        m = await asyncio.to_thread(load, folder / MANIFEST_NAME)
        if m.state != "recording":
            raise RecordingConflict(f"recording {m.recording_id} is not running")
        now = self._clock.now_ns()
        last_ns = await asyncio.to_thread(self._recover_files, m, folder)
        since = m.suspended_utc.timestamp() * NS if m.suspended_utc else last_ns
        act = _Active(m, folder)
        if (now - since) / NS > max_interruption_s or set(m.cameras) != set(self._cams):
            m.state = "stopped"
            m.stop_reason = "interrupted"
            m.stopped_utc = utc(int(since))
            for cam in m.cameras.values():
                cam.state = "ended"
                cam.end_reason = cam.end_reason or "interrupted"
            await self._save_now(act)
            log.warning("recording %s was interrupted too long ago; finished", m.recording_id)
            return m
        m.parts += 1
        m.suspended_utc = None
        reason = "edge service restarted"
        for cam in m.cameras.values():
            cam.state = "recording"
            cam.end_reason = None
            if not cam.gaps or cam.gaps[-1].end_utc is not None:
                ends = [s.first_frame_utc.timestamp() + (s.duration_s or 0)
                        for s in cam.segments]
                start = utc(int(max(ends) * NS)) if ends else m.requested_start_utc
                cam.gaps.append(Gap(start_utc=start, reason=reason))
        self._active = self._recs[m.recording_id] = act
        await self._save_now(act)
        for name, recorder in self._cams.items():
            numbers = [s.index for s in m.cameras[name].segments]
            numbers += [int(p.stem) for p in (folder / name).glob("*.*") if p.stem.isdigit()]
            recorder.send(Start(m.recording_id, folder / name, now,
                           first_index=max(numbers, default=0) + 1, resume=True))
        log.info("recording %s resumed as part %d", m.recording_id, m.parts)
        return m

    @staticmethod
    def _recover_files(m: Manifest, folder: Path) -> int:
        """Close what a crash left open; returns the wall time (ns) recording last reached."""
        last = int(m.requested_start_utc.timestamp() * NS)
        for cam in m.cameras.values():
            for seg in cam.segments:
                if not seg.complete and (folder / seg.file).exists():
                    facts = recover(folder / seg.file)
                    seg.size, seg.sha256 = facts.size, facts.sha256
                    seg.frames, seg.duration_s = facts.frames, facts.duration_s
                    seg.complete = True
                    seg.recovered = True
                end = seg.first_frame_utc.timestamp() + (seg.duration_s or 0)
                last = max(last, int(end * NS))
        return last

    async def suspend_recording(self) -> Manifest:
        """Close every file but leave the recording to be resumed (service shutdown)."""
        act = self._active
        if act is None:
            raise RecordingConflict("no recording is running")
        act.manifest.suspended_utc = utc(self._clock.now_ns())
        return await self.stop_recording("suspended", final=False)

    async def stop_recording(self, reason: str = "stopped", final: bool = True) -> Manifest:
        """Stop every camera; returns once each has finalized its file (or the timeout)."""
        act = self._active
        if act is None:
            raise RecordingConflict("no recording is running")
        m = act.manifest
        if m.state == "recording" and final:
            m.stop_reason = reason
            if reason == "disk_full":
                m.state = "disk_full"
                m.stopped_utc = utc(self._clock.now_ns())
        for cam in self._cams.values():
            cam.send(Stop(m.recording_id, reason))
        act.final = final
        try:
            await asyncio.wait_for(act.done.wait(), self.settings.stop_timeout_s)
        except TimeoutError:
            late = sorted(set(m.cameras) - act.ended)
            log.warning("recording %s: cameras %s still finishing", m.recording_id, late)
            self._finish(act, reason, self._clock.now_ns())
        if self._active is act:
            self._active = None
        await self._flush()
        return m

    async def wait_ended(self, timeout: float | None = None) -> Manifest:
        """Wait until every camera of the running recording has ended by itself."""
        act = self._active
        if act is None:
            raise RecordingConflict("no recording is running")
        await asyncio.wait_for(act.done.wait(), timeout)
        if self._active is act:
            self._active = None
        await self._flush()
        return act.manifest

    # --- saving the manifest ---

    def _mark_dirty(self, act: _Active) -> None:
        self._dirty[act.manifest.recording_id] = act
        if self._save_task is None or self._save_task.done():
            self._save_task = asyncio.ensure_future(self._save_loop())

    async def _save_loop(self) -> None:
        while self._dirty:
            _, act = self._dirty.popitem()
            await self._save_now(act)

    @staticmethod
    async def _save_now(act: _Active) -> None:
        data = act.manifest.model_dump_json(indent=2)
        await asyncio.to_thread(write_atomic, act.directory / MANIFEST_NAME, data)

    async def _flush(self) -> None:
        while self._save_task is not None and not self._save_task.done():
            await self._save_task

    # --- watching disk and clock ---

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_s)
            try:
                await self._check()
            except Exception:
                log.exception("room check failed")

    async def _check(self) -> None:
        mono = self._clock.mono_ns()
        for name, cam in self._cams.items():
            self._rates[name].sample(mono, cam.bytes_in)
        step = self._clock.check()
        act = self._active
        if act is None:
            return
        if step is not None:
            act.manifest.clock_steps.append(
                ClockStep(at_utc=utc(self._clock.now_ns()), step_s=round(step / NS, 6)))
            self._mark_dirty(act)
        if act.manifest.state != "recording":
            return
        free = await asyncio.to_thread(disk.free_bytes, act.directory)
        if disk.must_stop(free, self.settings.reserve_bytes, self.bytes_per_s(),
                          self.settings.low_space_margin_s):
            log.error("recording %s: disk almost full (%d bytes free); stopping",
                      act.manifest.recording_id, free)
            await self.stop_recording("disk_full")

    # --- status ---

    def camera_states(self) -> dict[str, str]:
        return {name: cam.state for name, cam in self._cams.items()}

    def cameras(self) -> dict[str, CameraRecorder]:
        return dict(self._cams)
