"""The RTSP test camera really is an RTSP camera: PyAV, as the recorder uses it, reads it."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import av.error
import pytest
from av.container import InputContainer

from edge import clockcode
from tests.support.camera import RtspCamera, make_clip, packet_wallclock_us, wait_until

RTSP_OPTIONS = {"rtsp_transport": "tcp"}


def open_rtsp(url: str, read_timeout: float = 5.0, open_timeout: float = 10.0) -> InputContainer:
    timeout: Any = (open_timeout, read_timeout)  # PyAV's stub says numbers.Real
    return av.open(url, options=RTSP_OPTIONS, timeout=timeout)


@dataclass
class Pkt:
    """What the tests need of one demuxed packet."""

    kind: str
    pts: int | None
    dts: int | None
    seconds: float | None
    keyframe: bool
    wallclock_us: int | None
    painted_ms: list[int | None] = field(default_factory=list)


def read_packets(container: InputContainer, seconds: float, *, decode: bool = False,
                 until: Callable[[Pkt], bool] | None = None) -> list[Pkt]:
    """Demux for `seconds` of wall-clock time (or until `until(packet)` holds).

    With `decode`, video frames are decoded and their painted clocks read.
    """
    out: list[Pkt] = []
    deadline = time.monotonic() + seconds
    for packet in container.demux():
        if packet.size == 0:  # flush packet at the end of the stream
            continue
        stream = packet.stream
        pts = packet.pts
        secs = float(pts * packet.time_base) if pts is not None else None
        p = Pkt(stream.type, pts, packet.dts, secs, packet.is_keyframe,
                packet_wallclock_us(packet))
        if decode and stream.type == "video":
            for frame in packet.decode():
                assert isinstance(frame, av.VideoFrame)
                plane = frame.planes[0]
                p.painted_ms.append(clockcode.read(bytes(plane), frame.width, frame.height,
                                                   stride=plane.line_size))
        out.append(p)
        if (until is not None and until(p)) or time.monotonic() >= deadline:
            break
    return out


def video(packets: list[Pkt]) -> list[Pkt]:
    return [p for p in packets if p.kind == "video" and p.pts is not None]


def keyframe_gaps(packets: list[Pkt]) -> list[int]:
    idx = [i for i, p in enumerate(packets) if p.keyframe]
    return [b - a for a, b in itertools.pairwise(idx)]


# -- a painted camera shared by the module ----------------------------------------------

FPS = 30
KEYINT = 15


@pytest.fixture(scope="module")
def painted() -> Iterator[RtspCamera]:
    with RtspCamera(width=320, height=240, fps=FPS, keyint=KEYINT) as cam:
        yield cam


def test_painted_stream_shape_keyframes_and_clock(painted: RtspCamera) -> None:
    with open_rtsp(painted.url) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
        pkts = video(read_packets(c, 2.0, decode=True))
        decoded_at = time.time() * 1000

    assert len(pkts) >= 45, f"only {len(pkts)} packets in 2 s"
    # Keyframes every KEYINT frames, and more than one of them.
    gaps = keyframe_gaps(pkts)
    assert len(gaps) >= 2
    assert set(gaps) == {KEYINT}, gaps
    # Presentation times rise by one frame at a time (no B-frames).
    steps = [b.seconds - a.seconds for a, b in itertools.pairwise(pkts)
             if a.seconds is not None and b.seconds is not None]
    assert all(s > 0 for s in steps)
    assert statistics.median(steps) == pytest.approx(1 / FPS, abs=0.002)

    # The painted capture clock: readable, recent, one frame apart.
    painted_ms = [(p, ms) for p in pkts for ms in p.painted_ms]
    readable = [(p, ms) for p, ms in painted_ms if ms is not None]
    assert len(readable) >= 0.9 * len(painted_ms) >= 30
    for _, ms in readable:
        assert abs(ms - decoded_at) < 3000  # within the 2 s read, plus latency
    assert abs(readable[-1][1] - decoded_at) < 1000
    diffs = [b - a for (_, a), (_, b) in itertools.pairwise(readable)]
    assert all(d > 0 for d in diffs)
    assert statistics.median(diffs) == pytest.approx(1000 / FPS, abs=5)
    # Timestamps follow capture time: painted clock minus pts is constant.
    offsets = [ms - p.seconds * 1000 for p, ms in readable if p.seconds is not None]
    assert max(offsets) - min(offsets) < 50


def test_rtcp_sender_reports_give_the_painted_wall_clock(painted: RtspCamera) -> None:
    with open_rtsp(painted.url) as c:
        t0 = time.monotonic()
        # Decode from the start so the decoder has its references when reports arrive.
        pkts = read_packets(c, 8.0, decode=True, until=lambda p: p.wallclock_us is not None)
        first_sr_after = time.monotonic() - t0
        assert pkts[-1].wallclock_us is not None, "no prft side data (RTCP SR) within 8 s"
        pkts = video(read_packets(c, 0.7, decode=True))
        start_time_realtime = c.start_time_realtime
    print(f"first RTCP-derived wall clock after {first_sr_after:.1f} s")

    errors_ms = []
    for p in pkts:
        assert p.wallclock_us is not None
        errors_ms += [p.wallclock_us / 1000 - ms for ms in p.painted_ms if ms is not None]
        # start_time_realtime + pts is the same mapping.
        assert start_time_realtime is not None and p.seconds is not None
        assert abs(start_time_realtime + p.seconds * 1e6 - p.wallclock_us) < 5000
    assert len(errors_ms) >= 10
    assert all(abs(e) < 200 for e in errors_ms), errors_ms
    # In practice they agree to about a millisecond.
    assert abs(statistics.median(errors_ms)) < 20, errors_ms


def test_two_clients_reconnect_and_new_media(painted: RtspCamera) -> None:
    a = open_rtsp(painted.url)
    b = open_rtsp(painted.url)
    try:
        ia, ib = a.demux(a.streams.video[0]), b.demux(b.streams.video[0])
        for _ in range(20):  # both receive, interleaved
            assert next(ia).size > 0
            assert next(ib).size > 0
        a.close()
        c = open_rtsp(painted.url)  # a client reconnects while another one watches
        try:
            assert len(video(read_packets(c, 1.0))) >= 20
            assert len(video(read_packets(b, 0.5))) >= 10
        finally:
            c.close()
    finally:
        a.close()
        b.close()
    # The last client left: the media is torn down, and a new client gets a new one.
    assert wait_until(lambda: "media unprepared" in painted.stderr_tail(), 10), \
        painted.stderr_tail()
    with open_rtsp(painted.url) as d:
        assert len(video(read_packets(d, 1.0))) >= 20


# -- audio, B-frames and authentication --------------------------------------------------


@pytest.fixture(scope="module")
def protected() -> Iterator[RtspCamera]:
    with RtspCamera(audio=True, bframes=2, user="operator", password="s3cret pw") as cam:
        yield cam


def test_digest_auth_refuses_without_credentials(protected: RtspCamera) -> None:
    assert "operator" not in protected.url
    with pytest.raises(av.error.HTTPUnauthorizedError):
        open_rtsp(protected.url)
    wrong = protected.url.replace("rtsp://", "rtsp://operator:wrong@")
    with pytest.raises(av.error.HTTPUnauthorizedError):
        open_rtsp(wrong)


def test_audio_track_and_bframes(protected: RtspCamera) -> None:
    with open_rtsp(protected.url_with_credentials) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert [s.codec_context.name for s in c.streams.audio] == ["aac"]
        pkts = read_packets(c, 1.5)
    vid = video(pkts)
    assert any(p.pts != p.dts for p in vid if p.dts is not None)
    assert sum(1 for p in pkts if p.kind == "audio") >= 20


def test_basic_auth(rtsp_camera: Callable[..., RtspCamera]) -> None:
    cam = rtsp_camera(user="u", password="p@ss:word", auth="basic")
    with pytest.raises(av.error.HTTPUnauthorizedError):
        open_rtsp(cam.url)
    with open_rtsp(cam.url_with_credentials) as c:
        assert len(video(read_packets(c, 0.5))) >= 5


# -- failures: freeze, kill ---------------------------------------------------------------


def test_freeze_then_thaw(rtsp_camera: Callable[..., RtspCamera]) -> None:
    cam = rtsp_camera()
    with open_rtsp(cam.url, read_timeout=3.0) as c:
        assert len(video(read_packets(c, 0.3))) >= 3
        cam.freeze()
        t0 = time.monotonic()
        with pytest.raises(av.error.FFmpegError):
            # Packets already in flight may come first; then the read times out.
            read_packets(c, 30.0)
        waited = time.monotonic() - t0
        print(f"read failed {waited:.1f} s after the freeze")
        assert 2.0 < waited < 10.0
    cam.thaw()
    with open_rtsp(cam.url) as c:
        assert len(video(read_packets(c, 1.0))) >= 20


def test_kill_then_restart_at_the_same_url(rtsp_camera: Callable[..., RtspCamera]) -> None:
    cam = rtsp_camera()
    url, pid = cam.url, cam.pid
    with open_rtsp(url) as c:
        assert len(video(read_packets(c, 0.3))) >= 3
        cam.kill()
        assert not cam.running
    with pytest.raises(av.error.ConnectionRefusedError):
        open_rtsp(url)
    cam.restart()
    assert cam.url == url and cam.pid != pid
    with open_rtsp(url) as c:
        assert len(video(read_packets(c, 1.0))) >= 20


# -- file mode ----------------------------------------------------------------------------


def test_file_mode_loops_the_clip(rtsp_camera: Callable[..., RtspCamera], clip_dir: Path) -> None:
    clip = make_clip(clip_dir, 640, 360, 30, 30, 2)
    assert make_clip(clip_dir, 640, 360, 30, 30, 2) == clip  # cached
    cam = rtsp_camera(clip=clip, width=640, height=360, fps=30)
    decoded = 0
    with open_rtsp(cam.url) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (640, 360)
        pkts: list[float] = []
        packets = 0
        deadline = time.monotonic() + 15
        for packet in c.demux(stream):
            if packet.size == 0:
                continue
            packets += 1
            # FFmpeg gives the first packet of an RTSP session (the IDR) no pts/dts.
            if packet.pts is not None:
                pkts.append(float(packet.pts * packet.time_base))
            decoded += len(packet.decode())
            if (len(pkts) >= 2 and pkts[-1] - pkts[0] > 3.0) or time.monotonic() > deadline:
                break
    # Played past the end of the 2 s clip, pts still rising one frame at a time.
    assert pkts[-1] - pkts[0] > 3.0
    steps = [b - a for a, b in itertools.pairwise(pkts)]
    assert all(0 < s < 0.1 for s in steps), steps
    assert decoded >= packets - 2  # every access unit decodes (the decoder may hold one)
