"""The Ansible roles against real Debian bookworm root folders, one per inventory host.

site.yml converges a room box and the coordinator through the chroot connection (as
an image build does), a second run changes nothing, and the outcome is checked for
real: by verify.yml, by the services' own --validate-config inside the roots, by
systemd-analyze and chronyd there, and by starting both services' ExecStart inside
their roots and asking them for /api/v1/health. A bad inventory value fails at the
validate step and leaves the good configuration in place.

Needs root (chroot, device nodes) and mmdebstrap; skipped without them, except in CI.
The first run bootstraps the Debian root (about a minute) and caches it in build/.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.ansible.support import (
    ANSIBLE_PLAYBOOK,
    OFFLINE_PIP_ARGS,
    PlaybookRun,
    build_wheel,
    in_root,
    remove_root,
    root_tarball,
    run_playbook,
    started_in_root,
    unit_exec_start,
    unpack_root,
    wheelhouse,
)

# Bootstrapping and converging take minutes from a cold cache; a test that needs them
# first pays for them.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOM = "sim-lab-1"
COORDINATOR = "roomrec-central"
TIME_SERVER = "192.0.2.10"  # the coordinator's address as the rooms see it
ROOM_SUBNETS = ["192.0.2.0/24", "198.51.100.0/24"]
CAMERA_PASSWORD = 'p"w\\ü #1'  # quotes, a backslash, non-ASCII: TOML quoting is tested
CODE = "enroll-sim-lab-1"
EDGE_STORAGE = "/srv/recordings"  # outside /var/lib/roomrec: needs the unit's drop-in
CENTRAL_STORAGE = "/srv/central"
EDGE_TOML = "etc/roomrec/edge.toml"
VALIDATE_TASK = ("edge : Write the edge configuration (checked by the edge before it replaces "
                 "the old one)")


def _require_tools() -> None:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (chroot and the roots' device nodes)")
    if shutil.which("mmdebstrap") is None:
        missing.append("mmdebstrap (apt-get install mmdebstrap)")
    if not ANSIBLE_PLAYBOOK.exists():
        missing.append("ansible-playbook in this venv (the test extra's ansible)")
    if missing:
        _skip_or_fail(", ".join(missing))


def _skip_or_fail(what: str) -> NoReturn:
    """Skip for want of a tool, with the reason; in CI (CI=true) fail instead."""
    reason = f"the Ansible tests need {what}"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _inventory(roots: dict[str, Path], wheel: Path) -> dict[str, Any]:
    common = {
        "ansible_connection": "community.general.chroot",
        "ansible_become": False,  # already root; a bare root has no sudo
        "ansible_python_interpreter": "/usr/bin/python3",
        "common_time_server": TIME_SERVER,
        "edge_wheel": str(wheel),
        "coordinator_wheel": str(wheel),
        "edge_pip_extra_args": OFFLINE_PIP_ARGS,
        "coordinator_pip_extra_args": OFFLINE_PIP_ARGS,
    }
    coordinator = {
        "ansible_host": str(roots[COORDINATOR]),
        "common_chrony_serve": True,
        "common_chrony_allow": ROOM_SUBNETS,
        "common_journald_storage": "persistent",
        "coordinator_storage_path": CENTRAL_STORAGE,
        "coordinator_api_host": "127.0.0.1",
        "coordinator_api_port": 0,  # the service prints the port it got
        "coordinator_secure_cookies": False,
        "coordinator_discovery_enabled": False,
        "coordinator_first_admin_password": "test-admin-password",
    }
    room = {
        "ansible_host": str(roots[ROOM]),
        "edge_room_name": "Simulation lab 1",
        "edge_cameras": [{"name": "front", "url": "test:front?size=320x180&fps=5",
                                  "username": "viewer", "password": CAMERA_PASSWORD}],
        "edge_enrollment_code": CODE,
        "edge_gpio_backend": "sim",
        "edge_storage_path": EDGE_STORAGE,
        "edge_reserve_mb": 64,
        "edge_api_host": "127.0.0.1",
        "edge_api_port": 0,
        "edge_announce_enabled": False,
        "edge_require_clock_sync": False,
    }
    return {"all": {"vars": common, "children": {
        "coordinator": {"hosts": {COORDINATOR: coordinator}},
        "rooms": {"hosts": {ROOM: room}},
    }}}


@dataclass
class Site:
    """The roots of one test inventory and the playbook runs against them."""

    folder: Path
    inventory: Path
    roots: dict[str, Path]
    converge: PlaybookRun

    def run(self, playbook: str, *args: str) -> PlaybookRun:
        return run_playbook(playbook, self.inventory, self.folder / "ansible-home", *args)

    def file(self, host: str, path: str) -> Path:
        return self.roots[host] / path.lstrip("/")


@pytest.fixture(scope="session")
def base_root() -> Path:
    _require_tools()
    return root_tarball()


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The roomrec wheel built from this repository, and its dependencies' wheelhouse."""
    _require_tools()
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    return wheel, wheelhouse(wheel)


