"""Taking up a recording after the recorder was killed (kill -9) or suspended."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edge.clock import WallClock
from edge.recorder.camera import SegmentOpened
from edge.recorder.manifest import MANIFEST_NAME, load
from edge.recorder.recover import whole_fragments_end
from edge.recorder.room import RoomRecorder
from edge.recorder.sources import make_source
from tests.edge.recorder.conftest import TEST_ROOM, RoomFactory
from tests.edge.recorder.test_recording import check_files
from tests.support.camera import RtspCamera, wait_until
from tests.support.media import fragment_times


def killed_recording(url: str, out: Path, tmp_path: Path) -> Path:
    """Run `roomrec-edge record` on a camera and kill -9 it mid-fragment-stream."""
    with (tmp_path / "cli.out").open("wb") as o, (tmp_path / "cli.err").open("wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "record", f"cam1={url}",
                                 "--out", str(out), "--seconds", "600"],
                                stdin=subprocess.DEVNULL, stdout=o, stderr=e)
    try:
        seg = out / "cam1" / "00001.mp4"
        assert wait_until(lambda: seg.exists() and len(fragment_times(seg)) >= 4, 30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    return out


async def test_resume_after_kill_continues_as_a_new_part(
        make_room: RoomFactory, rtsp_camera: Callable[..., RtspCamera], tmp_path: Path) -> None:
    cam = rtsp_camera(fps=30)
    folder = killed_recording(cam.url, tmp_path / "rec", tmp_path)
    # Cut the last fragment short, as a power loss in the middle of a write would.
    seg1 = folder / "cam1" / "00001.mp4"
    with seg1.open("ab") as f:
        f.write(b"\x00\x00\x10\x00moof" + b"\x00" * 100)
    before = load(folder / MANIFEST_NAME)
    assert before.state == "recording" and not before.cameras["cam1"].segments[0].complete

    room, watch = await make_room({"cam1": cam.url})
    m = await room.resume_recording(folder, max_interruption_s=60)
    assert m.parts == 2
    await watch.wait(SegmentOpened, timeout=15)
    m = await room.stop_recording()
    saved = load(folder / MANIFEST_NAME)
    assert saved == m and saved.state == "stopped"
    c = saved.cameras["cam1"]
    assert [(s.index, s.part, s.recovered) for s in c.segments] == [(1, 1, True), (2, 2, False)]
    assert seg1.stat().st_size == whole_fragments_end(seg1)  # the torn fragment is gone
    check_files(folder, saved)
    (gap,) = c.gaps
    assert gap.reason == "edge service restarted"
    s1, s2 = c.segments
    assert gap.end_utc is not None
    end1 = s1.first_frame_utc.timestamp() + (s1.duration_s or 0)
    assert abs(gap.start_utc.timestamp() - end1) < 0.05
    assert abs(gap.end_utc.timestamp() - s2.first_frame_utc.timestamp()) < 0.05


async def test_interrupted_too_long_ago_is_finished_not_resumed(
        make_room: RoomFactory, rtsp_camera: Callable[..., RtspCamera], tmp_path: Path) -> None:
    cam = rtsp_camera(fps=30)
    folder = killed_recording(cam.url, tmp_path / "rec", tmp_path)
    # The box comes back an hour later.
    later = WallClock(wall_ns=lambda: time.time_ns() + 3600 * 10**9)
    room = RoomRecorder({"cam1": make_source(cam.url)}, tmp_path / "rec", later, TEST_ROOM)
    await room.open()
    try:
        m = await room.resume_recording(folder, max_interruption_s=300)
    finally:
        await room.close()
    assert m.state == "stopped" and m.stop_reason == "interrupted"
    assert room.recording is None
    saved = load(folder / MANIFEST_NAME)
    assert saved.cameras["cam1"].segments[0].recovered
    check_files(folder, saved)


async def test_suspend_then_resume(make_room: RoomFactory, tmp_path: Path) -> None:
    storage = tmp_path / "rec"
    room, watch = await make_room({"p": "test:p?size=320x240&fps=15"}, storage=storage)
    m = await room.start_recording()
    await watch.wait(SegmentOpened)
    m = await room.suspend_recording()
    assert m.state == "recording" and m.suspended_utc is not None
    assert m.cameras["p"].segments[0].complete
    await room.close()

    again, watch2 = await make_room({"p": "test:p?size=320x240&fps=15"}, storage=storage)
    m = await again.resume_recording(storage / m.recording_id, max_interruption_s=60)
    await watch2.wait(SegmentOpened)
    m = await again.stop_recording()
    assert m.parts == 2 and m.state == "stopped"
    assert [s.part for s in m.cameras["p"].segments] == [1, 2]
    assert not any(s.recovered for s in m.cameras["p"].segments)
    check_files(storage / m.recording_id, m)
