"""What the boot test needs to run the image: its partitions, a tap device, a qemu
virtual machine whose serial console is drained and searched, and a clean power-off.

Nothing here sleeps in place of a condition: console lines and probe events are waited
for with a condition variable; the API is polled until it answers.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


@dataclass(frozen=True)
class Partition:
    start: int  # bytes
    size: int  # bytes
    kind: str


def partitions(image: Path) -> list[Partition]:
    """The image's partitions, from ``sfdisk --json``."""
    out = subprocess.run(["sfdisk", "--json", str(image)], check=True, capture_output=True,
                         text=True).stdout
    table = json.loads(out)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    return [Partition(int(p["start"]) * sector, int(p["size"]) * sector, str(p["type"]))
            for p in table["partitions"]]


def open_tap(name: str) -> int:
    """A new tap device ``name``; it lives as long as the returned descriptor (or qemu's
    copy of it) is open."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Drained:
    """Reads a child's output stream in a thread, line by line, into a list (and a log
    file), so the child never blocks on a full pipe; `wait_for` waits for a line."""

    def __init__(self, stream: IO[bytes], log: Path | None = None) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._log = log.open("a", encoding="utf-8", errors="replace") if log else None
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True,
                                        name=f"drain {log.name if log else 'stream'}")
        self._thread.start()

    def _run(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\r\n")
                if self._log:
                    self._log.write(line + "\n")
                    self._log.flush()
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        finally:
            stream.close()
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._log:
                self._log.close()

    def wait_for(self, match: Callable[[str], bool], timeout: float, what: str) -> str:
        """The first line (from the beginning) that `match`es; AssertionError, with the
        output's last lines, if none comes within `timeout` seconds or the stream ends."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if match(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    state = "the output ended" if self._closed else f"{timeout:.0f} s passed"
                    raise AssertionError(f"{what}: {state} first; last lines:\n"
                                         + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 1.0))

    def wait_for_re(self, pattern: str, timeout: float, what: str) -> str:
        rx = re.compile(pattern)
        return self.wait_for(lambda line: rx.search(line) is not None, timeout, what)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Qmp:
    """qemu's machine protocol over its unix socket: enough to press the power button."""

    def __init__(self, path: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(10)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rwb")
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while True:
            line = self._file.readline()
            if not line:
                raise ConnectionError("qemu closed its QMP socket")
            msg: dict[str, Any] = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command: str) -> dict[str, Any]:
        self._file.write(json.dumps({"execute": command}).encode() + b"\n")
        self._file.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"QMP {command}: {reply['error']}")
        return reply

    def close(self) -> None:
        self._file.close()
        self._sock.close()


class Vm:
    """qemu-system-aarch64 booting the image directly from its kernel and initramfs."""

    def __init__(self, argv: Sequence[str], workdir: Path, pass_fds: Sequence[int]) -> None:
        self.console_log = workdir / "console.log"
        self.qmp_path = workdir / "qmp.sock"
        argv = [*argv, "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=tuple(pass_fds))
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.console = Drained(self.proc.stdout, self.console_log)
        self.stderr = Drained(self.proc.stderr, workdir / "qemu-stderr.log")

    def running(self) -> bool:
        return self.proc.poll() is None

    def power_off(self, timeout: float) -> int:
        """Press the virtual power button (ACPI/GPIO power key: systemd shuts down) and
        wait for qemu to exit; its exit status."""
        qmp = Qmp(self.qmp_path)
        try:
            qmp.execute("system_powerdown")
        finally:
            qmp.close()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.console.join(10)
        self.stderr.join(10)
