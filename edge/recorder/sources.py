"""Where a camera's packets come from: RTSP, V4L2 (USB) and a synthetic test pattern.

A source is opened and read by its camera's thread only. It yields compressed video
(and audio) packets with their arrival time; compressed input is passed through as it
is, raw pictures (a raw USB camera, the test pattern) are encoded to H.264 cheaply.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlsplit

import av
import av.error
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from edge import clockcode
from edge.errors import SourceError
from edge.redact import Redactor, strip_userinfo

Kind = Literal["video", "audio"]
RAW_CODECS = frozenset({"rawvideo", "wrapped_avframe"})
_PRFT = struct.Struct("<q")


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the manifest records about one stream; no secrets."""

    kind: Kind
    codec: str
    time_base: Fraction
    profile: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    pix_fmt: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    encoded_here: bool = False
    extradata: bytes | None = None


@dataclass(slots=True)
class SourcePacket:
    packet: Packet[Any]
    stream: int              # position in Source.streams
    key: bool                # a video keyframe
    pts: int | None
    dts: int | None
    duration: int | None
    arrival_ns: int          # monotonic clock
    ref_wall_ns: int | None  # capture wall clock from the camera's RTCP sender report
    size: int


@dataclass(frozen=True)
class SourceTimeouts:
    open_s: float = 5.0     # connecting, describing, first packets
    # No packet for this long: the camera is lost. FFmpeg's RTSP reader notices up to
    # twice this after the last packet, so 1.25 s keeps loss detection within 5 s and a
    # stop during a frozen camera within 3 s. Cameras send 5+ packets a second.
    silence_s: float = 1.25


class Source(Protocol):
    @property
    def streams(self) -> list[StreamInfo]: ...

    @property
    def description(self) -> str: ...

    def open(self) -> None: ...

    def packets(self) -> Iterator[SourcePacket]: ...

    def add_output_streams(self, out: OutputContainer, kept: list[int]) -> dict[int, Stream]:
        """Output streams for the source streams at positions `kept`."""
        ...

    def close(self) -> None: ...


def _video_info(st: VideoStream, encoded_here: bool = False) -> StreamInfo:
    ctx = st.codec_context
    rate = st.average_rate or st.guessed_rate
    return StreamInfo(
        kind="video", codec=ctx.name, time_base=st.time_base or Fraction(1, 90000),
        profile=ctx.profile, width=ctx.width or None, height=ctx.height or None,
        fps=round(float(rate), 3) if rate else None,
        pix_fmt=ctx.pix_fmt, encoded_here=encoded_here, extradata=ctx.extradata or None,
    )


def _ref_wall_ns(packet: Packet[Any]) -> int | None:
    # FFmpeg's RTSP demuxer attaches a producer reference time once the camera's
    # RTCP sender report has arrived: the capture wall clock of this packet, in µs.
    if not packet.has_sidedata("prft"):
        return None
    raw = bytes(packet.get_sidedata("prft"))
    if len(raw) < _PRFT.size:
        return None
    (wall_us,) = _PRFT.unpack_from(raw)
    return int(wall_us) * 1000 if wall_us > 0 else None


class H264Encoder:
    """Cheap H.264 for raw pictures: ultrafast, no B-frames, headers on every keyframe."""

    def __init__(self, width: int, height: int, time_base: Fraction, fps: float,
                 keyint: int, codec: str = "libx264", bitrate: int | None = None) -> None:
        ctx = av.CodecContext.create(codec, "w")
        assert isinstance(ctx, av.VideoCodecContext)
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = time_base
        ctx.framerate = Fraction(fps).limit_denominator(1001)
        ctx.gop_size = keyint
        ctx.max_b_frames = 0
        if bitrate:
            ctx.bit_rate = bitrate
        if codec == "libx264":
            ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
        ctx.open()
        self.ctx = ctx
        self.width = width
        self.height = height
        self.fps = fps
        self.time_base = time_base

    def encode(self, frame: VideoFrame | None) -> list[Packet[Any]]:
        return list(self.ctx.encode(frame))

    def info(self) -> StreamInfo:
        return StreamInfo(kind="video", codec="h264", time_base=self.time_base,
                          width=self.width, height=self.height, fps=self.fps,
                          pix_fmt="yuv420p", encoded_here=True)

    def add_output_stream(self, out: OutputContainer) -> Stream:
        st = out.add_mux_stream("h264", rate=Fraction(self.fps).limit_denominator(1001),
                                width=self.width, height=self.height)
        st.time_base = self.time_base
        return st


