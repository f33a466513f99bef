"""Video lost on kill -9: how much of the last moments a crashed recorder leaves on disk.

Three painted RTSP test cameras (each picture carries its capture wall-clock time, see
edge/clockcode.py), used in turn:

* ``gop1s``: 30 fps, a keyframe every 30 frames (1 s), 300 kbit/s;
* ``gop4s``: 30 fps, a keyframe every 120 frames (4 s), 300 kbit/s;
* ``static``: the test camera has no static-scene option, so painted mode at 100 kbit/s
  (its picture is nearly static anyway: a grey field, a thin moving band and the clock
  code), a keyframe every 30 frames.

Each run starts ``roomrec-edge record URL --out DIR --seconds 600``, waits until its
segment file holds at least two fragments, waits a random 0.5-4 s more, SIGKILLs it and
notes time.time() just before the kill. The file must then read without error (ffprobe
over every packet, and a full decode by ffmpeg); the loss is the kill time minus the
latest capture time painted into any picture of the file.

That raw loss includes the camera-to-recorder latency (encoding, RTP over TCP,
demuxing), which no recorder can avoid; it is measured once per camera by a PyAV client
reading the camera live (time.time() at each packet's arrival minus the time painted in
it, median over a few seconds) and subtracted for the net loss.

    python -m bench.crash_loss [--runs 20] [--seed N]

The last two lines printed are the raw worst case and
``crash loss worst case: X.XX s`` (latency subtracted).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from av.video.frame import VideoFrame

from bench.common import Child, ffprobe_file, fmt_table
from tests.support.camera import RtspCamera, wait_until
from tests.support.media import fragment_times, painted_ms, painted_times

FPS = 30
KINDS: list[tuple[str, dict[str, Any]]] = [
    ("gop1s", {"fps": FPS, "keyint": 30}),
    ("gop4s", {"fps": FPS, "keyint": 120}),
    ("static", {"fps": FPS, "keyint": 30, "bitrate": 100}),
]
GOAL_S = 0.5


def ours_cmd(url: str, out: Path) -> list[str]:
    script = Path(sys.executable).with_name("roomrec-edge")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "edge"]
    return [*base, "record", url, "--out", str(out), "--seconds", "600"]


def measure_latency(url: str, seconds: float = 4.0, warmup: float = 1.0) -> list[float]:
    """Arrival time minus painted capture time (s) of each picture read live from `url`.

    The first `warmup` seconds are left out: the packets held while the stream is probed
    at open arrive late in a burst.
    """
    out: list[float] = []
    with av.open(url, options={"rtsp_transport": "tcp", "analyzeduration": "500000",
                               "probesize": "262144", "fpsprobesize": "0"},
                 timeout=(10, 5)) as c:
        stream = c.streams.video[0]
        t0 = time.monotonic()
        for packet in c.demux(stream):
            arrived = time.time()
            if packet.size == 0:
                continue
            for frame in packet.decode():
                if not isinstance(frame, VideoFrame):
                    continue  # type: ignore[unreachable]  # decode() is typed by stream kind
                ms = painted_ms(frame)
                if ms is not None and time.monotonic() - t0 >= warmup:
                    out.append(arrived - ms / 1000)
            if time.monotonic() - t0 >= warmup + seconds:
                break
    return out


@dataclass(frozen=True)
class RunResult:
    run: int
    kind: str
    extra_s: float          # random wait after the recording was under way
    recorded_s: float       # from the recorder's start to the kill
    fragments: int
    frames: int
    plays: bool
    problem: str
    raw_loss_s: float | None
    net_loss_s: float | None


def decode_errors(path: Path) -> str:
    res = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null",
                          "-"], capture_output=True, text=True, check=False, timeout=120)
    return res.stderr.strip() or ("" if res.returncode == 0 else f"exit {res.returncode}")


def one_run(i: int, kind: str, cam: RtspCamera, latency_s: float, work: Path,
            rng: random.Random) -> RunResult:
    out = work / f"run{i:02d}"
    child = Child(ours_cmd(cam.url, out), work / f"run{i:02d}")
    extra = rng.uniform(0.5, 4.0)

    def segment() -> Path | None:
        files = sorted(out.glob("*/*.mp4"))
        return files[0] if files else None

    def under_way() -> bool:
        seg = segment()
        return seg is not None and len(fragment_times(seg)) >= 2

    try:
        wait_until(lambda: under_way() or child.wait(0) is not None, 30)
        if not under_way() or not child.alive():
            return RunResult(i, kind, extra, 0.0, 0, 0, False,
                             f"not recording after 30 s: {child.stderr_tail(3)}", None, None)
        time.sleep(extra)
        killed_at = time.time()
        child.kill(signal.SIGKILL)
        usage = child.stop()
    finally:
        child.stop()
    seg = segment()
    assert seg is not None
    fragments = len(fragment_times(seg))
    check = ffprobe_file(seg, FPS)
    problem = check.errors if not check.ok else decode_errors(seg)
    raw = net = None
    try:
        painted = [ms for _, ms in painted_times(seg) if ms is not None]
    except av.error.FFmpegError as e:
        painted = []
        problem = problem or f"PyAV decode: {e}"
    if painted:
        raw = killed_at - max(painted) / 1000
        net = raw - latency_s
    elif not problem:
        problem = "no painted time read from the file"
    return RunResult(i, kind, extra, usage.wall_s, fragments, check.frames,
                     check.ok and not problem, problem, raw, net)


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.crash_loss", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--seed", type=int, default=None, help="for the random waits")
    p.add_argument("--work", type=Path, default=None,
                   help="keep the recordings here (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    seed: int = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    print(f"{args.runs} runs, seed {seed}; recorder: {' '.join(ours_cmd('URL', Path('DIR')))}")

    results: list[RunResult] = []
    latency: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crash_loss-")))
        else:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        cams: dict[str, RtspCamera] = {}
        for name, opts in KINDS:
            cam = RtspCamera(**opts)
            stack.callback(cam.stop)
            cams[name] = cam.start()

        lat_rows = []
        for name, _ in KINDS:
            lats = measure_latency(cams[name].url)
            if not lats:
                print(f"no painted time read from camera {name}", file=sys.stderr)
                return 1
            latency[name] = statistics.median(lats)
            lat_rows.append([name, str(len(lats)), f"{min(lats):.3f}",
                             f"{latency[name]:.3f}", f"{max(lats):.3f}"])
            time.sleep(1)  # the camera's media goes away with its last client
        print("\nCamera-to-client latency (PyAV client, TCP): arrival time minus painted "
              "capture time, s")
        print(fmt_table(["camera", "pictures", "min", "median", "max"], lat_rows))

        print(f"\n{'run':>3}  {'camera':6}  {'wait s':>6}  {'up s':>5}  {'frags':>5}  "
              f"{'frames':>6}  {'plays':5}  {'raw loss s':>10}  {'loss - latency s':>16}",
              flush=True)
        for i in range(1, args.runs + 1):
            name = KINDS[(i - 1) % len(KINDS)][0]
            r = one_run(i, name, cams[name], latency[name], work, rng)
            results.append(r)
            print(f"{r.run:>3}  {r.kind:6}  {r.extra_s:>6.2f}  {r.recorded_s:>5.1f}  "
                  f"{r.fragments:>5}  {r.frames:>6}  {'yes' if r.plays else 'NO':5}  "
                  f"{fmt_s(r.raw_loss_s):>10}  {fmt_s(r.net_loss_s):>16}"
                  + (f"  {r.problem[:200]}" if r.problem else ""), flush=True)
            time.sleep(1)

    print("\nSummary per camera (loss in s; net = raw minus that camera's median latency)")
    rows = []
    for name, _ in [*KINDS, ("all", {})]:
        rs = [r for r in results if name in ("all", r.kind)]
        raws = [r.raw_loss_s for r in rs if r.raw_loss_s is not None]
        nets = [r.net_loss_s for r in rs if r.net_loss_s is not None]
        lat = f"{latency[name]:.3f}" if name in latency else "-"
        rows.append([name, str(len(rs)), f"{sum(r.plays for r in rs)}/{len(rs)}", lat,
                     f"{statistics.median(raws):.3f}" if raws else "-",
                     f"{max(raws):.3f}" if raws else "-",
                     f"{statistics.median(nets):.3f}" if nets else "-",
                     f"{max(nets):.3f}" if nets else "-"])
    print(fmt_table(["camera", "runs", "play", "latency", "raw median", "raw worst",
                     "net median", "net worst"], rows))
    print(f"Goal: net loss at most {GOAL_S} s, every file plays.")
    raws = [r.raw_loss_s for r in results if r.raw_loss_s is not None]
    nets = [r.net_loss_s for r in results if r.net_loss_s is not None]
    failed = [r.run for r in results if not r.plays or r.net_loss_s is None]
    if failed:
        print(f"runs that failed (file does not play or holds no painted time): {failed}")
    if not nets:
        return 1
    print(f"crash loss worst case, raw (latency included): {max(raws):.2f} s")
    print(f"crash loss worst case: {max(nets):.2f} s")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
