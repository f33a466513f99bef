"""The edge service: what runs on every room box, under systemd, for years.

It ties the room's recorder to its HTTP API, its mDNS announcement, its record button
and LED, its pairing with a coordinator, and the release and retention of recordings.
Recording goes on whatever happens to API clients and the coordinator; a service
killed mid-recording resumes the same recording as a new part when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import ifaddr  # zeroconf's own dependency: the box's addresses
from aiohttp import web
from zeroconf import InterfaceChoice

from edge import __version__
from edge import contract as c
from edge.api import Forbidden, NotFound, NotReady, build
from edge.clock import NS, WallClock, ns_of, utc
from edge.clocksync import clock_sync_state
from edge.config import EdgeConfig
from edge.errors import EdgeError, RecordingConflict
from edge.eventhub import EventHub
from edge.gpio.pins import PinFactory
from edge.mdns import Announcer
from edge.pairing import Pairing
from edge.panel import (
    Button,
    LedDriver,
    PanelState,
    RecordingOwner,
    Refuse,
    Start,
    Stop,
    decide_press,
)
from edge.recorder import disk
from edge.recorder.camera import (
    CameraSettings,
    Connected,
    Event,
    Lost,
    RecordingEnded,
    SegmentClosed,
    Snapshot,
)
from edge.recorder.manifest import MANIFEST_NAME, Manifest, load, write_atomic
from edge.recorder.room import RoomRecorder, RoomSettings
from edge.recorder.sources import SourceTimeouts, make_source
from edge.redact import Redactor

log = logging.getLogger(__name__)

RESUME_WITHIN_S = 300.0  # a recording interrupted for longer is finished, not resumed


def _all_interfaces() -> InterfaceChoice:
    return InterfaceChoice.All


def _bits(bytes_per_s: float | None) -> float | None:
    return None if bytes_per_s is None else round(bytes_per_s * 8)


def local_addresses() -> list[str]:
    """This box's IPv4 addresses, loopback last (only when there is nothing else)."""
    found = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
             if isinstance(ip.ip, str)]
    outside = [a for a in found if not a.startswith("127.")]
    return outside or ["127.0.0.1"]


