"""One camera: its thread, its connection, its pre-roll and its segment files.

The thread keeps the camera's connection open for as long as the box runs, so every
packet passes through the pre-roll buffer and a recording can start in the past. It owns
its PyAV containers (the source's input, the segments' outputs) from open to close and
talks to the asyncio side only through commands in and events out
(`loop.call_soon_threadsafe`). A lost camera is retried with capped backoff for ever;
a recording survives it as a closed segment, a gap, and a new segment.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av.error

from edge.clock import WallClock
from edge.errors import SourceError
from edge.recorder.backoff import Backoff
from edge.recorder.preroll import Item, PrerollBuffer
from edge.recorder.segment import SegmentWriter
from edge.recorder.snapshot import KeyframeSnapshotter
from edge.recorder.sources import Source, SourcePacket, StreamInfo
from edge.recorder.timestamps import Fixed, TimestampFixer

log = logging.getLogger(__name__)
NS = 1_000_000_000


@dataclass(frozen=True)
class CameraSettings:
    segment_s: float = 60.0       # a new file at the first keyframe after this long
    fragment_s: float = 0.5       # the most video a crash can lose from the page cache
    sync_s: float = 2.0           # the most video a power loss can lose
    preroll_s: float = 2.0        # at least this much (and two keyframe intervals) kept
    backoff_first_s: float = 0.5
    backoff_cap_s: float = 10.0
    jump_s: float = 2.0           # camera timestamp jumps larger than this are smoothed


# Events, from the camera thread to the asyncio side. Times are wall-clock ns (UTC).

@dataclass(frozen=True)
class Connected:
    camera: str
    streams: list[StreamInfo]
    at_ns: int


@dataclass(frozen=True)
class Lost:
    camera: str
    reason: str
    at_ns: int


@dataclass(frozen=True)
class SegmentOpened:
    camera: str
    recording_id: str
    index: int
    path: Path
    first_frame_ns: int
    time_source: str  # "rtcp" or "arrival"
    streams: list[StreamInfo]


@dataclass(frozen=True)
class SegmentTimed:
    """A segment's first frame re-timed from the camera's first RTCP sender report."""

    camera: str
    recording_id: str
    index: int
    first_frame_ns: int
    time_source: str


@dataclass(frozen=True)
class SegmentClosed:
    camera: str
    recording_id: str
    index: int
    path: Path
    size: int
    sha256: str
    frames: int
    duration_s: float
    complete: bool


@dataclass(frozen=True)
class Snapshot:
    """A JPEG of the camera's latest keyframe (made only while pictures are wanted)."""

    camera: str
    jpeg: bytes
    at_ns: int


@dataclass(frozen=True)
class RecordingBegan:
    """The first kept frame of a recording, `offset_s` before the requested time T."""

    camera: str
    recording_id: str
    requested_ns: int
    first_frame_ns: int
    offset_s: float


@dataclass(frozen=True)
class GapStarted:
    camera: str
    recording_id: str
    at_ns: int
    reason: str


@dataclass(frozen=True)
class GapEnded:
    camera: str
    recording_id: str
    at_ns: int


@dataclass(frozen=True)
class RecordingEnded:
    camera: str
    recording_id: str
    reason: str  # "stopped", "duration", "disk_full", "write_error", "shutdown"
    at_ns: int
    detail: str = ""


Event = (Connected | Lost | SegmentOpened | SegmentTimed | SegmentClosed | RecordingBegan
         | GapStarted | GapEnded | RecordingEnded | Snapshot)


# Commands, from the asyncio side to the camera thread.

@dataclass(frozen=True)
class Start:
    recording_id: str
    directory: Path          # this camera's folder of the recording
    at_ns: int               # start at the keyframe at or before this wall-clock time
    first_index: int = 1     # segment numbering continues across service restarts
    stop_after_s: float | None = None
    resume: bool = False     # a resumed recording: its gap is already open in the manifest


@dataclass(frozen=True)
class Stop:
    recording_id: str
    reason: str = "stopped"


@dataclass(frozen=True)
class _Close:
    pass


Command = Start | Stop | _Close


@dataclass(slots=True)
class _Pkt:
    sp: SourcePacket
    fixed: Fixed
    pts_ns: int


