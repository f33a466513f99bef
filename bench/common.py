"""Shared pieces of the benchmarks: children with their own resource usage, ffprobe."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    """A reaped child's whole life, from wait4(2)."""

    returncode: int
    cpu_s: float      # user + system, all threads, the whole life of the process
    maxrss_b: int     # peak resident set size (ru_maxrss)
    wall_s: float


class Child:
    """A child process whose output goes to files and whose rusage is kept when reaped.

    Reaped with os.wait4 (not Popen.wait) so its own user+sys time and peak RSS are
    known exactly, whatever else runs on the machine.
    """

    def __init__(self, cmd: Sequence[str], log_stem: Path) -> None:
        self.cmd = list(cmd)
        self.out = log_stem.with_suffix(".out")
        self.err = log_stem.with_suffix(".err")
        with self.out.open("wb") as o, self.err.open("wb") as e:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        self.started = time.monotonic()
        self.usage: Usage | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.usage is None

    def wait(self, timeout: float) -> Usage | None:
        """Reap within `timeout` s; None if it is still running then."""
        deadline = time.monotonic() + timeout
        while self.usage is None:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                code = os.waitstatus_to_exitcode(status)
                self.proc.returncode = code  # Popen must not wait for it again
                self.usage = Usage(code, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024,
                                   time.monotonic() - self.started)
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
        return self.usage

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.usage is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self) -> Usage:
        """SIGKILL if still running, and reap."""
        if self.usage is None:
            self.kill()
            usage = self.wait(30)
            assert usage is not None, f"pid {self.pid} survived SIGKILL"
        assert self.usage is not None
        return self.usage

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.err.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass(frozen=True)
class FileCheck:
    """One recorded file as ffprobe reads it (every packet, no decoding)."""

    path: Path
    ok: bool            # ffprobe exited 0 and printed no error
    errors: str
    duration_s: float   # the container's duration
    frames: int         # video packets
    missing: int        # frames missing in the video's pts sequence (gaps > 1.5 frames)
    gaps: tuple[tuple[float, int], ...] = ()  # (pts s after the gap, frames missing)


def ffprobe_file(path: Path, fps: float) -> FileCheck:
    """Duration, video packets and pts gaps of a file; ok when ffprobe reports nothing."""
    res = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams",
         "-show_packets", "-select_streams", "v:0",
         "-show_entries", "format=duration:stream=duration,codec_type:packet=pts_time",
         str(path)],
        capture_output=True, text=True, check=False, timeout=300,
    )
    errors = res.stderr.strip()
    if res.returncode != 0:
        return FileCheck(path, False, errors or f"ffprobe exit {res.returncode}", 0.0, 0, 0)
    info: dict[str, Any] = json.loads(res.stdout or "{}")
    duration = _float(info.get("format", {}).get("duration"))
    if duration is None:
        streams = info.get("streams") or [{}]
        duration = _float(streams[0].get("duration")) or 0.0
    pts = sorted(t for p in info.get("packets", [])
                 if (t := _float(p.get("pts_time"))) is not None)
    frame = 1.0 / fps
    gaps = tuple((b, round((b - a) / frame) - 1) for a, b in itertools.pairwise(pts)
                 if b - a > 1.5 * frame)
    return FileCheck(path, errors == "", errors, duration, len(pts),
                     sum(n for _, n in gaps), gaps)


def _float(v: object) -> float | None:
    if not isinstance(v, (str, int, float)) or v == "N/A":
        return None
    try:
        return float(v)
    except ValueError:
        return None


def proc_cpu_s(pid: int) -> float | None:
    """user + sys seconds of a running process so far, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def fmt_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, columns right-aligned except the first."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
