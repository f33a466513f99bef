"""Recording cost: roomrec-edge against ffmpeg on the same RTSP streams, in the same run.

For each camera count N, N file-mode RTSP test cameras (1080p30, ~6 Mbit/s, 1 s keyframe
interval) are started, then recorded for S seconds twice, one tool after the other:

* ours: ONE process, ``roomrec-edge record URL1 ... URLn --out DIR --seconds S``;
* the peer: one ffmpeg process per stream, stream copy to a fragmented MP4 (see PEER_CMD).

Per run: user+sys CPU seconds of the process(es) over their whole life (os.wait4), divided
by the stream-seconds actually recorded (sum of ffprobe's duration over the files); peak
resident memory (ru_maxrss; for ffmpeg the sum over its processes); frames lost (gaps in
each file's video pts larger than 1.5 frame durations, counted in frames); and whether
every file reads without an ffprobe error.

    python -m bench.record_cost [--counts 1,4,8,16] [--seconds 30]

The last line printed is ``record CPU ratio ours/ffmpeg: X.XX`` for the largest N.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import MIB, Child, FileCheck, ffprobe_file, fmt_table, proc_cpu_s
from tests.support.camera import RtspCamera, make_clip

FPS = 30
CLIP = (1920, 1080, FPS, 30, 10)  # width, height, fps, keyint, seconds

# The peer, one process per stream. `-t S` is an output option and must come before the
# output file: placed after it, ffmpeg 5.1 ignores it ("Trailing option(s) found").
PEER_CMD = ("ffmpeg -nostdin -loglevel error -rtsp_transport tcp -i URL -c copy -f mp4 "
            "-movflags frag_keyframe+empty_moov+default_base_moof -frag_duration 500000 "
            "-t S OUT.mp4")


def peer_cmd(url: str, out: Path, seconds: float) -> list[str]:
    cmd = PEER_CMD.replace("URL", url).replace(" S ", f" {seconds:g} ")
    return cmd.replace("OUT.mp4", str(out)).split()


def ours_cmd(urls: Sequence[str], out: Path, seconds: float) -> list[str]:
    script = Path(sys.executable).with_name("roomrec-edge")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "edge"]
    return [*base, "record", *urls, "--out", str(out), "--seconds", f"{seconds:g}"]


@dataclass(frozen=True)
class RunResult:
    tool: str
    cpu_s: float
    maxrss_b: int
    wall_s: float
    files: list[FileCheck]
    busy: float          # the whole machine's CPU use during the run, 0..1 of all cores
    exit_codes: list[int]
    steady_cpu_s: float  # CPU seconds of all its processes within the steady window
    steady_stream_s: float  # streams x the window's length
    cameras_cores: float    # the test cameras' CPU use during the run, in cores
    others_cores: float     # the rest of the machine's (not us, not the cameras), in cores

    @property
    def steady_per_stream_s(self) -> float:
        return self.steady_cpu_s / self.steady_stream_s if self.steady_stream_s else float("nan")

    @property
    def stream_s(self) -> float:
        return sum(f.duration_s for f in self.files)

    @property
    def cpu_per_stream_s(self) -> float:
        return self.cpu_s / self.stream_s if self.stream_s > 0 else float("nan")

    @property
    def missing(self) -> int:
        return sum(f.missing for f in self.files)

    @property
    def plays(self) -> int:
        return sum(1 for f in self.files if f.ok)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [int(v) for v in first]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])
    return total - idle, total


def check_files(tool: str, outputs: list[Path] | Path, logs: Path,
                expected: int) -> list[FileCheck]:
    """ffprobe every output file; report missing files, gaps and errors as they are."""
    files = (sorted(outputs.glob("*/*.mp4")) if isinstance(outputs, Path)
             else [p for p in outputs if p.exists()])
    checks = [ffprobe_file(p, FPS) for p in files]
    if len(files) < expected:
        print(f"  {tool}: only {len(files)} of {expected} files written", file=sys.stderr)
    for f in checks:
        if f.gaps:
            print(f"  {tool}: {f.path.relative_to(logs)}: frames missing before "
                  + ", ".join(f"{t:.2f} s ({n})" for t, n in f.gaps), flush=True)
        if not f.ok:
            print(f"  {tool}: {f.path} does not read cleanly: {f.errors[:300]}",
                  file=sys.stderr)
    return checks


def run_tool(tool: str, cmds: list[list[str]], logs: Path, seconds: float,
             outputs: list[Path] | Path, cams: list[RtspCamera]) -> RunResult:
    """Start the commands at once, wait for all, reap each with its rusage.

    Also samples the children's CPU time from /proc at 30% and 80% of the run, a steady
    window that leaves start-up (imports, connecting, probing) out.
    """
    expected = len(cams)
    cams0 = sum(proc_cpu_s(c.pid) or 0.0 for c in cams)
    self0 = time.process_time()
    busy0, total0 = machine_ticks()
    t_start = time.monotonic()
    children: list[Child] = []
    steady_cpu = steady_stream = 0.0
    try:
        for i, cmd in enumerate(cmds):
            children.append(Child(cmd, logs / f"{tool}-{len(cmds)}-{i}"))
        t0 = time.monotonic()
        samples: list[tuple[float, float]] = []
        for frac in (0.3, 0.8):
            time.sleep(max(0.0, t0 + frac * seconds - time.monotonic()))
            cpus = [proc_cpu_s(c.pid) for c in children]
            if all(c is not None for c in cpus):
                samples.append((time.monotonic(), sum(c or 0.0 for c in cpus)))
        if len(samples) == 2:
            steady_cpu = samples[1][1] - samples[0][1]
            steady_stream = (samples[1][0] - samples[0][0]) * expected
        deadline = time.monotonic() + seconds + 90
        for c in children:
            if c.wait(max(1.0, deadline - time.monotonic())) is None:
                print(f"  {tool}: pid {c.pid} still running after {seconds + 90:g} s; killed",
                      file=sys.stderr)
    finally:
        usages = [c.stop() for c in children]
    busy1, total1 = machine_ticks()
    wall = time.monotonic() - t_start
    cams_cpu = sum(proc_cpu_s(c.pid) or 0.0 for c in cams) - cams0
    own_cpu = sum(u.cpu_s for u in usages)
    # Everything else the machine did meanwhile (other users' work), in cores.
    others = ((busy1 - busy0) / os.sysconf("SC_CLK_TCK") - own_cpu - cams_cpu
              - (time.process_time() - self0)) / wall
    for c, u in zip(children, usages, strict=True):
        if u.returncode != 0:
            print(f"  {tool}: pid {c.pid} exited {u.returncode}: {c.stderr_tail(5)}",
                  file=sys.stderr)
    checks = check_files(tool, outputs, logs, expected)
    return RunResult(
        tool=tool,
        cpu_s=own_cpu, maxrss_b=sum(u.maxrss_b for u in usages),
        wall_s=max(u.wall_s for u in usages), files=checks,
        busy=(busy1 - busy0) / max(1, total1 - total0),
        exit_codes=[u.returncode for u in usages],
        steady_cpu_s=steady_cpu, steady_stream_s=steady_stream,
        cameras_cores=cams_cpu / wall, others_cores=max(0.0, others),
    )


def camera_skips(cam: RtspCamera) -> int:
    """Frames the camera skipped because it fell behind (from its stop line)."""
    m = re.search(r"frames skipped: (\d+)", cam.stderr_tail())
    return int(m.group(1)) if m else 0


@dataclass(frozen=True)
class Row:
    n: int
    ours: RunResult
    peer: RunResult
    skips_ours: int    # frames the cameras skipped (late) during our run
    skips_peer: int    # and during ffmpeg's


def skips_and_restart(cams: list[RtspCamera]) -> int:
    """Stop the cameras, count the frames they skipped, start them again at the same URLs."""
    skipped = 0
    for cam in cams:
        cam.stop()
        skipped += camera_skips(cam)
    for cam in cams:
        cam.restart()
    return skipped


def bench_count(n: int, clip: Path, work: Path, seconds: float) -> Row:
    """Ours, then ffmpeg, on the same N cameras (restarted in between at the same URLs, so
    the frames they skip for being late are counted per run)."""
    d = work / f"n{n}"
    d.mkdir(parents=True)
    cams: list[RtspCamera] = []
    try:
        for _ in range(n):
            cam = RtspCamera(clip=clip, fps=FPS)
            cams.append(cam)
            cam.start()
        urls = [c.url for c in cams]
        ours = run_tool("ours", [ours_cmd(urls, d / "ours", seconds)], d, seconds, d / "ours",
                        cams)
        ours_skips = skips_and_restart(cams)
        (d / "ffmpeg").mkdir()
        outs = [d / "ffmpeg" / f"cam{i + 1}.mp4" for i in range(n)]
        peer = run_tool("ffmpeg", [peer_cmd(u, o, seconds) for u, o in zip(urls, outs,
                                                                            strict=True)],
                        d, seconds, outs, cams)
    finally:
        for cam in cams:
            cam.stop()
    return Row(n, ours, peer, ours_skips, sum(camera_skips(c) for c in cams))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.record_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="1,4,8,16",
                   help="camera counts, comma-separated (default 1,4,8,16)")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds per recording")
    p.add_argument("--clip-dir", type=Path,
                   default=Path(tempfile.gettempdir()) / "roomrec-bench-clips",
                   help="where the 1080p clip is encoded once and cached")
    p.add_argument("--work", type=Path, default=None,
                   help="keep the recordings here (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    seconds: float = args.seconds

    clip = make_clip(args.clip_dir, *CLIP)
    print(f"clip {clip} ({CLIP[0]}x{CLIP[1]} {FPS} fps, keyframe every {CLIP[3]} frames, "
          f"{clip.stat().st_size * 8 / CLIP[4] / 1e6:.1f} Mbit/s); {os.cpu_count()} CPUs")
    print(f"ours:   {' '.join(ours_cmd(['URL1', '...', 'URLn'], Path('DIR'), seconds))}")
    print(f"ffmpeg: {PEER_CMD.replace(' S ', f' {seconds:g} ')}  (one per stream)")
    print(f"ffmpeg: {shutil.which('ffmpeg')}")

    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="record_cost-")))
        else:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        rows: list[Row] = []
        for n in counts:
            print(f"\n{n} stream(s), {seconds:g} s each: ours, then ffmpeg "
                  f"(load average {os.getloadavg()[0]:.2f})", flush=True)
            row = bench_count(n, clip, work, seconds)
            rows.append(row)
            for r in (row.ours, row.peer):
                print(f"  {r.tool:6s}: {r.cpu_s:6.2f} CPU s for {r.stream_s:7.1f} stream-s in "
                      f"{len(r.files)} file(s), wall {r.wall_s:5.1f} s, peak RSS "
                      f"{r.maxrss_b / MIB:6.1f} MiB, {r.missing} frames missing, machine "
                      f"busy {r.busy:.0%} (others {r.others_cores:.2f} cores), exit "
                      f"{sorted(set(r.exit_codes))}", flush=True)

    header = ["streams", "ours CPU s/stream-s", "ffmpeg CPU s/stream-s", "ours/ffmpeg",
              "ours RSS MiB", "ffmpeg RSS MiB (sum)", "frames lost ours/ffmpeg"]
    table = [[
        str(r.n), f"{r.ours.cpu_per_stream_s:.4f}", f"{r.peer.cpu_per_stream_s:.4f}",
        f"{r.ours.cpu_per_stream_s / r.peer.cpu_per_stream_s:.2f}",
        f"{r.ours.maxrss_b / MIB:.1f}", f"{r.peer.maxrss_b / MIB:.1f}",
        f"{r.ours.missing}/{r.peer.missing}",
    ] for r in rows]
    print(f"\nRecording cost ({seconds:g} s per run): whole-life CPU (user+sys) per "
          "stream-second recorded, peak RSS, frames lost (pts gaps > 1.5 frames)")
    print(fmt_table(header, table))
    print("Goal: ours/ffmpeg <= 1.00, ours RSS <= 150 MiB at 8 cameras, 0 frames lost.")

    header2 = ["streams", "steady ours", "steady ffmpeg", "steady ours/ffmpeg",
               "files play ours/ffmpeg", "stream-s ours/ffmpeg", "cameras cores",
               "others cores", "camera skips"]
    table2 = [[
        str(r.n), f"{r.ours.steady_per_stream_s:.4f}", f"{r.peer.steady_per_stream_s:.4f}",
        f"{r.ours.steady_per_stream_s / r.peer.steady_per_stream_s:.2f}",
        f"{r.ours.plays}/{len(r.ours.files)} {r.peer.plays}/{len(r.peer.files)}",
        f"{r.ours.stream_s:.1f}/{r.peer.stream_s:.1f}",
        f"{r.ours.cameras_cores:.2f}/{r.peer.cameras_cores:.2f}",
        f"{r.ours.others_cores:.2f}/{r.peer.others_cores:.2f}",
        f"{r.skips_ours}/{r.skips_peer}",
    ] for r in rows]
    print("\nDetails, each column ours/ffmpeg. steady: CPU s per stream-second between /proc "
          "samples at 30% and 80%\nof the run (start-up left out). cameras cores: the test "
          "cameras' CPU use during the run, in cores.\nothers cores: the rest of the "
          "machine's CPU use (other work, not ours, not the cameras), in cores: noise\nwhen "
          "well above 0. camera skips: frames the test cameras dropped for being late "
          "(each can cost\nup to a keyframe interval, 30 frames, in the recording, whatever "
          "the recorder).")
    print(fmt_table(header2, table2))
    if not rows:
        return 1
    last = rows[-1]
    ratio = last.ours.cpu_per_stream_s / last.peer.cpu_per_stream_s
    print(f"record CPU ratio ours/ffmpeg: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