@dataclass
class _Recording:
    cmd: Start
    index: int
    pending_at_ns: int                    # start from the keyframe at or before this
    writer: SegmentWriter | None = None
    segment_index: int = 0
    segment_start_ns: int = 0             # media time of the segment's first packet
    segment_first_pts_ns: int = 0
    segment_timed: bool = False           # its first frame's time is from RTCP
    first_media_ns: int | None = None     # media time of the recording's first frame
    began: bool = False
    gap: bool = False
    stream_info: list[StreamInfo] = field(default_factory=list)


class CameraRecorder:
    """Runs one camera in its own named thread."""

    def __init__(self, name: str, source: Source, emit: Callable[[Event], None],
                 clock: WallClock, settings: CameraSettings | None = None) -> None:
        self.name = name
        self._source = source
        self._emit = emit
        self._clock = clock
        self._settings = settings or CameraSettings()
        self._cmds: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"camera-{name}", daemon=True)
        self._preroll: PrerollBuffer[_Pkt] = PrerollBuffer(self._settings.preroll_s)
        self._fixers: list[TimestampFixer[SourcePacket]] = []
        self._arrival_offset_ns: int | None = None  # wall - media, learnt on arrival
        self._offset_learn_until = 0
        self._rec: _Recording | None = None
        self._closing = False
        # Read by other threads; plain attributes written only by this thread.
        self.state = "connecting"
        self.streams: list[StreamInfo] = []
        self.bytes_in = 0
        self.last_packet_mono_ns = 0
        self.connects = 0
        self._snapshots_until = 0  # monotonic ns; written by any thread, read by this one
        self._snapshotter: KeyframeSnapshotter | None = None

    # --- the asyncio side's calls (any thread) ---

    def start(self) -> None:
        self._thread.start()

    def send(self, cmd: Start | Stop) -> None:
        self._cmds.put(cmd)

    def close(self, timeout: float = 5.0) -> None:
        self._cmds.put(_Close())
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def want_snapshots(self, seconds: float = 5.0) -> None:
        """Make a picture of every keyframe for the next `seconds`."""
        self._snapshots_until = self._clock.mono_ns() + int(seconds * NS)

    # --- the thread ---

    def _closing_now(self) -> bool:
        """Whether a close command has been handled (a call, so checks are not narrowed)."""
        return self._closing

    def _run(self) -> None:
        backoff = Backoff(self._settings.backoff_first_s, self._settings.backoff_cap_s)
        while not self._closing_now():
            self._drain_commands()
            if self._closing_now():
                break
            self.state = "connecting"
            try:
                self._source.open()
            except SourceError as e:
                self._on_lost(str(e))
                self._wait(backoff.next_delay())
                continue
            self._on_connected()
            reason = "camera closed the stream"
            try:
                for sp in self._source.packets():
                    self._drain_commands()
                    if self._closing_now():
                        break
                    self._on_packet(sp)
                    if self._preroll.span_ns() > NS:
                        backoff.reset()  # a connection that delivered: quick retry next time
            except SourceError as e:
                reason = str(e)
            except Exception as e:  # never let one camera's surprise kill its thread
                log.exception("camera %s: unexpected error", self.name)
                reason = f"internal error: {type(e).__name__}"
            finally:
                self._source.close()
            if self._closing_now():
                break
            self._on_lost(reason)
            self._wait(backoff.next_delay())
        if self._rec is not None:
            self._end_recording("shutdown")
        self.state = "closed"

    def _wait(self, seconds: float) -> None:
        """Sleep for the backoff, but act on commands at once."""
        deadline = self._clock.mono_ns() + int(seconds * NS)
        while not self._closing:
            left = deadline - self._clock.mono_ns()
            if left <= 0:
                return
            try:
                cmd = self._cmds.get(timeout=left / NS)
            except queue.Empty:
                return
            self._handle(cmd)

    def _drain_commands(self) -> None:
        while True:
            try:
                cmd = self._cmds.get_nowait()
            except queue.Empty:
                return
            self._handle(cmd)

    def _handle(self, cmd: Command) -> None:
        if isinstance(cmd, _Close):
            self._closing = True
        elif isinstance(cmd, Start):
            if self._rec is not None:
                log.warning("camera %s: start of %s ignored, %s is recording", self.name,
                            cmd.recording_id, self._rec.cmd.recording_id)
                return
            cmd.directory.mkdir(parents=True, exist_ok=True)
            self._rec = _Recording(cmd=cmd, index=cmd.first_index, pending_at_ns=cmd.at_ns,
                                   began=cmd.resume, gap=cmd.resume)
            if self.state != "online":
                self._gap_start(self._rec, cmd.at_ns, f"camera {self.state}")
            self._try_begin()
        elif (isinstance(cmd, Stop) and self._rec is not None
              and self._rec.cmd.recording_id == cmd.recording_id):
            self._end_recording(cmd.reason)

    # --- connection ---

    def _on_connected(self) -> None:
        self.connects += 1
        self.streams = list(self._source.streams)
        self._fixers = [TimestampFixer(s.time_base, jump_s=self._settings.jump_s)
                        for s in self.streams]
        self._preroll.clear()
        self._arrival_offset_ns = None
        self._offset_learn_until = self._clock.mono_ns() + 2 * NS
        self._snapshotter = None
        self.state = "online"
        self._emit(Connected(self.name, self.streams, self._clock.now_ns()))

    def _on_lost(self, reason: str) -> None:
        was = self.state
        self.state = "lost"
        now = self._clock.now_ns()
        rec = self._rec
        if rec is not None:
            if rec.writer is not None:
                last = self._preroll.latest()
                end = self._wall_of(last) if last is not None else now
                self._close_segment(rec)
                self._gap_start(rec, end, reason)
            elif not rec.gap:
                self._gap_start(rec, now, reason)
            rec.pending_at_ns = 0  # resume at the first keyframe after reconnecting
        self._preroll.clear()
        if was != "lost":
            log.warning("camera %s lost: %s", self.name, reason)
            self._emit(Lost(self.name, reason, now))

    # --- packets ---

    def _wall_of(self, item: Item[_Pkt]) -> int:
        p = item.payload
        if p.sp.ref_wall_ns is not None:
            return p.sp.ref_wall_ns
        return p.pts_ns + (self._arrival_offset_ns or 0)

    def _on_packet(self, packet: SourcePacket) -> None:
        self.bytes_in += packet.size
        self.last_packet_mono_ns = packet.arrival_ns
        if packet.key and packet.arrival_ns < self._snapshots_until:
            self._snapshot(packet)
        fixer = self._fixers[packet.stream]
        for sp, fixed in fixer.push(packet, packet.pts, packet.dts, packet.arrival_ns,
                                    packet.duration):
            self._on_fixed(sp, fixed)

    def _on_fixed(self, sp: SourcePacket, fixed: Fixed) -> None:
        tb = self.streams[sp.stream].time_base
        num, den = tb.numerator * NS, tb.denominator  # integer arithmetic per packet
        pts_ns = fixed.pts * num // den
        if sp.stream == 0 and (self._arrival_offset_ns is None
                               or sp.arrival_ns < self._offset_learn_until):
            # Map media time to wall time by the earliest-arriving packets (least delay).
            offset = self._clock.wall_at(sp.arrival_ns) - pts_ns
            if self._arrival_offset_ns is None or offset < self._arrival_offset_ns:
                self._arrival_offset_ns = offset
        item = Item(_Pkt(sp, fixed, pts_ns), key=sp.key, media_ns=fixed.dts * num // den,
                    size=sp.size)
        self._preroll.append(item)
        rec = self._rec
        if rec is None:
            return
        if rec.writer is None:
            self._try_begin()
            return
        self._write(rec, item)

    def _snapshot(self, packet: SourcePacket) -> None:
        info = self.streams[0]
        try:
            if self._snapshotter is None:
                self._snapshotter = KeyframeSnapshotter(info.codec, info.extradata)
            jpeg = self._snapshotter.picture(packet.packet)
        except (av.error.FFmpegError, ValueError) as e:
            log.debug("camera %s: no snapshot: %s", self.name, e)
            return
        if jpeg:
            self._emit(Snapshot(self.name, jpeg, self._clock.now_ns()))

    def _try_begin(self) -> None:
        rec = self._rec
        if rec is None or rec.writer is not None or self.state != "online":
            return
        latest = self._preroll.latest()
        if latest is None or self._wall_of(latest) < rec.pending_at_ns:
            return  # T is still ahead in the stream
        items = self._preroll.start_at(rec.pending_at_ns, self._wall_of)
        if not items:
            return  # no keyframe yet
        first_wall = self._wall_of(items[0])
        if not self._open_segment(rec, items[0], first_wall):
            return
        if rec.gap:
            rec.gap = False
            self._emit(GapEnded(self.name, rec.cmd.recording_id, first_wall))
        if not rec.began:
            rec.began = True
            rec.first_media_ns = items[0].media_ns
            self._emit(RecordingBegan(self.name, rec.cmd.recording_id, rec.cmd.at_ns, first_wall,
                                      round((rec.cmd.at_ns - first_wall) / NS, 6)))
        for it in items:
            self._write(rec, it)
            if self._current() is not rec or rec.writer is None:
                break  # the recording ended within the pre-roll (stop after N seconds)

    def _current(self) -> _Recording | None:
        return self._rec

    def _open_segment(self, rec: _Recording, first: Item[_Pkt], first_wall: int) -> bool:
        stem = rec.cmd.directory / f"{rec.index:05d}"
        try:
            writer = SegmentWriter(stem, self._source, self._settings.fragment_s,
                                   self._settings.sync_s, self._clock.mono_ns())
        except OSError as e:
            self._write_failed(rec, e)
            return False
        rec.writer = writer
        rec.segment_index = rec.index
        rec.index += 1
        rec.segment_start_ns = first.media_ns
        rec.segment_first_pts_ns = first.payload.pts_ns
        rec.segment_timed = first.payload.sp.ref_wall_ns is not None
        source = "rtcp" if rec.segment_timed else "arrival"
        self._emit(SegmentOpened(self.name, rec.cmd.recording_id, rec.segment_index,
                                 writer.path, first_wall, source, list(self.streams)))
        return True

    def _write(self, rec: _Recording, item: Item[_Pkt]) -> None:
        p = item.payload
        stop_after = rec.cmd.stop_after_s
        if (p.sp.stream == 0 and stop_after is not None and rec.first_media_ns is not None
                and item.media_ns - rec.first_media_ns >= stop_after * NS):
            self._end_recording("duration")
            return
        if (item.key and rec.writer is not None and rec.writer.frames
                and item.media_ns - rec.segment_start_ns >= self._settings.segment_s * NS):
            self._close_segment(rec)
            self._open_segment(rec, item, self._wall_of(item))
        writer = rec.writer
        if writer is None:
            return
        if not rec.segment_timed and p.sp.stream == 0 and p.sp.ref_wall_ns is not None:
            # The first sender report: time the segment's first frame by the camera's
            # clock, counting back along the (continuous, repaired) media timeline.
            rec.segment_timed = True
            first = p.sp.ref_wall_ns - (p.pts_ns - rec.segment_first_pts_ns)
            self._emit(SegmentTimed(self.name, rec.cmd.recording_id, rec.segment_index, first,
                                    "rtcp"))
        try:
            writer.write(p.sp.packet, p.sp.stream, p.fixed.pts, p.fixed.dts, p.sp.duration)
            writer.maybe_sync(self._clock.mono_ns())
        except OSError as e:  # ENOSPC, EIO: from our file object, through the muxer
            self._write_failed(rec, e)
        except av.error.FFmpegError as e:
            log.warning("camera %s: packet dropped by the muxer: %s", self.name, e)

    def _write_failed(self, rec: _Recording, e: Exception) -> None:
        full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        reason = "disk_full" if full else "write_error"
        log.error("camera %s: %s: %s", self.name, reason, e)
        if rec.writer is not None:
            result = rec.writer.abandon()
            rec.writer = None
            self._emit(SegmentClosed(self.name, rec.cmd.recording_id, rec.segment_index,
                                     result.path, result.size, result.sha256, result.frames,
                                     result.duration_s, result.complete))
        self._rec = None
        self._emit(RecordingEnded(self.name, rec.cmd.recording_id, reason, self._clock.now_ns(),
                                  str(e)))

    def _close_segment(self, rec: _Recording) -> None:
        writer = rec.writer
        if writer is None:
            return
        rec.writer = None
        result = writer.close()
        self._emit(SegmentClosed(self.name, rec.cmd.recording_id, rec.segment_index, result.path,
                                 result.size, result.sha256, result.frames, result.duration_s,
                                 result.complete))

    def _gap_start(self, rec: _Recording, at_ns: int, reason: str) -> None:
        if rec.gap:
            return
        rec.gap = True
        self._emit(GapStarted(self.name, rec.cmd.recording_id, at_ns, reason))

    def _end_recording(self, reason: str) -> None:
        rec = self._rec
        if rec is None:
            return
        self._close_segment(rec)
        now = self._clock.now_ns()
        if rec.gap:
            self._emit(GapEnded(self.name, rec.cmd.recording_id, now))
        self._rec = None
        self._emit(RecordingEnded(self.name, rec.cmd.recording_id, reason, now))
