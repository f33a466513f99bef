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

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream

from edge.files import fsync_dir
from edge.recorder.sources import Source, StreamInfo

MP4_CODECS = frozenset({"h264", "hevc", "mjpeg", "aac", "mp3", "opus", "alac", "ac3", "eac3"})
MOV_CODECS = MP4_CODECS | {"pcm_alaw", "pcm_mulaw", "pcm_s16be", "pcm_s16le", "adpcm_g726"}


def container_for(streams: list[StreamInfo]) -> tuple[str, str, list[int]]:
    """(format, file suffix, positions of the streams it can carry) for these codecs."""
    if all(s.codec in MP4_CODECS for s in streams):
        return "mp4", ".mp4", list(range(len(streams)))
    kept = [i for i, s in enumerate(streams) if s.codec in MOV_CODECS]
    return "mov", ".mov", kept


@dataclass
class _VideoCount:
    frames: int = 0
    first_dts: int = 0
    last_dts: int = 0
    last_duration: int = 0

    def add(self, dts: int, duration: int | None) -> None:
        if not self.frames:
            self.first_dts = dts
        self.frames += 1
        self.last_dts = dts
        self.last_duration = duration or self.last_duration

    def duration_s(self, tb: Fraction) -> float:
        if not self.frames:
            return 0.0
        return float((self.last_dts - self.first_dts + self.last_duration) * tb)


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
        self._failed: OSError | None = None

    def mark(self) -> tuple[int, Any]:
        return self.size, self._hash.copy()

    def rollback(self, mark: tuple[int, Any], error: OSError) -> None:
        """Cut the file back to `mark` (a fragment boundary) and refuse further writes."""
        self.size, self._hash = mark
        self._failed = error
        if self._fd >= 0:
            os.ftruncate(self._fd, self.size)

    def write(self, data: bytes | memoryview) -> int:
        if self._failed is not None:
            raise OSError(self._failed.errno, "segment closed after a write error")
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
        """Close after a write error: keep (and try to sync) what is on disk."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


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
        self._shifts: dict[int, int] = {}
        self._video = _VideoCount()
        self._durable = _VideoCount()  # what whole fragments on disk hold
        self.video_tb = source.streams[0].time_base

    @property
    def size(self) -> int:
        return self._file.size

    @property
    def media_duration_s(self) -> float:
        return self._video.duration_s(self.video_tb)

    @property
    def frames(self) -> int:
        return self._video.frames

    def write(self, packet: Packet[Any], stream: int, pts: int, dts: int,
              duration: int | None) -> None:
        """Write a packet with repaired timestamps (in its stream's time base)."""
        st = self._out.get(stream)
        if st is None:
            return
        tb = self._time_bases[stream]
        if self._origin is None:
            if stream != 0:
                return  # a segment starts on video
            self._origin = dts * tb
            # Each stream's timestamps move by the same media time, in its own units.
            self._shifts = {i: round(self._origin / t) for i, t in self._time_bases.items()}
        shift = self._shifts[stream]
        out_dts = dts - shift
        if out_dts < 0:
            return  # audio from before the first picture
        packet.stream = st
        packet.time_base = tb
        packet.dts = out_dts
        packet.pts = pts - shift
        # The muxer writes whole fragments (and flushes) within one call: if a write fails
        # (disk full), cut the file back to where it stood, the end of the last fragment,
        # so what is on disk stays a valid file.
        mark = self._file.mark()
        before = replace(self._video)
        try:
            self._container.mux(packet)
        except OSError as e:
            self._file.rollback(mark, e)
            self._video = self._durable
            raise
        if self._file.size != mark[0]:
            # Fragments went out: everything before this packet is on disk.
            self._durable = before
        if stream == 0:
            self._video.add(out_dts, duration)

    def maybe_sync(self, mono_ns: int) -> bool:
        if mono_ns - self._last_sync < self._sync_ns:
            return False
        self._file.sync()
        self._last_sync = mono_ns
        return True

    def close(self) -> SegmentResult:
        """Finish the file: last fragment, fsync file and directory."""
        mark = self._file.mark()
        try:
            self._container.close()
        except (OSError, av.error.FFmpegError) as e:
            err = e if isinstance(e, OSError) else OSError(errno.EIO, str(e))
            self._file.rollback(mark, err)  # the last fragment did not fit: drop it whole
            self._file.abandon()
            return self.result(False)
        try:
            self._file.close()
            fsync_dir(self.path.parent)
        except OSError:
            self._file.abandon()
            return self.result(False)
        return self.result(True)

    def abandon(self) -> SegmentResult:
        """Stop writing after an error (disk full); what is on disk stays valid."""
        with contextlib.suppress(OSError, av.error.FFmpegError):
            self._container.close()  # writes are refused by now; this frees the muxer
        self._file.abandon()
        return self.result(False)

    def result(self, complete: bool) -> SegmentResult:
        return SegmentResult(path=self.path, size=self._file.size, sha256=self._file.hexdigest(),
                             frames=self.frames, duration_s=round(self.media_duration_s, 6),
                             complete=complete)
