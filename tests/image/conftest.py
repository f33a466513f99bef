"""Fixtures of the image boot test: the qemu board's image (built, or given), and that
image booted in qemu-system-aarch64 with a second NIC on a tap device whose other end
is a network namespace holding only an mDNS browser.

Building and booting a whole OS image under emulation takes many minutes, so these run
only in CI (``CI=true``) or when asked for (``ROOMREC_IMAGE_TEST=1``); then a missing
tool or missing root is a failure, not a skip. ``ROOMREC_IMAGE=path/to.img`` boots that
image instead of building one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.imagefile import boot_partition, read_file
from tests.image.vm import Drained, Vm, open_tap, partitions
from tests.support.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"
ENABLED = IN_CI or os.environ.get("ROOMREC_IMAGE_TEST") == "1"
IMAGE_ENV = "ROOMREC_IMAGE"
BUILD_TIMEOUT_S = 1800     # a cold image build; measured: see image/README.md
BOOT_BUDGET_S = 600        # from qemu's start to the last check
GROW_BY = 2 * 1024**3      # the test's "card" is this much bigger than the image
ROOM_NAME = "Image test room"
HOST_LINK_ADDRESS = "169.254.0.1/16"   # outside the range IPv4LL picks from (RFC 3927)
TIMINGS: dict[str, float] = {}

skip_unless_enabled = pytest.mark.skipif(
    not ENABLED, reason="builds and boots the whole edge OS image under emulation (about "
                        "9 minutes on 2 cores, as root): runs in CI, or with ROOMREC_IMAGE_TEST=1")


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"the image test needs {', '.join(missing)} (Debian: qemu-system-arm, "
                    "mmdebstrap, genimage, mtools, fdisk, iproute2, util-linux)")


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"the image test runs as root: {why}")


def write_timings() -> None:
    out = REPO / "build" / "image" / "boot-test-timings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(TIMINGS, indent=2) + "\n")
    print("image test timings:", json.dumps(TIMINGS))


@pytest.fixture(scope="session")
def qemu_image() -> Path:
    """The qemu board's image: $ROOMREC_IMAGE, or one built now by image/build."""
    given = os.environ.get(IMAGE_ENV)
    if given:
        path = Path(given)
        if not path.is_file():
            pytest.fail(f"{IMAGE_ENV}={given} is not a file")
        return path
    require_root("image/build makes the root folder as root")
    require("mmdebstrap", "genimage", "mkdosfs", "mcopy", "mke2fs")
    out = REPO / "build" / "image"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "build-qemu.log"
    started = time.monotonic()
    with log.open("wb") as f:
        # its own process group, so that a timeout ends every process of the build
        proc = subprocess.Popen([str(REPO / "image" / "build"), "--board", "qemu",
                                 "--out", str(out)], stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(BUILD_TIMEOUT_S)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    TIMINGS["cold_build_s"] = round(time.monotonic() - started, 1)
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"image/build failed with status {rc}; the end of {log}:\n{tail}")
    return out / "roomrec-edge-qemu-arm64.img"


@dataclass
class Booted:
    """The image booted in qemu, its first-boot settings applied."""

    vm: Vm
    disk: Path                 # the booted copy of the image
    root_size: int             # the root partition's size in the image as built
    api: str                   # http://127.0.0.1:PORT/api/v1
    code: str                  # the enrollment code written into roomrec.toml
    ssh_port: int              # 127.0.0.1 port forwarded to the box's SSH
    ssh_key: Path              # the private key whose public half roomrec.toml carries
    probe: Drained             # the mDNS browser's JSON lines
    deadline: float            # time.monotonic() by which every check is done
    facts: dict[str, object] = field(default_factory=dict)

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


