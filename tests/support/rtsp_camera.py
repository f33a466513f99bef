"""A real RTSP test camera: GStreamer's RTSP server fed by a Python thread.

Runs as its own process under Debian's /usr/bin/python3 (python3-gi serves that Python
only), never inside the project's virtual environment; tests and benchmarks drive it
through tests/support/camera.py. Standard library and gi only.

Two picture sources:

* painted (default): raw I420 pictures made at real-time pace, each carrying its capture
  wall-clock time painted with edge/clockcode.py and a moving band, encoded by x264enc;
* file (--clip FILE): a pre-encoded H.264 Annex-B clip split into access units once and
  pushed in a loop forever at real-time pace, costing almost no CPU.

Buffers get explicit timestamps (an appsrc-fed RTSP media without them fails PLAY with
503): pts = n * frame duration on the camera's frame grid, offset so that it equals the
pipeline's running time when the frame is made. The RTCP sender reports map RTP time to
wall clock through that running time, so the wall clock a client derives for a frame
agrees with the time painted into it (to about a millisecond).

The media is shared by all clients. When the last client leaves it is torn down, and the
next client gets a new one; the feeder pushes to every media that is PLAYING.

When ready it prints one line of JSON to stdout, e.g.
{"ready": true, "port": 8554, "url": "rtsp://127.0.0.1:8554/cam"}; everything else goes to
stderr. SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gi  # type: ignore[import-not-found]  # Debian python3-gi, no stubs

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # type: ignore[import-not-found]  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from edge import clockcode  # noqa: E402

# Media factory role that may see and construct the camera's media.
_ROLE = "camera-user"


def log(msg: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # nobody reads stderr (parent gone)
        print(f"rtsp_camera: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# H.264 Annex-B clip handling (file mode)


def _nal_units(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every NAL unit in an Annex-B stream, start codes included."""
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        # A four-byte start code owns its leading zero.
        starts.append(i - 1 if i > 0 and data[i - 1] == 0 else i)
        i = data.find(b"\x00\x00\x01", i + 3)
    return [(s, starts[k + 1] if k + 1 < len(starts) else len(data))
            for k, s in enumerate(starts)]


def _payload_offset(data: bytes, start: int) -> int:
    """Index of the NAL header byte of the NAL unit beginning at `start`."""
    return data.index(b"\x00\x00\x01", start) + 3


def split_access_units(data: bytes) -> list[tuple[bytes, bool]]:
    """Split an Annex-B H.264 stream into (access unit, is IDR) in decoding order.

    A new access unit starts at an AUD, at SPS/PPS/SEI/prefix NAL units following the
    slices of the previous one, or at a slice whose first_mb_in_slice is 0.
    """
    aus: list[tuple[bytes, bool]] = []
    cur_start: int | None = None
    cur_has_vcl = False
    cur_idr = False
    for start, end in _nal_units(data):
        h = _payload_offset(data, start)
        if h >= end:
            continue
        nal_type = data[h] & 0x1F
        vcl = nal_type in (1, 5)
        # first_mb_in_slice is ue(v) first in the slice header: 0 codes as a leading '1' bit.
        first_slice = vcl and h + 1 < end and data[h + 1] & 0x80 != 0
        new_au = (
            nal_type == 9
            or (cur_has_vcl and nal_type in (6, 7, 8, 14, 15, 16, 17, 18))
            or (cur_has_vcl and first_slice)
        )
        if new_au and cur_start is not None:
            aus.append((data[cur_start:start], cur_idr))
            cur_start, cur_has_vcl, cur_idr = None, False, False
        if cur_start is None:
            cur_start = start
        if vcl:
            cur_has_vcl = True
            cur_idr = cur_idr or nal_type == 5
    if cur_start is not None and cur_has_vcl:
        aus.append((data[cur_start:], cur_idr))
    return [au for au in aus if au[0]]


# ---------------------------------------------------------------------------
# Picture sources