@pytest.fixture(scope="module")
def site(base_root: Path, packages: tuple[Path, Path],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    wheel, wheels = packages
    folder = tmp_path_factory.mktemp("site")
    roots = {host: unpack_root(base_root, folder / host, wheels)
             for host in (COORDINATOR, ROOM)}
    inventory = folder / "hosts.yml"  # JSON is YAML
    inventory.write_text(json.dumps(_inventory(roots, wheel), indent=2))
    converge = run_playbook("site.yml", inventory, folder / "ansible-home")
    try:
        yield Site(folder, inventory, roots, converge)
    finally:
        for root in roots.values():
            remove_root(root)


def test_site_converges_every_host(site: Site) -> None:
    run = site.converge
    assert run.returncode == 0, run.explain()
    assert not run.failed_tasks(), run.explain()
    for host in (ROOM, COORDINATOR):
        assert run.stats[host]["failures"] == 0, run.explain()
        assert run.stats[host]["changed"] > 0, f"{host} was not provisioned: {run.stats}"


def test_second_run_changes_nothing(site: Site) -> None:
    run = site.run("site.yml")
    assert run.returncode == 0, run.explain()
    assert set(run.stats) == {ROOM, COORDINATOR}
    assert {h: s["changed"] for h, s in run.stats.items()} == {ROOM: 0, COORDINATOR: 0}, \
        run.changed_tasks()


def test_verify_playbook_passes_and_changes_nothing(site: Site) -> None:
    run = site.run("verify.yml")
    assert run.returncode == 0, run.explain()
    assert {h: (s["failures"], s["changed"]) for h, s in run.stats.items()} == \
        {ROOM: (0, 0), COORDINATOR: (0, 0)}, run.explain()
    checked = {t.task for t in run.tasks if t.host == ROOM and not t.result.get("skipped")}
    assert "Check the configuration with the edge itself" in checked


def _ids(root: Path, table: str) -> dict[str, tuple[int, list[str]]]:
    """/etc/passwd or /etc/group of a root: name -> (id, members or [primary group id])."""
    out = {}
    for line in (root / "etc" / table).read_text().splitlines():
        fields = line.split(":")
        extra = fields[3].split(",") if table == "group" and fields[3] else [fields[3]]
        out[fields[0]] = (int(fields[2]), extra if table == "group" else [fields[3]])
    return out


def test_edge_user_config_and_units(site: Site) -> None:
    root = site.roots[ROOM]
    groups, users = _ids(root, "group"), _ids(root, "passwd")
    assert "roomrec" in users
    assert users["roomrec"][1] == [str(groups["roomrec"][0])]
    assert "roomrec" in groups["gpio"][1]  # made by the role: Debian has no gpio group
    assert "roomrec" in groups["video"][1]

    toml = site.file(ROOM, EDGE_TOML)
    st = toml.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (0, groups["roomrec"][0])
    config = tomllib.loads(toml.read_text())
    assert config["room"] == {"id": ROOM, "name": "Simulation lab 1"}
    assert config["cameras"] == [{"name": "front", "url": "test:front?size=320x180&fps=5",
                                  "username": "viewer", "password": CAMERA_PASSWORD}]
    assert config["pairing"]["code"] == CODE
    assert config["gpio"] == {"backend": "sim"}  # pins left to the edge's defaults
    assert config["storage"]["path"] == EDGE_STORAGE

    link = site.file(ROOM, "/usr/local/bin/roomrec-edge")
    assert link.is_symlink()
    assert str(link.readlink()) == "/opt/roomrec/bin/roomrec-edge"

    # The units are the package's own files, byte for byte.
    shipped = sorted(root.glob("opt/roomrec/lib/python3*/site-packages/edge/data/"
                               "roomrec-*.service"))
    assert "roomrec-edge.service" in [p.name for p in shipped]
    for unit in shipped:
        assert site.file(ROOM, f"/etc/systemd/system/{unit.name}").read_bytes() == \
            unit.read_bytes()
        # enabled: the wants link (in a chroot the first-boot unit is enabled too)
        wants = site.file(ROOM, f"/etc/systemd/system/multi-user.target.wants/{unit.name}")
        assert wants.is_symlink(), unit.name
        assert str(wants.readlink()) == f"/etc/systemd/system/{unit.name}"

    dropin = site.file(ROOM, "/etc/systemd/system/roomrec-edge.service.d/roomrec-paths.conf")
    assert f"ReadWritePaths={EDGE_STORAGE} /var/lib/roomrec/state" in dropin.read_text()
    storage = site.file(ROOM, EDGE_STORAGE).stat()
    assert (storage.st_uid, stat.S_IMODE(storage.st_mode)) == (users["roomrec"][0], 0o750)


def test_coordinator_config_and_unit(site: Site) -> None:
    root = site.roots[COORDINATOR]
    users, groups = _ids(root, "passwd"), _ids(root, "group")
    toml = site.file(COORDINATOR, "/etc/roomrec/coordinator.toml")
    st = toml.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, groups["roomrec"][0])
    config = tomllib.loads(toml.read_text())
    assert config["storage"] == {"kind": "folder", "path": CENTRAL_STORAGE}
    assert config["api"] == {"host": "127.0.0.1", "port": 0, "secure_cookies": False}
    assert config["first_admin"] == {"username": "admin", "password": "test-admin-password"}

    shipped = next(root.glob("opt/roomrec/lib/python3*/site-packages/coordinator/data/"
                             "roomrec-coordinator.service"))
    unit = site.file(COORDINATOR, "/etc/systemd/system/roomrec-coordinator.service")
    assert unit.read_bytes() == shipped.read_bytes()
    wants = site.file(COORDINATOR,
                      "/etc/systemd/system/multi-user.target.wants/roomrec-coordinator.service")
    assert str(wants.readlink()) == "/etc/systemd/system/roomrec-coordinator.service"
    dropin = site.file(COORDINATOR, "/etc/systemd/system/roomrec-coordinator.service.d/"
                                    "roomrec-paths.conf")
    assert f"ReadWritePaths=/var/lib/roomrec {CENTRAL_STORAGE}" in dropin.read_text()
    assert site.file(COORDINATOR, CENTRAL_STORAGE).stat().st_uid == users["roomrec"][0]


