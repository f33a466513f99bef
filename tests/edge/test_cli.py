"""The installer's commands, run as a user runs them: separate processes, real cameras."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from edge.recorder.manifest import MANIFEST_NAME, load
from tests.support.camera import RtspCamera, wait_until
from tests.support.media import fragment_times, painted_times, probe

CameraFactory = Callable[..., RtspCamera]


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()


@pytest.fixture
def edge_cli(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """Starts `roomrec-edge ARGS` with its output going to files (nothing to drain)."""
    runs: list[Run] = []

    def start(*args: str) -> Run:
        n = len(runs)
        out, err = tmp_path / f"cli{n}.out", tmp_path / f"cli{n}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen([sys.executable, "-m", "edge", *args],
                                    stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        run = Run(proc, out, err)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
        run.proc.wait(10)


def segments_on_disk(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.mp4"))


def test_probe_describes_the_camera(edge_cli: Callable[..., Run],
                                    rtsp_camera: CameraFactory) -> None:
    cam = rtsp_camera(width=320, height=240, fps=30, keyint=15, audio=True)
    run = edge_cli("probe", cam.url, "--seconds", "2")
    assert run.proc.wait(30) == 0, run.stderr
    out = run.stdout
    assert "video h264" in out and "320x240" in out
    assert "audio aac" in out
    assert "keyframe interval: 0.50 s" in out


def test_probe_of_a_dead_camera_says_so(edge_cli: Callable[..., Run],
                                        rtsp_camera: CameraFactory) -> None:
    cam = rtsp_camera()
    cam.kill()
    run = edge_cli("probe", cam.url, "--timeout", "3")
    assert run.proc.wait(30) == 2
    assert "cannot open rtsp://127.0.0.1" in run.stderr
    assert "Traceback" not in run.stderr


def test_sigterm_finalizes_within_three_seconds(edge_cli: Callable[..., Run],
                                                rtsp_camera: CameraFactory,
                                                tmp_path: Path) -> None:
    cams = [rtsp_camera(fps=30), rtsp_camera(fps=30, audio=True)]
    out = tmp_path / "rec"
    run = edge_cli("record", *(c.url for c in cams), "--out", str(out), "--seconds", "600")
    assert wait_until(lambda: len(segments_on_disk(out)) == 2
                      and all(len(fragment_times(p)) >= 2 for p in segments_on_disk(out)), 30)
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    code = run.proc.wait(10)
    took = time.monotonic() - t0
    assert took < 3.0, f"stop took {took:.2f} s"
    assert code == 1  # stopped before the 600 s asked for
    m = load(out / MANIFEST_NAME)
    assert m.state == "stopped" and m.stop_reason == "interrupted"
    for cam in m.cameras.values():
        assert cam.state == "ended"
        for seg in cam.segments:
            assert seg.complete
            assert probe(out / seg.file).errors == ""


def test_kill_9_leaves_playable_files(edge_cli: Callable[..., Run],
                                      rtsp_camera: CameraFactory, tmp_path: Path) -> None:
    cam = rtsp_camera(fps=30, keyint=120)  # a 4 s keyframe interval: fragments still 0.5 s
    out = tmp_path / "rec"
    run = edge_cli("record", cam.url, "--out", str(out), "--seconds", "600")
    assert wait_until(lambda: bool(segments_on_disk(out))
                      and len(fragment_times(segments_on_disk(out)[0])) >= 6, 30)
    killed_ms = time.time_ns() / 1e6
    run.proc.kill()
    run.proc.wait(10)
    (seg,) = segments_on_disk(out)
    p = probe(seg)
    assert p.video_packets > 0 and p.keyframe_first
    last_painted = max(ms for _, ms in painted_times(seg) if ms is not None)
    lost_s = (killed_ms - last_painted) / 1000
    # At most one fragment (0.5 s) plus the camera-to-recorder latency.
    assert lost_s < 0.9, f"{lost_s:.2f} s of video lost"
    m = load(out / MANIFEST_NAME)  # atomically replaced: the last good version
    assert m.state == "recording"
    assert m.cameras["cam1"].segments[0].complete is False


def test_record_refuses_a_folder_that_holds_a_recording(edge_cli: Callable[..., Run],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "rec"
    first = edge_cli("record", "test:a?size=320x240&fps=15", "--out", str(out),
                     "--seconds", "1")
    assert first.proc.wait(60) == 0, first.stderr
    before = (out / MANIFEST_NAME).read_bytes()
    again = edge_cli("record", "test:a?size=320x240&fps=15", "--out", str(out),
                     "--seconds", "1")
    assert again.proc.wait(60) == 2
    assert "already holds a recording" in again.stderr
    assert (out / MANIFEST_NAME).read_bytes() == before


def test_camera_password_never_appears(edge_cli: Callable[..., Run],
                                       rtsp_camera: CameraFactory, tmp_path: Path) -> None:
    password = "Canary-7d1e!x"
    forms = {password, quote(password, safe=""), quote(password)}
    cam = rtsp_camera(user="admin", password=password)
    out = tmp_path / "rec"
    good = cam.url_with_credentials
    bad = good.replace(quote(password, safe=""), quote(password + "-wrong", safe=""))
    assert bad != good
    runs = [
        edge_cli("probe", good, "--seconds", "1"),
        edge_cli("-v", "record", good, "--out", str(out), "--seconds", "2"),
        edge_cli("-v", "probe", bad, "--timeout", "3"),
        edge_cli("-v", "record", f"bad={bad}", "--out", str(tmp_path / "rec-bad"),
                 "--seconds", "1", "--timeout", "2"),
    ]
    codes = [r.proc.wait(60) for r in runs]
    assert codes[:2] == [0, 0], runs[1].stderr
    assert codes[2] == 2 and codes[3] == 1
    texts = [r.stdout + r.stderr for r in runs]
    texts += [p.read_text() for p in tmp_path.rglob("manifest.json")]
    assert "cannot open" in texts[2]  # the failure is reported, without the secret
    for text in texts:
        for form in forms:
            assert form not in text
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["cameras"]["cam1"]["source"] == cam.url


def test_record_refuses_when_space_is_short(edge_cli: Callable[..., Run],
                                            tmp_path: Path) -> None:
    out = tmp_path / "rec"
    run = edge_cli("record", "test:a", "--out", str(out), "--seconds", "10",
                   "--reserve-mb", str(10**9))
    assert run.proc.wait(60) == 2
    assert "not enough free space" in run.stderr
    assert not (out / MANIFEST_NAME).exists()