class PaintedSource:
    """Raw I420 pictures with the capture time painted in and a moving band."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        y_size = width * height
        c_size = (width // 2) * (height // 2)
        self.frame = bytearray(bytes((80,)) * y_size + bytes((128,)) * (2 * c_size))
        self._base = bytes(self.frame)
        top = clockcode.code_height(width)
        self._band_top = top + 4
        self._band_rows = max(2, height // 30)
        self._band_span = max(1, height - self._band_top - self._band_rows)
        self._band = bytes((200,)) * (self._band_rows * width)
        self._prev_band: int | None = None

    def make(self, n: int, ms: int) -> bytes:
        """The picture for frame `n` captured at `ms` (Unix milliseconds)."""
        w = self.width
        y = self.frame
        if self._prev_band is not None:  # undo last frame's band from the base picture
            start = self._prev_band * w
            end = start + self._band_rows * w
            y[start:end] = self._base[start:end]
        row = self._band_top + (n * 3) % self._band_span
        y[row * w : row * w + len(self._band)] = self._band
        self._prev_band = row
        clockcode.paint(y, w, self.height, ms)
        return bytes(y)


class ClipSource:
    """Access units of a pre-encoded H.264 clip, looped forever."""

    def __init__(self, path: Path) -> None:
        self.aus = split_access_units(path.read_bytes())
        if not self.aus:
            raise ValueError(f"{path}: no H.264 access units found")
        if not self.aus[0][1]:
            raise ValueError(f"{path}: the clip must start with an IDR picture")
        log(f"clip {path}: {len(self.aus)} access units, "
            f"{sum(1 for _, idr in self.aus if idr)} IDR")


# ---------------------------------------------------------------------------
# Feeding the media


@dataclass
class Target:
    """One prepared media's appsrc and its timestamp state."""

    media: GstRtspServer.RTSPMedia
    appsrc: Gst.Element
    need_idr: bool = True
    # pts = anchor_pts + (n - anchor_n) * duration: frame n of the camera's grid.
    anchor_n: int = -1
    anchor_pts: int = -1
    last_pts: int = -1
    pushed: int = 0
    gone: bool = False