def test_configs_pass_the_services_own_validation_inside_the_roots(site: Site) -> None:
    edge = in_root(site.roots[ROOM], "/usr/local/bin/roomrec-edge", "--config",
                   "/etc/roomrec/edge.toml", "--validate-config")
    assert edge.returncode == 0, edge.stderr
    assert "valid" in edge.stdout
    assert CAMERA_PASSWORD not in edge.stdout + edge.stderr
    coordinator = in_root(site.roots[COORDINATOR], "/usr/local/bin/roomrec-coordinator",
                          "--config", "/etc/roomrec/coordinator.toml", "--validate-config")
    assert coordinator.returncode == 0, coordinator.stderr


def test_units_pass_systemd_analyze_verify(site: Site) -> None:
    for host, pattern in ((ROOM, "roomrec-*.service"), (COORDINATOR, "roomrec-*.service")):
        units = sorted(site.file(host, "/etc/systemd/system").glob(pattern))
        assert units, host
        result = in_root(site.roots[host], "systemd-analyze", "verify",
                         *(f"/etc/systemd/system/{u.name}" for u in units))
        assert result.returncode == 0, f"{host}: {result.stdout}{result.stderr}"
        assert "roomrec" not in result.stderr, result.stderr  # no warning about our units


def test_chrony_coordinator_serves_and_rooms_follow(site: Site) -> None:
    sources = site.file(ROOM, "/etc/chrony/sources.d/roomrec.sources").read_text()
    directives = [line for line in sources.splitlines() if not line.startswith("#")]
    assert directives == [f"server {TIME_SERVER} iburst prefer"]
    # chronyd itself parses every file: the sources file, and chrony.conf with conf.d
    parsed = in_root(site.roots[ROOM], "chronyd", "-p", "-f",
                     "/etc/chrony/sources.d/roomrec.sources")
    assert parsed.returncode == 0, parsed.stderr
    assert f"server {TIME_SERVER} iburst prefer" in parsed.stdout
    room = in_root(site.roots[ROOM], "chronyd", "-p")
    assert room.returncode == 0, room.stderr
    assert "makestep 1 3" in room.stdout
    assert "sourcedir /etc/chrony/sources.d" in room.stdout
    assert "local stratum" not in room.stdout
    assert "allow" not in room.stdout

    central = in_root(site.roots[COORDINATOR], "chronyd", "-p")
    assert central.returncode == 0, central.stderr
    for subnet in ROOM_SUBNETS:
        assert f"allow {subnet}" in central.stdout
    assert "local stratum 10" in central.stdout
    own = site.file(COORDINATOR, "/etc/chrony/sources.d/roomrec.sources").read_text()
    assert TIME_SERVER not in own  # the coordinator does not follow itself