class EdgeService:
    def __init__(self, config: EdgeConfig, pins: PinFactory, *,
                 clock: WallClock | None = None,
                 clock_sync: Callable[[], c.ClockSync] = clock_sync_state,
                 redactor: Redactor | None = None, state_every_s: float = 0.25) -> None:
        self.config = config
        self._pins = pins
        self._state_every_s = state_every_s
        self._clock = clock or WallClock()
        self._clock_sync = clock_sync
        self._redactor = redactor or Redactor(config.secrets())
        rc = config.recorder
        self.room = RoomRecorder(
            {cam.name: make_source(cam.source_url(), SourceTimeouts(), self._redactor)
             for cam in config.cameras},
            config.storage.path, self._clock,
            RoomSettings(
                reserve_bytes=config.storage.reserve_mb * 1024 * 1024,
                expected_s=config.storage.expected_minutes * 60,
                camera=CameraSettings(segment_s=rc.segment_s, fragment_s=rc.fragment_s,
                                      sync_s=rc.sync_s, preroll_s=rc.preroll_s)),
            room_id=config.room.id)
        code = config.pairing.code.get_secret_value() if config.pairing.code else None
        self.pairing = Pairing(config.pairing.state_dir, code)
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self.events = EventHub(config.room.id)
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        self._snapshot_ready = asyncio.Condition()
        self._transition: c.RoomState | None = None  # starting/stopping while it happens
        self._button_waiters: list[asyncio.Future[None]] = []
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.port = 0
        self.app: web.Application | None = None
        self.button: Button | None = None
        self.led: LedDriver | None = None
        self.announcer: Announcer | None = None
        self._state: c.RoomState | None = None
        self._state_changed = asyncio.Event()
        self._manifest_cache: dict[Path, tuple[int, Manifest]] = {}
        # Held around every read-change-write of a finished recording's manifest: two
        # releases at once must not each write a copy without the other's change.
        self._manifest_lock = asyncio.Lock()

    # --- lifecycle ---

    async def start(self, serve: bool = True) -> None:
        """Start recording's connections, the panel, the API and the announcement.

        With `serve=False` the API is built (`self.app`) but not bound to a port, for a
        test client, and the room is not announced."""
        g = self.config.gpio
        self.led = LedDriver(self._pins.output(g.led_pin, label="led"),
                             None if g.tally_pin is None
                             else self._pins.output(g.tally_pin, label="tally"),
                             timings=self.config.led)
        self.button = Button(self._pins.input(g.button_pin, label="button"), g.debounce_ms,
                             on_press=self._on_press)
        self.led.start()
        self.button.start()
        self.room.listeners.append(self._events)
        await self.room.open()
        await self._resume_interrupted()
        self.app, _ = build(self, self.config.api.max_body_kb * 1024)
        self._tasks.append(asyncio.create_task(self._pump_events(), name="edge-events"))
        self._tasks.append(asyncio.create_task(self._janitor(), name="edge-janitor"))
        self._tasks.append(asyncio.create_task(self._watch_state(), name="edge-state"))
        if not serve:
            return
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.api.host, self.config.api.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the bound port, when 0 was asked
        log.info("room %s (%s) serving on port %d", self.config.room.id,
                 self.config.room.name, self.port)
        if self.config.announce.enabled:
            addresses = self.config.announce.interfaces or local_addresses()
            self.announcer = Announcer(self.config.room.id, self.config.room.name, self.port,
                                       __version__, addresses,
                                       self.config.announce.interfaces or _all_interfaces())
            await self.announcer.start(self.room_state())
            self._tasks.append(asyncio.create_task(self._announce_states(), name="edge-mdns"))

    async def stop(self) -> None:
        """A clean stop: the running recording is suspended (resumed when we come back)."""
        self._stopping = True
        if self.room.recording is not None:
            await self.room.suspend_recording()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.announcer is not None:
            await self.announcer.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.room.close()
        if self.button is not None:
            await self.button.close()
        if self.led is not None:
            await self.led.close()
        self._pins.close()

    # --- the panel: button and LED ---

    def panel_state(self, errors: list[str] | None = None) -> PanelState:
        errors = self.errors() if errors is None else errors
        state = self.room_state(errors)
        return PanelState(recording=self.room.recording is not None,
                          transitioning=state in ("starting", "stopping")
                          or self.pairing_pending(),
                          error=bool(errors), unsafe=self.unsafe())

    async def _watch_state(self) -> None:
        while True:
            try:
                errors = self.errors()  # statvfs and adjtimex: once a tick
                panel = self.panel_state(errors)
                if self.led is not None:
                    self.led.show(panel)
                    self.led.set_tally(panel.recording)
                state = self.room_state(errors)
                if state != self._state:
                    self._state = state
                    self._publish("room_state", state=state, errors=errors)
                    self._state_changed.set()
            except Exception:
                log.exception("state check failed")
            await asyncio.sleep(self._state_every_s)

    async def _announce_states(self) -> None:
        """Keep the mDNS TXT state current; an update takes ~0.5 s, so it runs apart."""
        while True:
            await self._state_changed.wait()
            self._state_changed.clear()
            if self.announcer is not None and self._state is not None:
                try:
                    await self.announcer.update(self._state)
                except Exception:
                    log.exception("mDNS update failed")

    async def _on_press(self, *_: object) -> None:
        if self.confirm_pairing():
            log.info("button press confirmed a pairing")
            return
        if self._transition is not None:
            return  # a start or stop is under way; a second press means nothing
        current = self._current()
        user = self.config.gpio.button_user
        action = decide_press(RecordingOwner.of(current) if current else None, user)
        try:
            if isinstance(action, Start):
                await self.start_recording(c.StartRequest(started_by=action.started_by),
                                           by_button=True)
            elif isinstance(action, Stop):
                await self.stop_recording(c.StopRequest(stopped_by=user))
            elif isinstance(action, Refuse):
                self._refuse(action.reason)
        except EdgeError as e:
            self._refuse(str(e))

    def _refuse(self, reason: str) -> None:
        log.warning("button press refused: %s", reason)
        if self.led is not None:
            self.led.flash_refused()
        self._publish("button_refused", reason=reason)

    async def _resume_interrupted(self) -> None:
        storage = self.config.storage.path
        candidates = []
        for path in storage.glob(f"*/{MANIFEST_NAME}"):
            try:
                m = await asyncio.to_thread(load, path)
            except (OSError, ValueError) as e:
                log.error("cannot read %s: %s", path, e)
                continue
            if m.state == "recording":
                candidates.append((m.created_utc, path.parent))
        candidates.sort()
        for i, (_, folder) in enumerate(candidates):
            latest = i == len(candidates) - 1
            await self.room.resume_recording(folder, RESUME_WITHIN_S if latest else -1.0)

    # --- recording ---

    def _current(self) -> c.CurrentRecording | None:
        m = self.room.recording
        if m is None:
            return None
        elapsed = time.time() - m.requested_start_utc.timestamp()
        return c.CurrentRecording(
            recording_id=m.recording_id, session_id=m.session_id, name=m.name,
            started_by=m.started_by, started_by_button=m.started_by_button,
            requested_start_utc=m.requested_start_utc, elapsed_s=round(max(0.0, elapsed), 3))

    async def start_recording(self, req: c.StartRequest,
                              by_button: bool = False) -> c.CurrentRecording:
        at = ns_of(req.start_at_utc) if req.start_at_utc else None
        self._transition = "starting"
        try:
            m = await self.room.start_recording(at_ns=at, session_id=req.session_id,
                                                name=req.name, started_by=req.started_by)
        finally:
            self._transition = None
        m.started_by_button = by_button
        self._publish("recording_started", recording_id=m.recording_id,
                      started_by=req.started_by, by_button=by_button)
        current = self._current()
        assert current is not None
        return current

    async def stop_recording(self, req: c.StopRequest) -> c.RecordingSummary:
        m = self.room.recording
        if m is None:
            raise RecordingConflict("no recording is running")
        if req.stopped_by != m.started_by and not req.technician:
            raise Forbidden(f"only {m.started_by} (who started it) or a Technician may stop "
                            "this session")
        self._transition = "stopping"
        try:
            m = await self.room.stop_recording("stopped")
        finally:
            self._transition = None
        self._publish("recording_stopped", recording_id=m.recording_id,
                      stopped_by=req.stopped_by)
        return self._summary(m)

    # --- status ---

    def room_state(self, errors: list[str] | None = None) -> c.RoomState:
        if self._transition is not None:
            return self._transition
        m = self.room.recording
        if m is not None:
            if any(cam.state == "waiting" for cam in m.cameras.values()):
                return "starting"
            return "recording"
        if self.errors() if errors is None else errors:
            return "error"
        return "idle"

    def errors(self) -> list[str]:
        out = [f"camera {n} lost" for n, s in self.room.camera_states().items() if s == "lost"]
        if not self.config.cameras:
            out.append("no cameras configured")
        if self.config.clock.require_sync and self._clock_sync() != "synchronised":
            out.append("clock not synchronised")
        if self._disk_low():
            out.append("disk low")
        return out

    def _disk(self) -> c.DiskStatus:
        free = disk.free_bytes(self.config.storage.path)
        reserve = self.room.settings.reserve_bytes
        runway = disk.runway_s(free, reserve, self.room.bytes_per_s())
        return c.DiskStatus(free_bytes=free, reserve_bytes=reserve,
                            runway_minutes=None if runway is None else round(runway / 60, 1))

    def _disk_low(self) -> bool:
        d = self._disk()
        return d.runway_minutes is not None and d.runway_minutes < 10

    def status(self) -> c.Status:
        cams = []
        recorders = self.room.cameras()
        rates = {n: self.room.rate_of(n) for n in recorders}
        for name, rec in recorders.items():
            state = rec.state if rec.state in ("connecting", "online", "lost", "closed") \
                else "connecting"
            cams.append(c.CameraStatus(
                name=name, state=state,  # type: ignore[arg-type]  # checked just above
                streams=[c.StreamStatus(kind=s.kind, codec=s.codec, width=s.width,
                                        height=s.height, fps=s.fps, sample_rate=s.sample_rate,
                                        channels=s.channels) for s in rec.streams],
                bitrate_bps=_bits(rates[name]),
                reconnects=max(0, rec.connects - 1)))
        return c.Status(
            room_id=self.config.room.id, name=self.config.room.name, version=__version__,
            state=self.room_state(), cameras=cams, recording=self._current(),
            disk=self._disk(), clock=self._clock_sync(), unsafe_to_unplug=self.unsafe(),
            paired=self.pairing.paired)

    def health(self) -> c.Health:
        return c.Health(ok=True, room_id=self.config.room.id, version=__version__)

    # --- recordings on the box ---

    def _manifests(self) -> dict[str, tuple[Path, Manifest]]:
        """Every recording on the box (the running one as it is in memory)."""
        found: dict[str, tuple[Path, Manifest]] = {}
        for path in self.config.storage.path.glob(f"*/{MANIFEST_NAME}"):
            try:
                mtime = path.stat().st_mtime_ns
                cached = self._manifest_cache.get(path)
                if cached is None or cached[0] != mtime:
                    cached = (mtime, load(path))  # parsed again only when it changed
                    self._manifest_cache[path] = cached
            except (OSError, ValueError):
                continue
            m = cached[1]
            found[m.recording_id] = (path.parent, m)
        live = self.room.recording
        if live is not None and live.recording_id in found:
            found[live.recording_id] = (found[live.recording_id][0], live)
        return found

    @staticmethod
    def _summary(m: Manifest) -> c.RecordingSummary:
        segs = [s for cam in m.cameras.values() for s in cam.segments]
        return c.RecordingSummary(
            recording_id=m.recording_id, session_id=m.session_id, name=m.name,
            started_by=m.started_by, state=m.state, requested_start_utc=m.requested_start_utc,
            stopped_utc=m.stopped_utc, segments=len(segs),
            bytes=sum(s.size or 0 for s in segs),
            released_segments=sum(1 for s in segs if s.released_utc is not None))

    def recordings(self) -> c.RecordingList:
        items = sorted((m for _, m in self._manifests().values()),
                       key=lambda m: m.created_utc, reverse=True)
        return c.RecordingList(recordings=[self._summary(m) for m in items])

    def manifest_json(self, recording_id: str) -> str:
        found = self._manifests().get(recording_id)
        if found is None:
            raise NotFound(f"no recording {recording_id!r} on this box")
        return found[1].model_dump_json(indent=2)

    def segment_file(self, segment_id: str) -> tuple[str, str]:
        for folder, m in self._manifests().values():
            for cam in m.cameras.values():
                for seg in cam.segments:
                    if seg.id != segment_id:
                        continue
                    if seg.deleted_utc is not None:
                        raise NotFound(f"segment {segment_id} was released and deleted")
                    if not seg.complete or seg.sha256 is None:
                        raise NotReady(f"segment {segment_id} is still being written")
                    return str(folder / seg.file), seg.sha256
        raise NotFound(f"no segment {segment_id!r} on this box")

    async def release(self, recording_id: str, req: c.ReleaseRequest) -> c.ReleaseResult:
        async with self._manifest_lock:
            found = self._manifests().get(recording_id)
            if found is None:
                raise NotFound(f"no recording {recording_id!r} on this box")
            folder, m = found
            wanted = set(req.segment_ids)
            released = []
            now = utc(self._clock.now_ns())
            for cam in m.cameras.values():
                for seg in cam.segments:
                    if seg.id in wanted and seg.complete:
                        seg.released_utc = seg.released_utc or now
                        released.append(seg.id)
            await self._save(folder, m)
        self._publish("released", recording_id=recording_id, segments=len(released))
        return c.ReleaseResult(released=sorted(released),
                               unknown=sorted(wanted - set(released)))

    async def _save(self, folder: Path, m: Manifest) -> None:
        if self.room.recording is m:
            self.room.save_soon(m)
        else:
            await asyncio.to_thread(write_atomic, folder / MANIFEST_NAME,
                                    m.model_dump_json(indent=2))

    def unsafe(self) -> bool:
        """Whether some recording on the box is not yet verified on central storage."""
        for _, m in self._manifests().values():
            for cam in m.cameras.values():
                if any(s.released_utc is None for s in cam.segments):
                    return True
        return False

    async def _janitor(self) -> None:
        """Delete released files once their retention is over; never anything else."""
        keep_s = self.config.retention.release_after_hours * 3600
        while True:
            try:
                await self.delete_released(keep_s)
            except Exception:
                log.exception("retention check failed")
            await asyncio.sleep(min(60.0, max(1.0, keep_s / 10)))

    async def delete_released(self, keep_s: float) -> int:
        async with self._manifest_lock:
            return await self._delete_released(keep_s)

    async def _delete_released(self, keep_s: float) -> int:
        now = self._clock.now_ns()
        deleted = 0
        for folder, m in self._manifests().values():
            changed = False
            for cam in m.cameras.values():
                for seg in cam.segments:
                    if seg.released_utc is None or seg.deleted_utc is not None:
                        continue
                    if (now / NS - seg.released_utc.timestamp()) < keep_s:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        await asyncio.to_thread((folder / seg.file).unlink)
                    seg.deleted_utc = utc(now)
                    changed = True
                    deleted += 1
            if changed:
                await self._save(folder, m)
        return deleted

    # --- snapshots ---

    async def snapshot(self, camera: str) -> bytes:
        rec = self.room.cameras().get(camera)
        if rec is None:
            raise NotFound(f"no camera {camera!r} in this room")
        asked = self._clock.now_ns()
        rec.want_snapshots(5.0)
        have = self._snapshots.get(camera)
        if have is not None and asked - have[0] < 2 * NS:
            return have[1]
        async with self._snapshot_ready:
            try:
                await asyncio.wait_for(self._snapshot_ready.wait_for(
                    lambda: camera in self._snapshots and self._snapshots[camera][0] >= asked),
                    timeout=5.0)
            except TimeoutError:
                raise NotReady(f"camera {camera} has no picture now ({rec.state})") from None
        return self._snapshots[camera][1]

    # --- pairing ---

    async def pair(self, req: c.PairRequest) -> c.PairResponse:
        secret = await self.pairing.pair(req.coordinator_id, req.code, self._wait_for_button)
        self._publish("paired", coordinator_id=req.coordinator_id)
        return c.PairResponse(room_id=self.config.room.id, secret=secret)

    async def _wait_for_button(self) -> bool:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._button_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, self.config.pairing.button_window_s)
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._button_waiters.remove(fut)

    def pairing_pending(self) -> bool:
        return bool(self._button_waiters)

    def confirm_pairing(self) -> bool:
        """A button press while a pairing waits: it confirms the pairing."""
        if not self._button_waiters:
            return False
        fut = self._button_waiters.pop(0)
        if not fut.done():
            fut.set_result(None)
        return True

    # --- events ---

    def subscribe(self) -> asyncio.Queue[c.Event]:
        return self.events.subscribe()

    def _publish(self, kind: str, **data: object) -> None:
        self.events.publish(kind, **data)

    async def _pump_events(self) -> None:
        while True:
            ev = await self._events.get()
            if isinstance(ev, Snapshot):
                async with self._snapshot_ready:
                    self._snapshots[ev.camera] = (ev.at_ns, ev.jpeg)
                    self._snapshot_ready.notify_all()
            elif isinstance(ev, Connected):
                self._publish("camera_state", camera=ev.camera, state="online")
            elif isinstance(ev, Lost):
                self._publish("camera_state", camera=ev.camera, state="lost",
                              reason=self._redactor.redact(ev.reason))
            elif isinstance(ev, SegmentClosed):
                self._publish("segment_closed", recording_id=ev.recording_id,
                              camera=ev.camera, index=ev.index, complete=ev.complete)
            elif isinstance(ev, RecordingEnded) and self.room.recording is None:
                self._publish("recording_ended", recording_id=ev.recording_id,
                              reason=ev.reason)