class Feeder(threading.Thread):
    """Makes one picture per frame tick at real-time pace and pushes it to every media.

    Ticks are on a fixed grid (frame n due at t0 + n * duration, monotonic clock). It
    never runs ahead of real time; when it falls behind by more than a frame it skips to
    the current tick instead of bursting. With no media attached it makes nothing.
    """

    def __init__(self, fps: int, painted: PaintedSource | None, clip: ClipSource | None) -> None:
        super().__init__(name="feeder", daemon=True)
        self.fps = fps
        self.duration = Gst.SECOND // fps
        self.painted = painted
        self.clip = clip
        self.targets: list[Target] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.skipped = 0

    def add(self, target: Target) -> None:
        with self.lock:
            self.targets.append(target)
        self.wake.set()

    def remove(self, media: GstRtspServer.RTSPMedia) -> None:
        with self.lock:
            for t in self.targets:
                if t.media == media:
                    t.gone = True
            self.targets = [t for t in self.targets if not t.gone]

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        t0 = time.monotonic_ns()
        n = 0
        while not self.stopping.is_set():
            with self.lock:
                targets = list(self.targets)
            if not targets:
                # Idle: wait for a media, keeping the frame grid.
                self.wake.wait(0.1)
                self.wake.clear()
                n = max(n, (time.monotonic_ns() - t0) // self.duration + 1)
                continue
            due = t0 + n * self.duration
            now = time.monotonic_ns()
            if now < due:
                self.stopping.wait((due - now) / 1e9)
                if self.stopping.is_set():
                    break
                now = time.monotonic_ns()
            jumped = False
            late = now - due
            if late > self.duration:  # behind: skip to the current tick, never burst
                skip = late // self.duration
                n += skip
                self.skipped += skip
                jumped = True
            self._tick(n, due, targets, jumped)
            n += 1

    def _tick(self, n: int, due: int, targets: list[Target], jumped: bool) -> None:
        capture_ns = time.time_ns()
        if self.clip is not None:
            data, idr = self.clip.aus[n % len(self.clip.aus)]
            if jumped:  # access units were skipped: references are broken until an IDR
                for t in targets:
                    t.need_idr = True
        else:
            assert self.painted is not None
            data = self.painted.make(n, capture_ns // 1_000_000)
            idr = True
        for t in targets:
            if t.gone:
                continue
            if self.clip is not None and t.need_idr and not idr:
                continue  # a new media starts at an IDR picture
            if self._push(t, n, due, data, idr):
                t.need_idr = False

    def _push(self, t: Target, n: int, due: int, data: bytes, idr: bool) -> bool:
        src = t.appsrc
        _, state, _ = src.get_state(0)
        if state != Gst.State.PLAYING:  # a live source's data only flows when PLAYING
            return False
        clock = src.get_clock()
        if clock is None:
            return False
        # Timestamps on the frame grid, anchored to the pipeline's running time at the
        # frame's due instant, so pts follows capture time (what the RTCP sender reports
        # map to wall clock). Re-anchored should the running time jump (pipeline pause).
        now = clock.get_time() - src.get_base_time()
        pts = t.anchor_pts + (n - t.anchor_n) * self.duration
        if t.anchor_n < 0 or abs(pts - now) > 2 * self.duration or pts <= t.last_pts:
            pts = max(now - (time.monotonic_ns() - due), t.last_pts + 1, 0)
            t.anchor_n, t.anchor_pts = n, pts
        t.last_pts = pts
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = pts
        buf.dts = Gst.CLOCK_TIME_NONE if self.clip is None else pts
        buf.duration = self.duration
        buf.offset = t.pushed
        if not idr:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        ret = src.emit("push-buffer", buf)
        t.pushed += 1
        if ret not in (Gst.FlowReturn.OK, Gst.FlowReturn.FLUSHING):
            log(f"push-buffer: {ret.value_nick}")
        return True


# ---------------------------------------------------------------------------
# The server


def video_launch(args: argparse.Namespace) -> str:
    fps = args.fps
    keyint = args.keyint or fps
    if args.clip:
        caps = f"video/x-h264,stream-format=byte-stream,alignment=au,framerate={fps}/1"
        enc = ""
    else:
        caps = (f"video/x-raw,format=I420,width={args.width},height={args.height},"
                f"framerate={fps}/1")
        if args.bframes > 0:
            # zerolatency would disable B-frames; keep the lookahead short instead.
            tune = (f"bframes={args.bframes} b-adapt=false rc-lookahead={args.bframes + 1} "
                    "sync-lookahead=0")
            profile = " ! video/x-h264,profile=main"
        else:
            tune = "bframes=0 tune=zerolatency"
            profile = ""
        enc = (f"x264enc speed-preset=ultrafast key-int-max={keyint} {tune} "
               f"bitrate={args.bitrate}{profile} ! ")
    src = (f'appsrc name=src is-live=true format=time do-timestamp=false block=false '
           f'max-buffers=8 leaky-type=downstream caps="{caps}"')
    # SPS/PPS go in-band once per IDR access unit (h264parse). rtph264pay's own
    # config-interval=-1 would insert them before every IDR *slice*, and x264's sliced
    # threads make several slices per picture: FFmpeg's parser then splits the IDR picture
    # into separate packets that do not decode.
    return (f"{src} ! {enc}h264parse config-interval=-1 ! "
            f"rtph264pay name=pay0 pt=96 config-interval=0")


def audio_launch() -> str:
    enc = "voaacenc" if Gst.ElementFactory.find("voaacenc") else "avenc_aac"
    return ("audiotestsrc is-live=true wave=sine freq=440 volume=0.2 samplesperbuffer=1024 ! "
            "audio/x-raw,rate=48000,channels=1 ! audioconvert ! "
            f"{enc} bitrate=64000 ! rtpmp4apay name=pay1 pt=97")


def _on_element_added(_bin: Gst.Bin, _sub: Gst.Bin, element: Gst.Element) -> None:
    factory = element.get_factory()
    if factory is not None and factory.get_name() == "rtpsession":
        # Sender reports map RTP time to wall clock through the buffers' capture time
        # (their pts) rather than their send time, as a camera stamping at the sensor does:
        # a picture held back at startup then does not skew the first report.
        element.set_property("rtcp-sync-send-time", False)
        log(f"{element.get_name()}: rtcp-sync-send-time=false")


def _not_seekable(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
    query = info.get_query()
    if query is not None and query.type == Gst.QueryType.SEEKING:
        # Answered as it stands: a new seeking query says "not seekable". (Setting it from
        # Python trips over the query's writability: the binding holds a reference.)
        return Gst.PadProbeReturn.HANDLED
    return Gst.PadProbeReturn.OK


class Camera:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        painted = None if args.clip else PaintedSource(args.width, args.height)
        clip = ClipSource(Path(args.clip)) if args.clip else None
        self.feeder = Feeder(args.fps, painted, clip)
        self.loop = GLib.MainLoop()

        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(args.address)
        self.server.set_service(str(args.port))

        launch = video_launch(args)
        if args.audio:
            launch += " " + audio_launch()
        log(f"launch: ( {launch} )")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f"( {launch} )")
        factory.set_shared(True)
        # A client leaving never ends the stream for the others; when the last one is
        # gone the media is torn down (not reusable) and the next client gets a new one.
        factory.set_stop_on_disconnect(True)
        factory.set_eos_shutdown(False)
        factory.set_suspend_mode(GstRtspServer.RTSPSuspendMode.NONE)
        factory.connect("media-configure", self._on_media_configure)

        if args.user is not None:
            auth = GstRtspServer.RTSPAuth()
            token = GstRtspServer.RTSPToken()
            token.set_string("media.factory.role", _ROLE)
            # One method only: the binding takes RTSPAuthMethod as an enum, not as flags.
            if args.auth == "digest":
                auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
                auth.add_digest(args.user, args.password, token)
            else:
                auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
                auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password),
                               token)
            self.server.set_auth(auth)
            factory.add_role_from_structure(Gst.Structure.new_from_string(
                f"{_ROLE}, media.factory.access=(boolean)true, "
                "media.factory.construct=(boolean)true"))

        self.server.get_mount_points().add_factory(args.path, factory)

    def _on_media_configure(self, _factory: GstRtspServer.RTSPMediaFactory,
                            media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name("src")
        target = Target(media=media, appsrc=appsrc)
        media.connect("unprepared", self._on_media_unprepared)
        pipeline = media.get_element().get_parent()
        if pipeline is not None:
            pipeline.connect("deep-element-added", _on_element_added)
        audio_pay = media.get_element().get_by_name("pay1")
        if audio_pay is not None:
            # audiotestsrc answers seeking queries with "seekable", which makes the whole
            # live media look seekable; the server then seeks on PLAY and fails with 503.
            audio_pay.get_static_pad("src").add_probe(
                Gst.PadProbeType.QUERY_UPSTREAM, _not_seekable)
        self.feeder.add(target)
        log(f"media configured ({len(self.feeder.targets)} active)")

    def _on_media_unprepared(self, media: GstRtspServer.RTSPMedia) -> None:
        self.feeder.remove(media)
        log(f"media unprepared ({len(self.feeder.targets)} active)")

    def _quit(self, *_: object) -> bool:
        self.loop.quit()
        log("stopping")
        return False  # GLib.SOURCE_REMOVE

    def _check_parent(self) -> bool:
        if os.getppid() != self.args.parent_pid:
            self.loop.quit()
            log(f"parent {self.args.parent_pid} is gone")
            return False  # GLib.SOURCE_REMOVE
        return True  # GLib.SOURCE_CONTINUE

    def run(self) -> int:
        if self.server.attach(None) == 0:
            log(f"cannot listen on {self.args.address}:{self.args.port}")
            return 1
        port = self.server.get_bound_port()
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, self._quit)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, self._quit)
        if self.args.parent_pid:
            GLib.timeout_add(500, self._check_parent)
        self.feeder.start()
        host = self.args.address if self.args.address not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"rtsp://{host}:{port}{self.args.path}"
        print(json.dumps({"ready": True, "port": port, "url": url}), flush=True)
        log(f"serving {url}")
        self.loop.run()
        self.feeder.stop()
        # Close every client so the media are unprepared before the process ends.
        self.server.client_filter(lambda _s, _c: GstRtspServer.RTSPFilterResult.REMOVE)
        ctx = GLib.MainContext.default()
        while ctx.pending():
            ctx.iteration(False)
        self.feeder.join(timeout=2)
        log(f"stopped (frames skipped: {self.feeder.skipped})")
        return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--address", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    p.add_argument("--path", default="/cam", help="mount path")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--keyint", type=int, default=0, help="keyframe interval in frames (0 = fps)")
    p.add_argument("--bframes", type=int, default=0)
    p.add_argument("--bitrate", type=int, default=300, help="kbit/s (painted mode)")
    p.add_argument("--audio", action="store_true", help="add an AAC audio track")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--auth", choices=("digest", "basic"), default="digest",
                   help="authentication method when --user is given")
    p.add_argument("--clip", help="H.264 Annex-B clip to loop instead of painting")
    p.add_argument("--parent-pid", type=int, default=0,
                   help="exit when this process is no longer our parent")
    args = p.parse_args(argv)
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    if not args.path.startswith("/"):
        p.error("--path must start with /")
    if args.fps <= 0:
        p.error("--fps must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    return Camera(args).run()


if __name__ == "__main__":
    sys.exit(main())