def test_journald_drop_in(site: Site) -> None:
    room = in_root(site.roots[ROOM], "systemd-analyze", "cat-config",
                   "systemd/journald.conf")
    assert room.returncode == 0, room.stderr
    assert "/etc/systemd/journald.conf.d/roomrec.conf" in room.stdout
    assert "Storage=volatile" in room.stdout
    assert "RuntimeMaxUse=64M" in room.stdout
    central = site.file(COORDINATOR, "/etc/systemd/journald.conf.d/roomrec.conf").read_text()
    assert "Storage=persistent" in central  # as its inventory says


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=10) as r:
        assert r.status == 200
        body: dict[str, Any] = json.loads(r.read())
    return body


def test_coordinator_starts_from_its_unit_and_answers_health(site: Site) -> None:
    argv = unit_exec_start(site.file(COORDINATOR,
                                     "/etc/systemd/system/roomrec-coordinator.service"))
    assert argv[0] == "/usr/local/bin/roomrec-coordinator"
    with started_in_root(site.roots[COORDINATOR], argv, user="roomrec") as service:
        port = int(service.wait_for(r"web page on http://127\.0\.0\.1:(\d+)/", 60).group(1))
        assert _health(port) == {"ok": True, "coordinator": "roomrec-coordinator"}
        code = service.stop()
    assert code == 0, "".join(service.output)
    assert site.file(COORDINATOR, "/var/lib/roomrec/coordinator.sqlite3").stat().st_size > 0