class DemuxSource:
    """A camera FFmpeg can open: RTSP (over TCP), V4L2 devices, lavfi graphs.

    Compressed video and audio are copied; raw video is encoded to H.264 here.
    """

    def __init__(self, url: str, fmt: str | None = None, options: dict[str, str] | None = None,
                 timeouts: SourceTimeouts | None = None, redactor: Redactor | None = None,
                 keyint: int = 30) -> None:
        self._url = url
        self._fmt = fmt
        self._options = dict(options or {})
        self._timeouts = timeouts or SourceTimeouts()
        self._redactor = redactor or Redactor()
        self._keyint = keyint
        self._container: InputContainer | None = None
        self._in_streams: list[Stream] = []
        self._infos: list[StreamInfo] = []
        self._encoder: H264Encoder | None = None
        self._rtsp = urlsplit(url).scheme.lower() in {"rtsp", "rtsps"}

    @property
    def streams(self) -> list[StreamInfo]:
        return self._infos

    @property
    def description(self) -> str:
        return strip_userinfo(self._url) if "://" in self._url else self._url

    def _open_options(self, fast: bool) -> dict[str, str]:
        opts = dict(self._options)
        if self._rtsp:
            opts.setdefault("rtsp_transport", "tcp")
            # FFmpeg's own socket timeout (µs) as a backstop to the read timeout.
            opts.setdefault("timeout", str(int(max(self._timeouts.open_s, 5.0) * 1_000_000)))
        if fast:
            opts.setdefault("analyzeduration", "500000")
            opts.setdefault("probesize", "262144")
            opts.setdefault("fpsprobesize", "0")
        return opts

    def _try_open(self, fast: bool) -> InputContainer:
        try:
            return av.open(self._url, mode="r", format=self._fmt,
                           options=self._open_options(fast),
                           timeout=(self._timeouts.open_s, self._timeouts.silence_s))
        except (av.error.FFmpegError, OSError) as e:
            raise SourceError(self._redactor.redact(f"cannot open {self.description}: {e}")) from e

    def open(self) -> None:
        self.close()
        container = self._try_open(fast=True)
        video = [s for s in container.streams.video if s.codec_context.name]
        if not video or not video[0].codec_context.width:
            # Fast open did not learn enough (no parameter sets in the SDP): probe fully.
            container.close()
            container = self._try_open(fast=False)
            video = list(container.streams.video)
        if not video:
            container.close()
            raise SourceError(f"{self.description} has no video stream")
        self._container = container
        v = video[0]
        self._in_streams = [v, *container.streams.audio]
        self._encoder = None
        if v.codec_context.name in RAW_CODECS:
            rate = v.average_rate or v.guessed_rate or Fraction(30)
            self._encoder = H264Encoder(v.codec_context.width, v.codec_context.height,
                                        v.time_base or Fraction(1, 1_000_000), float(rate),
                                        self._keyint)
            self._infos = [self._encoder.info()]
            self._in_streams = [v]  # raw capture devices carry no audio we keep
        else:
            self._infos = [_video_info(v)] + [
                StreamInfo(kind="audio", codec=a.codec_context.name,
                           time_base=a.time_base or Fraction(1, a.codec_context.sample_rate or 1),
                           profile=a.codec_context.profile,
                           sample_rate=a.codec_context.sample_rate or None,
                           channels=a.codec_context.channels or None)
                for a in container.streams.audio
            ]

    def packets(self) -> Iterator[SourcePacket]:
        container = self._container
        if container is None:
            raise SourceError("source is not open")
        index_of = {s.index: i for i, s in enumerate(self._in_streams)}
        try:
            for packet in container.demux(self._in_streams):
                arrival = time.monotonic_ns()
                if packet.size == 0:
                    continue  # demuxer flush packet
                pos = index_of.get(packet.stream_index)
                if pos is None:
                    continue
                if self._encoder is not None:
                    yield from self._encode(packet, arrival)
                    continue
                yield SourcePacket(
                    packet=packet, stream=pos, key=pos == 0 and packet.is_keyframe,
                    pts=packet.pts, dts=packet.dts, duration=packet.duration or None,
                    arrival_ns=arrival, ref_wall_ns=_ref_wall_ns(packet) if self._rtsp else None,
                    size=packet.size,
                )
        except (av.error.FFmpegError, OSError) as e:
            raise SourceError(self._redactor.redact(f"{self.description}: {e}")) from e

    def _encode(self, packet: Packet[Any], arrival: int) -> Iterator[SourcePacket]:
        assert self._encoder is not None
        for decoded in packet.decode():
            if not isinstance(decoded, VideoFrame):  # pragma: no cover - video stream only
                continue  # type: ignore[unreachable]  # decode() is typed by stream kind
            frame = decoded if decoded.format.name == "yuv420p" else decoded.reformat(
                format="yuv420p")
            frame.pict_type = av.video.frame.PictureType.NONE
            for out in self._encoder.encode(frame):
                yield SourcePacket(packet=out, stream=0, key=out.is_keyframe, pts=out.pts,
                                   dts=out.dts, duration=out.duration or None,
                                   arrival_ns=arrival, ref_wall_ns=None, size=out.size)

    def add_output_streams(self, out: OutputContainer, kept: list[int]) -> dict[int, Stream]:
        if self._encoder is not None:
            return {0: self._encoder.add_output_stream(out)}
        streams: dict[int, Stream] = {}
        for i in kept:
            st = self._in_streams[i]
            o = out.add_stream_from_template(st)
            o.time_base = st.time_base
            streams[i] = o
        return streams

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None


