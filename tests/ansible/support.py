"""Debian root folders for the Ansible tests, and ansible-playbook driven against them.

A root is bootstrapped once with mmdebstrap into a tarball cached under the repository's
build/ folder (keyed by everything that goes into it), then unpacked once per inventory
host. Playbooks reach the roots through the community.general.chroot connection, as an
image build does. The roomrec wheel and its dependencies (a wheelhouse, also cached) are
installed from files: pip inside a root never goes to the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
CACHE_DIR = REPO / "build" / "ansible-tests"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

SUITE = "bookworm"
ARCH = "amd64"
MIRROR = "http://deb.debian.org/debian"
# What any real box already has: Python for Ansible's modules (python3-apt for its apt
# module) and systemd. Everything else (chrony, python3-venv, ...) the roles install.
ROOT_PACKAGES = ("python3", "python3-apt", "systemd")
# Bookworm's Python and glibc: the wheelhouse is fetched for them, whatever runs pytest.
ROOT_PYTHON = "3.11"
ROOT_PLATFORMS = ("manylinux_2_36_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                  "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64",
                  "linux_x86_64")
# Where the wheelhouse sits inside each root, and the pip arguments that use it.
WHEELHOUSE_IN_ROOT = "/var/cache/roomrec-wheelhouse"
OFFLINE_PIP_ARGS = f"--no-index --find-links {WHEELHOUSE_IN_ROOT}"


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _run(cmd: Sequence[str | Path], timeout: float, **kwargs: Any) -> str:
    """Run a command to completion, its output drained; fail with that output."""
    proc: subprocess.CompletedProcess[str] = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False,
        **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(str(c) for c in cmd)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def root_tarball() -> Path:
    """A bookworm root with ROOT_PACKAGES, built on the first call and cached."""
    key = _key(SUITE, ARCH, MIRROR, ROOT_PACKAGES, "apt")
    path = CACHE_DIR / f"debian-{SUITE}-{ARCH}-{key}.tar"
    if path.exists():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.unlink(missing_ok=True)
    _run(["mmdebstrap", "--quiet", f"--architectures={ARCH}", "--variant=apt",
          f"--include={','.join(ROOT_PACKAGES)}", "--format=tar", SUITE, part, MIRROR],
         timeout=1200)
    part.rename(path)
    return path


def build_wheel(out: Path) -> Path:
    """A wheel of roomrec built from this repository, as a release would be."""
    out.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", REPO, "-w", out],
         timeout=600)
    wheels = sorted(out.glob("roomrec-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = z.read(name).decode()
    return sorted(line.split(":", 1)[1].strip() for line in meta.splitlines()
                  if line.startswith("Requires-Dist:") and "extra ==" not in line)


def wheelhouse(wheel: Path) -> Path:
    """The wheel's dependencies for bookworm's Python, fetched once and cached."""
    key = _key(_requirements(wheel), ROOT_PYTHON, ROOT_PLATFORMS)
    path = CACHE_DIR / f"wheelhouse-{key}"
    if path.exists():
        return path
    part = path.with_name(path.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    platforms = [arg for p in ROOT_PLATFORMS for arg in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
          "--python-version", ROOT_PYTHON, "--implementation", "cp", *platforms,
          "--dest", part, wheel], timeout=600)
    for own in part.glob("roomrec-*.whl"):
        own.unlink()
    part.rename(path)
    return path


def unpack_root(tarball: Path, dest: Path, wheels: Path) -> Path:
    """A fresh root from the tarball, with the wheelhouse inside it."""
    dest.mkdir(parents=True)
    _run(["tar", "--extract", "--numeric-owner", "--file", tarball, "--directory", dest],
         timeout=300)
    shutil.copytree(wheels, dest / WHEELHOUSE_IN_ROOT.lstrip("/"))
    return dest


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with Path("/proc/self/mountinfo").open() as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if (p + "/").startswith(prefix)]


def remove_root(root: Path) -> None:
    """Delete a root folder, refusing if anything is mounted inside it."""
    mounted = _mounts_under(root)
    if mounted:
        raise RuntimeError(f"not removing {root}: mounted inside it: {mounted}")
    shutil.rmtree(root)


def in_root(root: Path, *argv: str, user: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command inside a root (as `user`, with its groups, if given)."""
    spec = [f"--userspec={user}:{user}"] if user else []
    return subprocess.run(["chroot", *spec, str(root), *argv], capture_output=True,
                          text=True, timeout=timeout, check=False)


# -- ansible-playbook ---------------------------------------------------------------------


@dataclass
class TaskResult:
    play: str
    task: str
    host: str
    result: dict[str, Any]

    @property
    def changed(self) -> bool:
        return bool(self.result.get("changed"))

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed"))


@dataclass
class PlaybookRun:
    returncode: int
    stats: dict[str, dict[str, int]]
    tasks: list[TaskResult]
    stderr: str

    def changed_tasks(self) -> list[str]:
        return [f"{t.host}: {t.task}" for t in self.tasks if t.changed]

    def failed_tasks(self) -> list[TaskResult]:
        return [t for t in self.tasks if t.failed]

    def explain(self) -> str:
        failed = [f"{t.host}: {t.task}: {json.dumps(t.result)[:2000]}"
                  for t in self.failed_tasks()]
        return (f"rc {self.returncode}; stats {self.stats}\nfailed: {failed}\n"
                f"stderr: {self.stderr[-3000:]}")


def run_playbook(playbook: str, inventory: Path, home: Path, *args: str,
                 timeout: float = 900) -> PlaybookRun:
    """ansible-playbook from ansible/, with its ansible.cfg and a JSON report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_HOME=str(home), ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), playbook, *args],
                          cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"ansible-playbook {playbook} gave no JSON report (rc "
                             f"{proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}") from None
    tasks = [TaskResult(play["play"]["name"], task["task"]["name"], host, result)
             for play in report["plays"] for task in play["tasks"]
             for host, result in task["hosts"].items()]
    return PlaybookRun(proc.returncode, report["stats"], tasks, proc.stderr)


# -- a service started inside a root ------------------------------------------------------


@dataclass
class RootProcess:
    """A command run inside a root, its output read by a thread until it exits."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching `pattern`; fails if the process ends first."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"exited {self.proc.wait()} before printing "
                                     f"{pattern!r}:\n{''.join(self.output)[-3000:]}")
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n"
                             f"{''.join(self.output)[-3000:]}")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL if it is still running after `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout)
        return code


@contextmanager
def started_in_root(root: Path, argv: Sequence[str], user: str) -> Iterator[RootProcess]:
    """Start `argv` inside `root` as `user`; always stopped on leaving."""
    with subprocess.Popen(["chroot", f"--userspec={user}:{user}", str(root), *argv],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        running = RootProcess(proc)
        try:
            yield running
        finally:
            running.stop()


def unit_exec_start(unit: Path) -> list[str]:
    """A unit file's ExecStart= command line, split as systemd would (simple cases)."""
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError(f"{unit} has no ExecStart=")
