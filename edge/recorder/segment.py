"""One segment file: crash-safe fragmented MP4, stream copy, hashed as it is written.

The file is a fragmented MP4 (an empty `moov`, then `moof`+`mdat` pairs): every
fragment on disk is playable on its own, so a file cut by kill -9 or a power loss plays
up to its last whole fragment. Fragments are cut every `fragment_s` seconds (0.5 by
default) whatever the camera's keyframe interval, each is handed to the kernel as soon
as it is cut, and the file is fdatasync'ed at least every `sync_s` seconds. Closing
writes the last fragment, fsyncs the file and then its directory: only then does the
segment count as complete.

Writes go through a non-seekable file object of our own, so the muxer can only append
and the sha256 is computed on the way out, without reading the file back.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream

from edge.recorder.sources import Source, StreamInfo

MP4_CODECS = frozenset({"h264", "hevc", "mjpeg", "aac", "mp3", "opus", "alac", "ac3", "eac3"})
MOV_CODECS = MP4_CODECS | {"pcm_alaw", "pcm_mulaw", "pcm_s16be", "pcm_s16le", "adpcm_g726"}


def container_for(streams: list[StreamInfo]) -> tuple[str, str, list[int]]:
    """(format, file suffix, positions of the streams it can carry) for these codecs."""
    if all(s.codec in MP4_CODECS for s in streams):
        return "mp4", ".mp4", list(range(len(streams)))
    kept = [i for i, s in enumerate(streams) if s.codec in MOV_CODECS]
    return "mov", ".mov", kept


def _frag_duration_us(fragment_s: float, fps: float | None) -> int:
    # The muxer cuts a fragment before the first packet at or past this duration, so a
    # fragment can hold one frame more than it: leave room for that frame.
    frame = 1 / fps if fps and fps > 0 else 1 / 15
    return int(max(0.1, fragment_s - frame) * 1_000_000)


class _AppendOnlyFile:
    """The file object the muxer writes into: append-only, hashing, syncable."""

    def __init__(self, path: Path) -> None:
        # O_EXCL: a recording never overwrites an existing file.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        total = 0
        while total < len(view):
            total += os.write(self._fd, view[total:])
        self._hash.update(view)
        self.size += total
        return total

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def abandon(self) -> None:
        """Close without syncing (the disk is full or the file is broken)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SegmentResult:
    path: Path
    size: int
    sha256: str
    frames: int
    duration_s: float
    complete: bool  # closed cleanly, synced; False when cut short by an error


class SegmentWriter:
    """Writes one segment; owned by its camera's thread from open to close."""

    def __init__(self, path_stem: Path, source: Source, fragment_s: float = 0.5,
                 sync_s: float = 2.0, mono_ns: int = 0) -> None:
        fmt, suffix, kept = container_for(source.streams)
        if 0 not in kept:
            raise ValueError(f"video codec {source.streams[0].codec} cannot be recorded")
        self.path = path_stem.with_suffix(suffix)
        self._file = _AppendOnlyFile(self.path)
        self._sync_ns = int(sync_s * 1e9)
        self._last_sync = mono_ns
        self._container: OutputContainer = av.open(
            self._file, mode="w", format=fmt,
            options={
                # empty_moov + fragments: valid after a crash. delay_moov lets the muxer
                # take H.264/HEVC parameter sets from the first keyframe when the camera
                # sent none in its SDP. default_base_moof: what players expect.
                "movflags": "empty_moov+delay_moov+frag_keyframe+default_base_moof",
                "frag_duration": str(_frag_duration_us(fragment_s, source.streams[0].fps)),
                "flush_packets": "1",
                "max_interleave_delta": str(int(fragment_s * 1_000_000)),
            },
        )
        # A stream whose codec this container cannot carry is left out of the file.
        self._out: dict[int, Stream] = source.add_output_streams(self._container, kept)
        self._time_bases = {i: source.streams[i].time_base for i in kept}
        self._origin: Fraction | None = None  # media time (s) of the first video packet
        self._first_dts = 0
        self._last_dts = 0
        self._last_duration = 0
        self.frames = 0
        self.video_tb = source.streams[0].time_base

    @property
    def size(self) -> int:
        return self._file.size

    @property
    def media_duration_s(self) -> float:
        if not self.frames:
            return 0.0
        return float((self._last_dts - self._first_dts + self._last_duration) * self.video_tb)

    def write(self, packet: Packet, stream: int, pts: int, dts: int, duration: int | None) -> None:
        """Write a packet with repaired timestamps (in its stream's time base)."""
        st = self._out.get(stream)
        if st is None:
            return
        tb = self._time_bases[stream]
        if self._origin is None:
            if stream != 0:
                return  # a segment starts on video
            self._origin = dts * tb
        shift = round(self._origin / tb)
        out_dts = dts - shift
        if out_dts < 0:
            return  # audio from before the first picture
        packet.stream = st
        packet.time_base = tb
        packet.dts = out_dts
        packet.pts = pts - shift
        self._container.mux(packet)
        if stream == 0:
            if not self.frames:
                self._first_dts = out_dts
            self.frames += 1
            self._last_dts = out_dts
            self._last_duration = duration or self._last_duration

    def maybe_sync(self, mono_ns: int) -> bool:
        if mono_ns - self._last_sync < self._sync_ns:
            return False
        self._file.sync()
        self._last_sync = mono_ns
        return True

    def close(self) -> SegmentResult:
        """Finish the file: last fragment, fsync file and directory."""
        complete = True
        try:
            self._container.close()
            self._file.close()
            fsync_dir(self.path.parent)
        except (OSError, av.error.FFmpegError):
            complete = False
            self._file.abandon()
        return self.result(complete)

    def abandon(self) -> SegmentResult:
        """Stop writing after an error (disk full); what is on disk stays valid."""
        try:
            self._container.close()
        except (OSError, av.error.FFmpegError):
            pass
        self._file.abandon()
        return self.result(False)

    def result(self, complete: bool) -> SegmentResult:
        return SegmentResult(path=self.path, size=self._file.size, sha256=self._file.hexdigest(),
                             frames=self.frames, duration_s=round(self.media_duration_s, 6),
                             complete=complete)
