"""The recorder against real RTSP test cameras, with every file checked by ffprobe."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from av.container import OutputContainer
from av.stream import Stream

from edge.clock import WallClock
from edge.errors import DiskSpaceError
from edge.recorder.camera import (
    Connected,
    GapEnded,
    Lost,
    RecordingBegan,
    SegmentClosed,
    SegmentOpened,
)
from edge.recorder.manifest import MANIFEST_NAME, Manifest, load
from edge.recorder.room import RoomRecorder
from edge.recorder.sources import Source, SourcePacket, make_source
from tests.edge.recorder.conftest import TEST_ROOM, RoomFactory, eventually
from tests.support.camera import RtspCamera
from tests.support.media import fragment_times, painted_times, probe

CameraFactory = Callable[..., RtspCamera]


def check_files(folder: Path, manifest: Manifest) -> None:
    """Every segment in the manifest exists, plays, and matches its size and sha256."""
    for cam in manifest.cameras.values():
        for seg in cam.segments:
            path = folder / seg.file
            data = path.read_bytes()
            assert seg.complete, f"{seg.file} not complete"
            assert seg.size == len(data)
            assert seg.sha256 == hashlib.sha256(data).hexdigest()
            p = probe(path)
            assert p.errors == "", f"{seg.file}: {p.errors}"
            assert p.keyframe_first, f"{seg.file} does not start on a keyframe"
            assert p.dts_increasing
            assert p.video_packets == seg.frames


async def test_records_stream_copy_with_audio(make_room: RoomFactory,
                                              rtsp_camera: CameraFactory) -> None:
    cam = rtsp_camera(width=640, height=360, fps=25, audio=True)
    room, watch = await make_room({"wide": cam.url})
    await watch.wait(Connected)
    m = await room.start_recording(stop_after_s=3)
    m = await room.wait_ended(timeout=20)
    folder = room.storage / m.recording_id
    assert load(folder / MANIFEST_NAME) == m
    assert m.state == "stopped"
    rec = m.cameras["wide"]
    assert [s.kind for s in rec.streams] == ["video", "audio"]
    assert rec.streams[0].codec == "h264" and not rec.streams[0].encoded_here
    check_files(folder, m)
    p = probe(folder / rec.segments[0].file)
    assert (p.video_codec, p.width, p.height, p.audio_codecs) == ("h264", 640, 360, ["aac"])
    # N seconds counted from the first kept frame.
    assert 2.9 <= p.video_duration_s <= 3.1
    assert rec.segments[0].frames is not None and 70 <= rec.segments[0].frames <= 78


async def test_segments_rotate_on_keyframes_and_fragments_stay_short(
        make_room: RoomFactory, rtsp_camera: CameraFactory) -> None:
    # A 2 s keyframe interval; fragments must still be at most 0.5 s.
    cam = rtsp_camera(fps=30, keyint=60)
    room, watch = await make_room({"c": cam.url}, camera={"segment_s": 3.0})
    await watch.wait(Connected)
    await room.start_recording(stop_after_s=9)
    m = await room.wait_ended(timeout=30)
    folder = room.storage / m.recording_id
    segs = m.cameras["c"].segments
    assert len(segs) >= 2
    assert [s.file for s in segs] == [f"c/{i:05d}.mp4" for i in range(1, len(segs) + 1)]
    check_files(folder, m)
    total = sum(s.duration_s or 0 for s in segs)
    assert 8.8 <= total <= 9.2
    for seg in segs:
        starts = fragment_times(folder / seg.file)
        assert len(starts) >= 2 * (seg.duration_s or 0) - 1
        longest = max(b - a for a, b in itertools.pairwise(starts))
        assert longest <= 0.505, f"{seg.file}: a fragment of {longest:.3f} s"  # RTP jitter
    # Segments follow each other without a hole: each starts where the last ended.
    for a, b in itertools.pairwise(segs):
        end_a = a.first_frame_utc.timestamp() + (a.duration_s or 0)
        assert abs(b.first_frame_utc.timestamp() - end_a) < 0.1


async def test_preroll_start_in_the_past(make_room: RoomFactory,
                                         rtsp_camera: CameraFactory) -> None:
    cam = rtsp_camera(fps=30, keyint=30)
    room, watch = await make_room({"c": cam.url}, camera={"preroll_s": 3.0})
    await watch.wait(Connected)
    await asyncio.sleep(4)  # let the pre-roll fill: this is the situation under test
    t_ns = time.time_ns() - 1_500_000_000  # the button was pressed 1.5 s ago
    await room.start_recording(at_ns=t_ns, stop_after_s=4)
    began = await watch.wait(RecordingBegan)
    m = await room.wait_ended(timeout=20)
    folder = room.storage / m.recording_id
    check_files(folder, m)
    rec = m.cameras["c"]
    # The file starts at the keyframe at or before T: at most one keyframe interval before.
    assert rec.start_offset_s is not None
    assert 0 <= rec.start_offset_s <= 1.0 + 0.05
    assert began.first_frame_ns <= t_ns
    first_painted = painted_times(folder / rec.segments[0].file, limit=1)[0][1]
    assert first_painted is not None
    t_ms = t_ns / 1e6
    assert t_ms - 1100 <= first_painted <= t_ms + 50
    # The manifest's first-frame time is the picture's capture time.
    assert rec.first_frame_utc is not None
    assert abs(rec.first_frame_utc.timestamp() * 1000 - first_painted) < 100


async def test_start_in_the_future_waits_for_it(make_room: RoomFactory,
                                                rtsp_camera: CameraFactory) -> None:
    cam = rtsp_camera(fps=30, keyint=15)
    room, watch = await make_room({"c": cam.url})
    await watch.wait(Connected)
    t_ns = time.time_ns() + 2_000_000_000
    await room.start_recording(at_ns=t_ns, stop_after_s=2)
    began = await watch.wait(RecordingBegan)
    assert time.time_ns() >= t_ns - 100_000_000  # nothing began before T
    assert 0 <= (t_ns - began.first_frame_ns) / 1e9 <= 0.5 + 0.05
    await room.wait_ended(timeout=20)


async def test_camera_lost_and_back_leaves_a_gap_not_a_hole(
        make_room: RoomFactory, rtsp_camera: CameraFactory) -> None:
    flaky = rtsp_camera(fps=30)
    steady = rtsp_camera(fps=30)
    room, watch = await make_room({"flaky": flaky.url, "steady": steady.url})
    await watch.wait(Connected, where=lambda e: e.camera == "flaky")
    await watch.wait(Connected, where=lambda e: e.camera == "steady")
    m = await room.start_recording()
    await watch.wait(SegmentOpened, where=lambda e: e.camera == "flaky")
    await asyncio.sleep(1.5)  # some recording before the camera dies
    killed = time.time_ns()
    flaky.kill()
    lost = await watch.wait(Lost, timeout=5, where=lambda e: e.camera == "flaky")
    assert (lost.at_ns - killed) / 1e9 < 1.0  # noticed at once on EOF
    await watch.wait(SegmentClosed, where=lambda e: e.camera == "flaky")
    flaky.restart()
    back = time.monotonic()
    await watch.wait(SegmentOpened, timeout=10, where=lambda e: e.camera == "flaky")
    # A retry is due within the backoff cap (2 s here), plus the camera's first keyframe.
    assert time.monotonic() - back < 4.5
    await watch.wait(GapEnded, where=lambda e: e.camera == "flaky")
    await asyncio.sleep(1.5)
    m = await room.stop_recording()
    folder = room.storage / m.recording_id
    check_files(folder, m)
    f = m.cameras["flaky"]
    assert len(f.segments) == 2
    assert len(f.gaps) == 1
    gap = f.gaps[0]
    assert gap.end_utc is not None and gap.start_utc < gap.end_utc
    assert "camera closed" in gap.reason or "Connection" in gap.reason or "End of" in gap.reason
    first_end = f.segments[0].first_frame_utc.timestamp() + (f.segments[0].duration_s or 0)
    assert abs(gap.start_utc.timestamp() - first_end) < 0.5
    assert abs(gap.end_utc.timestamp() - f.segments[1].first_frame_utc.timestamp()) < 0.2
    s = m.cameras["steady"]
    assert len(s.segments) == 1 and not s.gaps  # the other camera did not notice


async def test_frozen_camera_is_noticed_within_five_seconds(
        make_room: RoomFactory, rtsp_camera: CameraFactory) -> None:
    cam = rtsp_camera(fps=30)
    room, watch = await make_room({"c": cam.url})
    await watch.wait(Connected)
    await room.start_recording()
    await watch.wait(SegmentOpened)
    await asyncio.sleep(1)
    frozen = time.time_ns()
    cam.freeze()
    lost = await watch.wait(Lost, timeout=8)
    assert (lost.at_ns - frozen) / 1e9 <= 5.0
    await watch.wait(SegmentClosed)
    cam.thaw()
    await watch.wait(SegmentOpened, timeout=15)
    await asyncio.sleep(1)
    m = await room.stop_recording()
    check_files(room.storage / m.recording_id, m)
    c = m.cameras["c"]
    assert len(c.segments) == 2 and len(c.gaps) == 1
    assert c.gaps[0].end_utc is not None


async def test_stop_finalizes_within_three_seconds_even_when_frozen(
        make_room: RoomFactory, rtsp_camera: CameraFactory) -> None:
    cam = rtsp_camera(fps=30)
    room, watch = await make_room({"c": cam.url})
    await watch.wait(Connected)
    await room.start_recording()
    await watch.wait(SegmentOpened)
    await asyncio.sleep(1)
    cam.freeze()
    t0 = time.monotonic()
    m = await room.stop_recording()
    assert time.monotonic() - t0 < 3.0
    assert m.state == "stopped"
    assert m.cameras["c"].state == "ended"
    cam.thaw()
    check_files(room.storage / m.recording_id, m)


async def test_b_frames_and_no_audio_record_cleanly(make_room: RoomFactory,
                                                    rtsp_camera: CameraFactory) -> None:
    cam = rtsp_camera(fps=30, bframes=2, keyint=30)
    room, watch = await make_room({"c": cam.url})
    await watch.wait(Connected)
    await room.start_recording(stop_after_s=3)
    m = await room.wait_ended(timeout=20)
    check_files(room.storage / m.recording_id, m)


async def test_synthetic_and_raw_cameras_are_encoded_to_h264(make_room: RoomFactory) -> None:
    room, watch = await make_room({
        "pattern": "test:pattern?size=320x240&fps=15",
        "raw": "lavfi:testsrc2=size=320x240:rate=15,realtime",
    })
    await watch.wait(Connected, where=lambda e: e.camera == "pattern")
    await watch.wait(Connected, where=lambda e: e.camera == "raw")
    await room.start_recording(stop_after_s=2)
    m = await room.wait_ended(timeout=20)
    folder = room.storage / m.recording_id
    check_files(folder, m)
    for name in ("pattern", "raw"):
        assert m.cameras[name].streams[0].encoded_here
        assert probe(folder / m.cameras[name].segments[0].file).video_codec == "h264"
    # The synthetic camera paints its clock: the first picture is the first frame's time.
    painted = painted_times(folder / m.cameras["pattern"].segments[0].file, limit=1)[0][1]
    first = m.cameras["pattern"].first_frame_utc
    assert painted is not None and first is not None
    assert abs(first.timestamp() * 1000 - painted) < 150


async def test_offline_camera_at_start_is_a_gap_from_t(make_room: RoomFactory,
                                                       rtsp_camera: CameraFactory) -> None:
    cam = rtsp_camera(fps=30)
    port = cam.port
    cam.kill()
    room, watch = await make_room({"c": f"rtsp://127.0.0.1:{port}/cam"})
    await watch.wait(Lost)
    m = await room.start_recording()
    await asyncio.sleep(1)
    cam.restart()
    await watch.wait(SegmentOpened, timeout=10)
    await asyncio.sleep(1)
    m = await room.stop_recording()
    c = m.cameras["c"]
    assert len(c.gaps) == 1
    assert c.gaps[0].start_utc == m.requested_start_utc
    assert c.gaps[0].end_utc is not None
    assert c.start_offset_s is not None and c.start_offset_s < -0.9
    check_files(room.storage / m.recording_id, m)


async def test_refuses_to_start_without_space(make_room: RoomFactory, tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    room, watch = await make_room({"p": "test:p?size=320x240&fps=15"},
                                  reserve_bytes=free - 1_000_000, expected_s=3600)
    await watch.wait(Connected)
    with pytest.raises(DiskSpaceError, match="not enough free space"):
        await room.start_recording()
    assert room.recording is None
    assert not any((tmp_path / "rec").glob("*/manifest.json"))


class JumpySource:
    """A real RTSP camera whose timestamps misbehave the ways cameras' do.

    The packets are the camera's own; what a camera with a faulty clock would make FFmpeg
    hand us is injected at the demuxer boundary: a keyframe with no timestamps, repeated
    dts, a jump an hour forward and one 20 s back.
    """

    def __init__(self, inner: Source) -> None:
        self._inner = inner
        self.streams = inner.streams
        self.description = inner.description
        self.shift = 0

    def open(self) -> None:
        self._inner.open()
        self.streams = self._inner.streams

    def packets(self) -> Iterator[SourcePacket]:
        tick = int(1 / (self.streams[0].time_base * 30))
        for n, sp in enumerate(self._inner.packets()):
            if sp.stream != 0:
                continue
            if n == 45:
                self.shift += 3600 * 30 * tick   # an hour forward
            if n == 90:
                self.shift -= 3620 * 30 * tick   # then 20 s before where it was
            pts = None if sp.pts is None else sp.pts + self.shift
            dts = None if sp.dts is None else sp.dts + self.shift
            if n in (60, 61, 62) and dts is not None:
                dts -= (n - 59) * tick           # repeated and backward dts
            if sp.key and n > 100 and n % 2:
                pts = dts = None                 # a keyframe without timestamps
            yield replace(sp, pts=pts, dts=dts, ref_wall_ns=None)

    def add_output_streams(self, out: OutputContainer, kept: list[int]) -> dict[int, Stream]:
        return self._inner.add_output_streams(out, kept)

    def close(self) -> None:
        self._inner.close()


async def test_timestamp_anomalies_never_stop_the_muxer(rtsp_camera: CameraFactory,
                                                        tmp_path: Path) -> None:
    cam = rtsp_camera(fps=30, keyint=15)
    room = RoomRecorder({"c": JumpySource(make_source(cam.url))}, tmp_path, WallClock(),
                        TEST_ROOM)
    await room.open()
    try:
        await room.start_recording(stop_after_s=6)
        m = await room.wait_ended(timeout=30)
    finally:
        await room.close()
    check_files(tmp_path / m.recording_id, m)
    seg = m.cameras["c"].segments[0]
    # The jumps were smoothed over: about 6 s of media, not an hour.
    assert seg.duration_s is not None and 5.5 <= seg.duration_s <= 6.5
    assert seg.frames is not None and 160 <= seg.frames <= 190


async def test_wall_clock_step_is_recorded_and_corrupts_nothing(tmp_path: Path) -> None:
    step = [0]
    clock = WallClock(wall_ns=lambda: time.time_ns() + step[0])
    room = RoomRecorder({"p": make_source("test:p?size=320x240&fps=15")}, tmp_path, clock,
                        TEST_ROOM)
    await room.open()
    try:
        m = await room.start_recording(stop_after_s=4)
        await eventually(lambda: bool(m.cameras["p"].segments))
        step[0] = 3600 * 10**9  # the system clock is set an hour ahead mid-recording
        await eventually(lambda: bool(m.clock_steps))
        m = await room.wait_ended(timeout=20)
    finally:
        await room.close()
    assert len(m.clock_steps) == 1
    assert abs(m.clock_steps[0].step_s - 3600) < 1
    seg = m.cameras["p"].segments[0]
    assert seg.duration_s is not None and 3.9 <= seg.duration_s <= 4.1
    assert not m.cameras["p"].gaps
    check_files(tmp_path / m.recording_id, m)
