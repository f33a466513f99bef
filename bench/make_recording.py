"""A finished recording fabricated on a room box's storage, for benchmarks that move files.

THE FILES ARE RANDOM BYTES, NOT VIDEO. Everything else is as the edge recorder leaves a
recording that was stopped cleanly, so a real edge service (`edge.service.EdgeService`)
lists it, serves its segments and accepts their release:

    <storage>/<recording id>/manifest.json
    <storage>/<recording id>/<camera>/00001.mp4, 00002.mp4, ...

The manifest (`roomrec.manifest/1`) has state ``stopped``; every segment is complete with
its real size and sha256 (computed while writing), and an id made the recorder's way
(`edge.recorder.manifest.segment_id`). Timing is nominal: a full segment stands for 60 s
of 30 fps video, the recording ends now. Files are created with O_EXCL and fsynced, the
manifest written atomically, as the recorder does.

    python -m bench.make_recording STORAGE ROOM_ID TOTAL_MIB [--segment-mib 64] [--cameras 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path

from edge import __version__
from edge.clock import utc
from edge.contract import CameraRecord, Manifest, Segment, StreamParams
from edge.files import fsync_dir, write_atomic
from edge.recorder.manifest import MANIFEST_NAME, segment_id
from edge.recorder.room import new_recording_id

BLOCK = 1 << 20
SEGMENT_S = 60.0  # what a full segment stands for
FPS = 30.0
VIDEO = StreamParams(kind="video", codec="h264", time_base="1/90000", profile="High",
                     width=1920, height=1080, fps=FPS, pix_fmt="yuv420p")


def _write_random(path: Path, size: int) -> str:
    """Write `size` random bytes to a new file, synced; returns their sha256."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        left = size
        while left:
            block = os.urandom(min(BLOCK, left))
            h.update(block)
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view):]
            left -= len(block)
        os.fsync(fd)
    finally:
        os.close(fd)
    return h.hexdigest()


def _sizes(total: int, cameras: int, segment_bytes: int) -> list[list[int]]:
    """Each camera's segment sizes: the bytes shared out evenly, cut into segments."""
    sizes = []
    for i in range(cameras):
        share = total // cameras + (1 if i < total % cameras else 0)
        full, rest = divmod(share, segment_bytes)
        sizes.append([segment_bytes] * full + ([rest] if rest else []))
    return sizes


def make_recording(storage: Path, room_id: str, total_bytes: int,
                   segment_bytes: int = 64 << 20, cameras: int = 2) -> str:
    """Fabricate a stopped recording of `total_bytes` over `cameras` cameras in `storage`
    (a room box's storage folder); returns its recording id."""
    if total_bytes < cameras or segment_bytes <= 0 or cameras <= 0:
        raise ValueError("need at least one byte per camera and positive sizes")
    sizes = _sizes(total_bytes, cameras, segment_bytes)
    now_ns = time.time_ns()
    start_ns = now_ns - int(max(len(s) for s in sizes) * SEGMENT_S * 1e9)
    now, start = utc(now_ns), utc(start_ns)
    rid = new_recording_id(start_ns)
    folder = storage / rid
    folder.mkdir(parents=True)
    records = {}
    for c, camera_sizes in enumerate(sizes, start=1):
        name = f"cam{c}"
        (folder / name).mkdir()
        at = start
        segments = []
        for index, size in enumerate(camera_sizes, start=1):
            file = f"{name}/{index:05d}.mp4"
            sha256 = _write_random(folder / file, size)
            duration = round(SEGMENT_S * size / segment_bytes, 6)
            segments.append(Segment(
                index=index, id=segment_id(rid, file), file=file, complete=True, size=size,
                sha256=sha256, frames=round(duration * FPS), duration_s=duration,
                first_frame_utc=at, time_source="arrival"))
            at += timedelta(seconds=duration)
        fsync_dir(folder / name)
        records[name] = CameraRecord(
            name=name, source=f"bench:{name}", state="ended", end_reason="stopped",
            first_frame_utc=start, start_offset_s=0.0, streams=[VIDEO], segments=segments)
    manifest = Manifest(
        recording_id=rid, room_id=room_id, name="fabricated by bench.make_recording",
        started_by="bench", state="stopped", stop_reason="stopped",
        software=f"roomrec-edge {__version__}", requested_start_utc=start,
        created_utc=start, stopped_utc=now, cameras=records)
    write_atomic(folder / MANIFEST_NAME, manifest.model_dump_json(indent=2))
    fsync_dir(storage)
    return rid


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("storage", type=Path)
    ap.add_argument("room_id")
    ap.add_argument("total_mib", type=int)
    ap.add_argument("--segment-mib", type=int, default=64)
    ap.add_argument("--cameras", type=int, default=2)
    a = ap.parse_args()
    print(make_recording(a.storage, a.room_id, a.total_mib << 20, a.segment_mib << 20,
                         a.cameras))


if __name__ == "__main__":
    main()
