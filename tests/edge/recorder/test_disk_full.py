"""Disk full on a real small filesystem (a tmpfs mounted by the test; needs root)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.recorder.camera import Connected, RecordingEnded, SegmentOpened
from edge.recorder.manifest import load
from tests.edge.recorder.conftest import RoomFactory, eventually
from tests.edge.recorder.test_recording import check_files
from tests.support.camera import RtspCamera, make_clip
from tests.support.media import probe

MB = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int) -> None:
    """Write a filler file so that about `leave` bytes stay free."""
    with (path / "filler").open("wb") as f:
        f.truncate(0)
        left = free(path) - leave
        chunk = b"\0" * MB
        while left > 0:
            f.write(chunk[: min(MB, left)])
            left -= MB
        f.flush()
        os.fsync(f.fileno())


async def test_guard_stops_cleanly_before_the_disk_is_full(
        small_fs: Path, make_room: RoomFactory, rtsp_camera: Callable[..., RtspCamera],
        clip_dir: Path) -> None:
    # About 6 Mbit/s: the small filesystem fills in seconds.
    cam = rtsp_camera(clip=make_clip(clip_dir, 1920, 1080, 30, 30, 4), fps=30)
    room, watch = await make_room({"c": cam.url}, storage=small_fs / "rec",
                                  reserve_bytes=2 * MB, expected_s=1, low_space_margin_s=2)
    await watch.wait(Connected)
    fill(small_fs, leave=6 * MB)
    m = await room.start_recording()
    ended = await watch.wait(RecordingEnded, timeout=60)
    assert ended.reason == "disk_full"
    folder = small_fs / "rec" / m.recording_id
    await eventually(lambda: load(folder / "manifest.json").state == "disk_full")
    saved = load(folder / "manifest.json")
    assert saved.stop_reason == "disk_full"
    check_files(folder, saved)  # every file complete, hashed and valid
    assert free(small_fs) > 0   # stopped before the filesystem was full


async def test_write_error_when_full_keeps_the_file_valid(
        small_fs: Path, make_room: RoomFactory, rtsp_camera: Callable[..., RtspCamera],
        clip_dir: Path) -> None:
    # The guard does not look (no checks), so the disk really fills up under the
    # recorder and the write fails with ENOSPC.
    cam = rtsp_camera(clip=make_clip(clip_dir, 1920, 1080, 30, 30, 4), fps=30)
    room, watch = await make_room({"c": cam.url}, storage=small_fs / "rec",
                                  reserve_bytes=0, expected_s=1, low_space_margin_s=0,
                                  check_s=3600)
    await watch.wait(Connected)
    m = await room.start_recording()
    await watch.wait(SegmentOpened)
    fill(small_fs, leave=3 * MB)
    ended = await watch.wait(RecordingEnded, timeout=60)
    assert ended.reason == "disk_full"
    await room.wait_ended(timeout=5) if room.recording else None
    folder = small_fs / "rec" / m.recording_id
    saved = load(folder / "manifest.json")
    assert saved.state == "disk_full"
    seg = saved.cameras["c"].segments[0]
    assert not seg.complete
    p = probe(folder / seg.file)
    assert p.errors == ""  # cut back to the last whole fragment: plays without an error
    assert p.video_packets == seg.frames and p.video_packets > 0
    assert hashlib.sha256((folder / seg.file).read_bytes()).hexdigest() == seg.sha256
