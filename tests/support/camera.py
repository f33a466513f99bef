"""Controller for the RTSP test camera process (tests/support/rtsp_camera.py).

The camera runs under Debian's /usr/bin/python3 (python3-gi does not serve the virtual
environment's Python), one process per camera. This module starts and stops it, reads its
ready line, keeps its pipes drained, and can freeze, thaw, kill and restart it at the same
URL, as a flaky real camera would behave.

    with RtspCamera(width=640, height=360, fps=25, audio=True) as cam:
        container = av.open(cam.url, options={"rtsp_transport": "tcp"}, timeout=(10, 5))
        ...
        cam.kill()      # the camera dies
        cam.restart()   # and comes back at the same URL

`make_clip` encodes a looping H.264 clip for file mode (`RtspCamera(clip=...)`), which costs
almost no CPU per camera, so benchmarks can run many 1080p cameras at once.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

import av.packet

SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_camera.py")
SYSTEM_PYTHON = "/usr/bin/python3"
READY_TIMEOUT = 20.0
STDERR_LINES = 200


class CameraError(RuntimeError):
    """The camera process did not start or misbehaved."""


class RtspCamera:
    """One RTSP test camera process.

    Painted mode (default) encodes width x height pictures carrying their capture time
    (see edge/clockcode.py) with x264 at `bitrate` kbit/s, an IDR picture every `keyint`
    frames (default: fps) and `bframes` B-frames. File mode (`clip=`) loops a pre-encoded
    H.264 clip (see `make_clip`): pass the clip's fps; its size is the clip's own.
    `audio` adds an AAC track. `user`/`password` require RTSP authentication (`auth`
    "digest" or "basic"). `port=0` picks a free port at the first start; later starts
    (`restart`) reuse it. All arguments are keyword-only.
    """

    def __init__(
        self,
        *,
        width: int = 320,
        height: int = 240,
        fps: int = 30,
        keyint: int | None = None,
        bframes: int = 0,
        audio: bool = False,
        user: str | None = None,
        password: str | None = None,
        auth: str = "digest",
        clip: str | os.PathLike[str] | None = None,
        port: int = 0,
        bitrate: int = 300,
        path: str = "/cam",
        address: str = "127.0.0.1",
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        if (user is None) != (password is None):
            raise ValueError("user and password go together")
        if auth not in ("digest", "basic"):
            raise ValueError(f"auth must be 'digest' or 'basic', not {auth!r}")
        self.width = width
        self.height = height
        self.fps = fps
        self.keyint = keyint if keyint is not None else fps
        self.bframes = bframes
        self.audio = audio
        self.user = user
        self.password = password
        self.auth = auth
        self.clip = Path(clip) if clip is not None else None
        self.bitrate = bitrate
        self.path = path
        self.address = address
        self.ready_timeout = ready_timeout
        self._port = port
        self._proc: subprocess.Popen[str] | None = None
        self._frozen = False
        self._ready: queue.Queue[str | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._threads: list[threading.Thread] = []

    # -- properties -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the camera listens on (0 before the first start with port=0)."""
        return self._port

    @property
    def url(self) -> str:
        """rtsp:// URL without credentials."""
        return f"rtsp://{self._host}:{self._port}{self.path}"

    @property
    def url_with_credentials(self) -> str:
        """rtsp:// URL with the user and password (percent-encoded), if any."""
        if self.user is None or self.password is None:
            return self.url
        cred = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"rtsp://{cred}@{self._host}:{self._port}{self.path}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise CameraError("camera not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the process exists and has not exited (frozen counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def _host(self) -> str:
        return "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address

    def stderr_tail(self) -> str:
        """The camera's last lines of stderr."""
        return "".join(self._stderr)

    def command(self) -> list[str]:
        """The camera process's command line."""
        cmd = [
            SYSTEM_PYTHON, str(SERVER_SCRIPT),
            "--address", self.address,
            "--port", str(self._port),
            "--path", self.path,
            "--width", str(self.width),
            "--height", str(self.height),
            "--fps", str(self.fps),
            "--keyint", str(self.keyint),
            "--bframes", str(self.bframes),
            "--bitrate", str(self.bitrate),
            "--parent-pid", str(os.getpid()),
        ]
        if self.audio:
            cmd.append("--audio")
        if self.user is not None and self.password is not None:
            cmd += ["--user", self.user, "--password", self.password, "--auth", self.auth]
        if self.clip is not None:
            cmd += ["--clip", str(self.clip)]
        return cmd

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process and wait for its ready line; returns self."""
        if self.running:
            raise CameraError(f"camera already running (pid {self.pid})")
        self._reap()
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
        self._ready = queue.Queue()
        self._stderr.clear()
        proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        self._proc = proc
        self._frozen = False
        assert proc.stdout is not None and proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._drain_stdout, args=(proc.stdout,),
                             name=f"camera-{proc.pid}-stdout", daemon=True),
            threading.Thread(target=self._drain_stderr, args=(proc.stderr,),
                             name=f"camera-{proc.pid}-stderr", daemon=True),
        ]
        for t in self._threads:
            t.start()
        try:
            line = self._ready.get(timeout=self.ready_timeout)
        except queue.Empty:
            self._kill_and_reap()
            raise CameraError(f"camera gave no ready line within {self.ready_timeout:.0f} s:\n"
                              f"{self.stderr_tail()}") from None
        if line is None:
            self._reap()
            raise CameraError(f"camera exited with status {proc.returncode} before it was "
                              f"ready:\n{self.stderr_tail()}")
        try:
            info: dict[str, Any] = json.loads(line)
            port = int(info["port"])
            ok = info.get("ready") is True
        except (ValueError, KeyError, TypeError) as e:
            self._kill_and_reap()
            raise CameraError(f"bad ready line {line!r}: {e}\n{self.stderr_tail()}") from None
        if not ok:
            self._kill_and_reap()
            raise CameraError(f"camera not ready: {line!r}\n{self.stderr_tail()}")
        self._port = port
        return self

    def restart(self) -> Self:
        """Start again on the same port; kills the process first if it still runs."""
        if self.running:
            self.kill()
        return self.start()

    def kill(self) -> None:
        """SIGKILL the process and reap it: the camera vanishes without a goodbye."""
        self._kill_and_reap()

    def freeze(self) -> None:
        """SIGSTOP: the camera hangs with its sockets open."""
        if not self.running:
            raise CameraError("camera not running")
        os.kill(self.pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        if self.running:
            os.kill(self.pid, signal.SIGCONT)
        self._frozen = False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait, SIGKILL if needed; always reaps. Safe to call repeatedly."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._frozen:
                self.thaw()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._reap()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "frozen" if self._frozen else "running" if self.running else "stopped"
        return f"<RtspCamera {self.url} {state}>"

    # -- internals --------------------------------------------------------------------

    def _kill_and_reap(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()  # SIGKILL works on a stopped process too
        self._reap()

    def _reap(self) -> None:
        proc = self._proc
        if proc is None:
            return
        proc.wait()
        self._frozen = False
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()

    def _drain_stdout(self, f: IO[str]) -> None:
        first = True
        try:
            for line in f:
                if first:
                    self._ready.put(line)
                    first = False
                else:
                    self._stderr.append("stdout: " + line)
        except (OSError, ValueError):
            pass
        if first:
            self._ready.put(None)

    def _drain_stderr(self, f: IO[str]) -> None:
        try:
            for line in f:
                self._stderr.append(line)
        except (OSError, ValueError):
            pass


def make_clip(
    directory: str | os.PathLike[str], width: int, height: int, fps: int, keyint: int,
    seconds: float,
) -> Path:
    """An H.264 Annex-B clip for file mode, encoded once and cached in `directory`.

    testsrc2 pictures, no B-frames, an access unit delimiter before every picture, an IDR
    picture every `keyint` frames exactly.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = d / f"testsrc2_{width}x{height}_{fps}fps_k{keyint}_{seconds:g}s.h264"
    if out.exists() and out.stat().st_size > 0:
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
        "-t", f"{seconds:g}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-bf", "0",
        "-x264-params", f"aud=1:keyint={keyint}:min-keyint={keyint}:scenecut=0",
        "-f", "h264", str(tmp),
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise CameraError(f"ffmpeg failed to make {out.name}:\n{res.stderr}")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def packet_wallclock_us(packet: av.packet.Packet[Any]) -> int | None:
    """Sender wall clock of a packet from RTCP sender reports, in µs since the Unix epoch.

    FFmpeg's RTSP demuxer attaches AV_PKT_DATA_PRFT side data (an AVProducerReferenceTime:
    int64 wallclock in microseconds, int flags) to every packet once an RTCP sender
    report has arrived; PyAV 18 exposes it only as raw bytes.
    """
    if not packet.has_sidedata("prft"):
        return None
    raw = bytes(packet.get_sidedata("prft"))
    if len(raw) < 8:
        return None
    wallclock: int = struct.unpack_from("=q", raw)[0]
    return wallclock


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition()` until it is true or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
