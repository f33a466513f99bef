"""Closing the files of a recording whose service was killed mid-write.

A fragmented MP4 cut by kill -9 or a power loss is valid up to its last whole fragment;
a fragment being written at that moment may be cut short. Recovery cuts the file back
to the end of its last whole `moof`+`mdat` pair, syncs it, and measures what it holds,
so the manifest describes exactly what is on disk. Nothing is ever deleted.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import av

from edge.files import fsync_dir


def whole_fragments_end(path: Path) -> int:
    """Bytes from the start of the file to the end of its last whole fragment."""
    size = path.stat().st_size
    good = 0
    pos = 0
    pending_moof = False
    with path.open("rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            header = f.read(16)
            box_size, kind = struct.unpack_from(">I4s", header)
            if box_size == 1 and len(header) >= 16:
                box_size = struct.unpack_from(">Q", header, 8)[0]
            if box_size < 8 or pos + box_size > size:
                break  # cut short: the file ends inside this box
            pos += box_size
            if kind == b"moof":
                pending_moof = True
            elif kind == b"mdat" and pending_moof:
                pending_moof = False
                good = pos
            elif (kind in (b"ftyp", b"moov") and not pending_moof) or kind == b"mfra":
                good = pos
    return good


@dataclass(frozen=True)
class Facts:
    size: int
    sha256: str
    frames: int
    duration_s: float


def measure(path: Path) -> Facts:
    """Size, hash, video frames and media duration of a (recovered) segment."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    frames = 0
    first = last = None
    last_dur = 0
    try:
        with av.open(str(path)) as c:
            if c.streams.video:
                st = c.streams.video[0]
                for pkt in c.demux(st):
                    if pkt.size == 0 or pkt.dts is None:
                        continue
                    frames += 1
                    first = pkt.dts if first is None else first
                    last = pkt.dts
                    last_dur = pkt.duration or last_dur
                tb = st.time_base
                duration = 0.0
                if first is not None and last is not None and tb:
                    duration = float((last - first + last_dur) * tb)
            else:
                duration = 0.0
    except av.error.FFmpegError:
        duration = 0.0  # holds no whole fragment: an empty but harmless file
    return Facts(path.stat().st_size, h.hexdigest(), frames, round(duration, 6))


def recover(path: Path) -> Facts:
    """Cut the file to its last whole fragment, sync it, and measure it."""
    end = whole_fragments_end(path)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size != end:
            os.ftruncate(fd, end)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return measure(path)