class SyntheticSource:
    """A test-pattern camera that needs no hardware: a moving bar and the painted clock.

    Pictures are made at real-time pace, stamped with their wall-clock time (see
    `edge.clockcode`), and encoded to H.264 like a raw USB camera's.
    """

    def __init__(self, width: int = 640, height: int = 360, fps: float = 15.0,
                 keyint: int | None = None, name: str = "test") -> None:
        if width % 2 or height % 2:
            raise ValueError("test pattern size must be even")
        self._w, self._h, self._fps = width, height, fps
        self._keyint = keyint or max(1, round(fps))
        self._name = name
        self._encoder: H264Encoder | None = None
        self._open = False

    @property
    def streams(self) -> list[StreamInfo]:
        return [self._encoder.info()] if self._encoder else []

    @property
    def description(self) -> str:
        return f"test:{self._name}?size={self._w}x{self._h}&fps={self._fps:g}"

    def open(self) -> None:
        self._encoder = H264Encoder(self._w, self._h, Fraction(1, 90000), self._fps, self._keyint,
                                    bitrate=max(200_000, self._w * self._h * 2))
        self._open = True

    def _frame(self, n: int, wall_ms: int) -> VideoFrame:
        frame = VideoFrame(self._w, self._h, "yuv420p")
        y = frame.planes[0]
        stride = y.line_size
        luma = bytearray((60 + (n * 3) % 120,)) * (stride * self._h)
        bar_x = (n * 8) % max(1, self._w - 32)
        bar = b"\xeb" * 32
        top = clockcode.code_height(self._w) + 4
        for row in range(top, self._h):
            start = row * stride + bar_x
            luma[start:start + 32] = bar
        clockcode.paint(luma, self._w, self._h, wall_ms, stride=stride)
        y.update(bytes(luma))
        for plane in frame.planes[1:]:
            plane.update(b"\x80" * plane.buffer_size)
        return frame

    def packets(self) -> Iterator[SourcePacket]:
        enc = self._encoder
        if enc is None or not self._open:
            raise SourceError("source is not open")
        period_ns = int(1e9 / self._fps)
        ticks = int(Fraction(90000) / Fraction(self._fps).limit_denominator(1001))
        start = time.monotonic_ns()
        n = 0
        while self._open:
            due = start + n * period_ns
            now = time.monotonic_ns()
            if due > now:
                time.sleep((due - now) / 1e9)
            elif now - due > period_ns * 2:
                # Fell behind (a paused thread): skip ahead instead of bursting.
                n += (now - due) // period_ns
                continue
            frame = self._frame(n, time.time_ns() // 1_000_000)
            frame.pts = n * ticks
            frame.time_base = Fraction(1, 90000)
            for out in enc.encode(frame):
                yield SourcePacket(packet=out, stream=0, key=out.is_keyframe, pts=out.pts,
                                   dts=out.dts, duration=ticks, arrival_ns=time.monotonic_ns(),
                                   ref_wall_ns=None, size=out.size)
            n += 1

    def add_output_streams(self, out: OutputContainer, kept: list[int]) -> dict[int, Stream]:
        assert self._encoder is not None
        return {0: self._encoder.add_output_stream(out)}

    def close(self) -> None:
        self._open = False
        self._encoder = None


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def make_source(url: str, timeouts: SourceTimeouts | None = None,
                redactor: Redactor | None = None) -> Source:
    """A source for a camera URL.

    - ``rtsp://[user:pass@]host[:port]/path``: an IP camera, over TCP.
    - ``/dev/videoN`` or ``v4l2:///dev/videoN?input_format=mjpeg&video_size=1280x720&framerate=30``:
      a USB camera; compressed formats are copied, raw formats encoded to H.264.
    - ``test:NAME?size=640x360&fps=15&keyint=15``: the synthetic test pattern.
    - ``lavfi:GRAPH``: an FFmpeg filter graph as a raw camera (for tests), e.g.
      ``lavfi:testsrc2=size=320x240:rate=15,realtime``.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in {"rtsp", "rtsps"}:
        return DemuxSource(url, timeouts=timeouts, redactor=redactor)
    if scheme == "test":
        q = dict(parse_qsl(parts.query))
        w, h = parse_size(q.get("size", "640x360"))
        fps = float(q.get("fps", "15"))
        keyint = int(q["keyint"]) if "keyint" in q else None
        return SyntheticSource(w, h, fps, keyint, name=parts.path or "test")
    if scheme == "v4l2" or url.startswith("/dev/video"):
        device = parts.path if scheme == "v4l2" else url
        opts = dict(parse_qsl(parts.query)) if scheme == "v4l2" else {}
        fps = float(opts.get("framerate", "30"))
        return DemuxSource(device, fmt="v4l2", options=opts, timeouts=timeouts,
                           redactor=redactor, keyint=max(1, round(fps)))
    if scheme == "lavfi":
        graph = url.partition(":")[2]
        return DemuxSource(graph, fmt="lavfi", timeouts=timeouts, redactor=redactor)
    raise SourceError(f"unsupported camera URL {strip_userinfo(url)!r} "
                      "(use rtsp://, v4l2://, /dev/videoN, test: or lavfi:)")