def start_probe(tap: str, workdir: Path) -> tuple[subprocess.Popen[bytes], Drained, Drained]:
    proc = subprocess.Popen(
        ["unshare", "--net", "--", sys.executable, "-m", "tests.image.mdns_probe",
         "--interface", tap, "--address", HOST_LINK_ADDRESS],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    return (proc, Drained(proc.stdout, workdir / "mdns-probe.log"),
            Drained(proc.stderr, workdir / "mdns-probe-stderr.log"))


def stop_probe(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(15)


def qemu_argv(kernel: Path, initrd: Path, cmdline: str, disk: Path, port: int,
              ssh_port: int, tap_fd: int) -> list[str]:
    return [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
        "-accel", "tcg,thread=multi", "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd),
        # the image's own command line; the journal on the console too, to debug a failure
        "-append", f"{cmdline} systemd.journald.forward_to_console=1",
        "-drive", f"file={disk},format=raw,if=none,id=disk0,discard=unmap",
        "-device", "virtio-blk-pci,drive=disk0",
        # the LAN: user networking (DHCP), nothing reachable but the forwarded API and SSH
        "-netdev", f"user,id=lan,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:8080,"
                   f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=lan,mac=52:54:00:72:72:01",
        # the mDNS link: the tap, whose other end is the probe's namespace
        "-netdev", f"tap,id=link,fd={tap_fd}",
        "-device", "virtio-net-pci,netdev=link,mac=52:54:00:72:72:02",
        "-serial", "stdio", "-monitor", "none",
    ]


@pytest.fixture(scope="module")
def booted(qemu_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    require_root("the tap device and the network namespace need CAP_NET_ADMIN")
    require("qemu-system-aarch64", "sfdisk", "mcopy", "mdir", "ip", "unshare", "ssh",
            "ssh-keygen")
    if not Path("/dev/net/tun").exists():
        pytest.fail("the image test needs /dev/net/tun for the tap device of its mDNS link")
    work = tmp_path_factory.mktemp("boot")
    disk = work / "disk.img"
    # a copy (the built image stays as it is), on a bigger "card": the first boot grows
    subprocess.run(["cp", "--sparse=always", str(qemu_image), str(disk)], check=True)
    parts = partitions(disk)
    os.truncate(disk, disk.stat().st_size + GROW_BY)
    code = secrets.token_hex(6)
    ssh_key = work / "admin_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "image-test",
                    "-f", str(ssh_key)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "edge", "image-settings", str(disk),
                    "--room-name", ROOM_NAME, "--code", code,
                    "--ssh-key", f"{ssh_key}.pub"], check=True, cwd=REPO, capture_output=True)
    boot = parts[0].start
    assert boot_partition(disk).start == boot  # our MBR reader agrees with sfdisk's
    for name in ("vmlinuz", "initrd.img", "cmdline.txt"):
        data = read_file(disk, name)
        assert data is not None, f"{name} is not on the image's boot partition"
        (work / name).write_bytes(data)
    cmdline = (work / "cmdline.txt").read_text().strip()

    tap = f"rrt{secrets.token_hex(4)}"
    tap_fd = open_tap(tap)
    probe, probe_out, _probe_err = start_probe(tap, work)
    vm: Vm | None = None
    try:
        subprocess.run(["ip", "link", "set", "dev", tap, "netns", str(probe.pid)], check=True)
        assert probe.stdin is not None
        probe.stdin.write(b"moved\n")
        probe.stdin.flush()
        probe_out.wait_for(lambda line: '"ready"' in line, 30, "the mDNS probe getting ready")
        port, ssh_port = free_ports(2)  # distinct: qemu's hostfwd cannot pick them itself
        vm = Vm(qemu_argv(work / "vmlinuz", work / "initrd.img", cmdline, disk, port,
                          ssh_port, tap_fd), work, pass_fds=[tap_fd])
        os.close(tap_fd)
        tap_fd = -1
        yield Booted(vm=vm, disk=disk, root_size=parts[1].size,
                     api=f"http://127.0.0.1:{port}/api/v1", code=code, ssh_port=ssh_port,
                     ssh_key=ssh_key, probe=probe_out,
                     deadline=vm.started + BOOT_BUDGET_S)
    finally:
        try:
            if vm is not None:
                if vm.running():
                    with contextlib.suppress(Exception):
                        vm.power_off(120)
                vm.kill()
        finally:
            stop_probe(probe)
            if tap_fd >= 0:
                os.close(tap_fd)
            write_timings()
