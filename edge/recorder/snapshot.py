"""JPEG pictures of a camera, decoded from keyframes of the recorder's own connection.

The box never opens a second connection to a camera (cameras misbehave when a second
client logs in), and decoding only keyframes keeps the cost to one picture per keyframe
interval, and only while someone is looking.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import av.error
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame

MAX_WIDTH = 640


class KeyframeSnapshotter:
    """Owned by a camera's thread; one per connection."""

    def __init__(self, codec: str, extradata: bytes | None = None) -> None:
        ctx = av.CodecContext.create(codec, "r")
        assert isinstance(ctx, VideoCodecContext)
        if extradata:
            ctx.extradata = extradata
        ctx.thread_count = 1  # no frame threading: a picture out for each keyframe in
        self._decoder = ctx
        self._encoder: VideoCodecContext | None = None

    def picture(self, packet: Packet[Any]) -> bytes | None:
        """The keyframe `packet` as a JPEG, or None if it does not decode."""
        try:
            frames = self._decoder.decode(packet)
        except av.error.FFmpegError:
            return None
        if not frames:
            return None
        return self._jpeg(frames[-1])

    def _jpeg(self, frame: VideoFrame) -> bytes:
        width = min(MAX_WIDTH, frame.width) // 2 * 2
        height = max(2, round(frame.height * width / frame.width) // 2 * 2)
        small = frame.reformat(width=width, height=height, format="yuvj420p")
        enc = self._encoder
        if enc is None or enc.width != width or enc.height != height:
            created = av.CodecContext.create("mjpeg", "w")
            assert isinstance(created, VideoCodecContext)
            created.width, created.height = width, height
            created.pix_fmt = "yuvj420p"
            created.time_base = Fraction(1, 25)
            created.options = {"q:v": "5"}
            created.open()
            self._encoder = enc = created
        small.pts = None
        return b"".join(bytes(p) for p in enc.encode(small))