def test_edge_starts_from_its_unit_and_answers_health(site: Site) -> None:
    argv = unit_exec_start(site.file(ROOM, "/etc/systemd/system/roomrec-edge.service"))
    assert argv[0] == "/usr/local/bin/roomrec-edge"
    with started_in_root(site.roots[ROOM], argv, user="roomrec") as service:
        port = int(service.wait_for(r"API on port (\d+)", 60).group(1))
        body = _health(port)
        assert (body["ok"], body["room_id"]) == (True, ROOM), body
        code = service.stop()
    assert code == 0, "".join(service.output)
    assert CAMERA_PASSWORD not in "".join(service.output)


@pytest.mark.parametrize(("bad", "message"), [
    ({"edge_cameras": [{"name": "front", "url": "rtsp://viewer:secret@192.0.2.21/s1"}]},
     "put credentials in username/password"),
    ({"edge_button_pin": 17, "edge_led_pin": 17}, "used twice"),
], ids=["credentials-in-camera-url", "pin-used-twice"])
def test_bad_value_fails_at_validate_and_keeps_the_good_config(
        site: Site, bad: dict[str, Any], message: str) -> None:
    toml = site.file(ROOM, EDGE_TOML)
    good = toml.read_bytes()
    extra = site.folder / "bad-vars.json"
    extra.write_text(json.dumps(bad))
    run = site.run("site.yml", "--limit", ROOM, "--extra-vars", f"@{extra}")
    assert run.returncode != 0, run.explain()
    failed = run.failed_tasks()
    assert [(t.host, t.task) for t in failed] == [(ROOM, VALIDATE_TASK)], run.explain()
    assert message in json.dumps(failed[0].result, ensure_ascii=False), failed[0].result
    assert toml.read_bytes() == good
    assert stat.S_IMODE(toml.stat().st_mode) == 0o640
    still = in_root(site.roots[ROOM], "/usr/local/bin/roomrec-edge", "--config",
                    "/etc/roomrec/edge.toml", "--validate-config")
    assert still.returncode == 0, still.stderr


@pytest.fixture
def loop_device(site: Site) -> Iterator[str]:
    """A 64 MiB blank block device (a loop device over a sparse file), also present in the
    room's root at the same path. Detached afterwards."""
    if shutil.which("losetup") is None:
        _skip_or_fail("losetup (util-linux) for the data device")
    image = site.folder / "data.img"
    with image.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    attach = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                            text=True, timeout=30, check=False)
    if attach.returncode != 0:
        _skip_or_fail(f"a loop device (losetup: {attach.stderr.strip()})")
    device = attach.stdout.strip()
    node = site.file(ROOM, device)
    try:
        node.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(node, stat.S_IFBLK | 0o600, Path(device).stat().st_rdev)
        yield device
    finally:
        node.unlink(missing_ok=True)
        subprocess.run(["losetup", "--detach", device], capture_output=True, timeout=30,
                       check=True)




def _blkid(device: str) -> dict[str, str]:
    out = subprocess.run(["blkid", "--output", "export", device], capture_output=True,
                         text=True, timeout=30, check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_data_device_gets_ext4_once_and_an_fstab_entry(site: Site, loop_device: str) -> None:
    assert _blkid(loop_device) == {}  # blank
    args = ("--limit", ROOM, "--extra-vars", f"edge_data_device={loop_device}")
    first = site.run("site.yml", *args)
    assert first.returncode == 0, first.explain()
    made = _blkid(loop_device)
    assert made.get("TYPE") == "ext4", made
    fstab = site.file(ROOM, "/etc/fstab").read_text().splitlines()
    assert f"{loop_device} {EDGE_STORAGE} ext4 noatime 0 0" in fstab

    again = site.run("site.yml", *args)
    assert again.returncode == 0, again.explain()
    assert again.stats[ROOM]["changed"] == 0, again.changed_tasks()
    assert _blkid(loop_device)["UUID"] == made["UUID"]  # not made again
