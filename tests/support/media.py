"""Checking recorded files the way a user would: ffprobe, and the pictures themselves."""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from av.video.frame import VideoFrame

from edge import clockcode


def ffprobe(path: Path, *extra: str) -> dict[str, Any]:
    """ffprobe's JSON for a file; fails the test if ffprobe finds the file broken."""
    res = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", *extra,
         str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert res.returncode == 0, f"ffprobe failed on {path}: {res.stderr}"
    out: dict[str, Any] = json.loads(res.stdout)
    return out


@dataclass(frozen=True)
class Probe:
    video_codec: str
    width: int
    height: int
    audio_codecs: list[str]
    video_packets: int
    keyframe_first: bool
    video_duration_s: float
    dts_increasing: bool
    errors: str


def probe(path: Path) -> Probe:
    """Streams, packet count and timing of a file, read by ffprobe (every packet)."""
    info = ffprobe(path, "-show_packets", "-show_entries",
                   "packet=stream_index,pts_time,dts_time,duration_time,flags")
    streams = info["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    vpk = [p for p in info.get("packets", []) if p["stream_index"] == video["index"]]
    dts = [float(p["dts_time"]) for p in vpk if p.get("dts_time") not in (None, "N/A")]
    dur = 0.0
    if vpk:
        pts = [float(p["pts_time"]) for p in vpk if p.get("pts_time") not in (None, "N/A")]
        last = float(vpk[-1].get("duration_time") or 0)
        dur = max(pts) + last - min(pts) if pts else 0.0
    res = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                         capture_output=True, text=True, check=False, timeout=120)
    return Probe(
        video_codec=video["codec_name"], width=video["width"], height=video["height"],
        audio_codecs=[s["codec_name"] for s in streams if s["codec_type"] == "audio"],
        video_packets=len(vpk), keyframe_first=bool(vpk) and "K" in vpk[0]["flags"],
        video_duration_s=dur,
        dts_increasing=all(b > a for a, b in itertools.pairwise(dts)),
        errors=res.stderr.strip(),
    )


def painted_ms(frame: VideoFrame) -> int | None:
    plane = frame.planes[0]
    return clockcode.read(bytes(plane), frame.width, frame.height, plane.line_size)


def painted_times(path: Path, limit: int | None = None) -> list[tuple[float, int | None]]:
    """(presentation time in s, painted wall clock in ms) of each decoded picture."""
    out: list[tuple[float, int | None]] = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            t = float(frame.time) if frame.time is not None else 0.0
            out.append((t, painted_ms(frame)))
            if limit is not None and len(out) >= limit:
                break
    return out


def fragment_times(path: Path) -> list[float]:  # noqa: PLR0912 - a box walk
    """The start (s) of every fragment of a fragmented MP4's first track, from its tfdt."""
    data = path.read_bytes()
    timescale = None
    starts: list[float] = []

    def boxes(buf: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
        found = []
        pos = start
        while pos + 8 <= end:
            size, kind = struct.unpack_from(">I4s", buf, pos)
            header = 8
            if size == 1:
                size = struct.unpack_from(">Q", buf, pos + 8)[0]
                header = 16
            if size < header or pos + size > end:
                break  # a cut-off box at the end of a crashed file
            found.append((kind, pos + header, pos + size))
            pos += size
        return found

    for kind, s, e in boxes(data, 0, len(data)):
        if kind == b"moov":
            for k2, s2, e2 in boxes(data, s, e):
                if k2 == b"trak" and timescale is None:
                    for k3, s3, e3 in boxes(data, s2, e2):
                        if k3 == b"mdia":
                            for k4, s4, _ in boxes(data, s3, e3):
                                if k4 == b"mdhd":
                                    version = data[s4]
                                    off = s4 + (20 if version == 1 else 12)
                                    timescale = struct.unpack_from(">I", data, off)[0]
        elif kind == b"moof":
            for k2, s2, e2 in boxes(data, s, e):
                if k2 != b"traf":
                    continue
                track_id = None
                for k3, s3, _ in boxes(data, s2, e2):
                    if k3 == b"tfhd":
                        track_id = struct.unpack_from(">I", data, s3 + 4)[0]
                    if k3 == b"tfdt" and track_id == 1 and timescale:
                        version = data[s3]
                        fmt = ">Q" if version == 1 else ">I"
                        starts.append(struct.unpack_from(fmt, data, s3 + 4)[0] / timescale)
    return starts
