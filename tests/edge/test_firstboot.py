"""First-boot settings: written into a real FAT image with mtools, applied to a box's files.

The image here is a small MBR disk made by the test (mkfs.vfat into a file at an
offset); the full image is built and booted by tests/image.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge.config import ConfigError, load
from edge.firstboot import (
    UNCONFIGURED_ROOM_ID,
    FirstBootSettings,
    Paths,
    apply,
    parse_settings,
    render_settings,
)
from edge.imagefile import ImageError, boot_partition, read_file, write_file
from edge.tomlwrite import dumps

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "edge" / "data" / "roomrec-edge.toml"
CODE = "enrol-5e1f-77"
CAM_SECRET = "s3cr3t-pw"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7mO3yKk0r0Zc7z0Yw9f8o1a2b3c4d5e6f7g8h9 admin@lab"
SETTINGS = f"""
room_name = "Simulation lab 2"
coordinator = "coordinator.lab.example"
enrollment_code = "{CODE}"
ssh_authorized_keys = ["{SSH_KEY}"]
[[cameras]]
name = "overview"
url = "rtsp://192.0.2.30/stream1"
username = "viewer"
password = "{CAM_SECRET}"
"""
needs_mtools = pytest.mark.skipif(not (shutil.which("mcopy") and shutil.which("mkfs.vfat")),
                                  reason="mtools and dosfstools are needed")


def image_config() -> str:
    """The configuration an image ships: the sample with the placeholder room."""
    data = tomllib.loads(SAMPLE.read_text())
    data["room"] = {"id": UNCONFIGURED_ROOM_ID, "name": "Unconfigured room"}
    data["cameras"] = []
    data["pairing"] = {"state_dir": "/var/lib/roomrec/state"}
    return dumps(data)


@pytest.fixture
def box(tmp_path: Path) -> Paths:
    """A room box's files, laid out under tmp_path as on the box."""
    (tmp_path / "boot").mkdir()
    (tmp_path / "etc" / "roomrec").mkdir(parents=True)
    paths = Paths(settings=tmp_path / "boot" / "roomrec.toml",
                  config=tmp_path / "etc" / "roomrec" / "edge.toml",
                  chrony_sources=tmp_path / "etc" / "chrony" / "sources.d" / "roomrec.sources",
                  hostname=tmp_path / "etc" / "hostname", hosts=tmp_path / "etc" / "hosts",
                  machine_id=tmp_path / "etc" / "machine-id",
                  authorized_keys=tmp_path / "root" / ".ssh" / "authorized_keys")
    paths.config.write_text(image_config())
    paths.config.chmod(0o640)
    paths.machine_id.write_text("3fa9c2d41e6b4c0d9a8877665544aa00\n")
    paths.hosts.write_text("127.0.0.1\tlocalhost\n127.0.1.1\timage-build\n")
    return paths


def all_text(folder: Path) -> str:
    return "".join(p.read_text() for p in folder.rglob("*") if p.is_file())


def test_settings_are_applied_and_their_secrets_leave_the_boot_partition(box: Paths) -> None:
    box.settings.write_text(SETTINGS)
    names: list[str] = []
    outcome = apply(box, set_hostname=names.append)

    config = load(box.config)
    assert config.room.name == "Simulation lab 2"
    assert config.room.id == "simulation-lab-2-3fa9c2"  # from the name and the machine id
    assert config.pairing.code is not None and config.pairing.code.get_secret_value() == CODE
    assert [c.name for c in config.cameras] == ["overview"]
    assert config.cameras[0].source_url() == f"rtsp://viewer:{CAM_SECRET}@192.0.2.30/stream1"
    assert config.storage.path == Path("/var/lib/roomrec/recordings")  # the rest is kept
    assert box.config.stat().st_mode & 0o777 == 0o640
    assert "server coordinator.lab.example iburst prefer" in box.chrony_sources.read_text()
    assert box.hostname.read_text() == "roomrec-simulation-lab-2-3fa9c2\n"
    assert box.hosts.read_text().splitlines() == [
        "127.0.0.1\tlocalhost", "127.0.1.1\troomrec-simulation-lab-2-3fa9c2"]
    assert names == ["roomrec-simulation-lab-2-3fa9c2"]
    assert box.authorized_keys.read_text() == SSH_KEY + "\n"
    assert box.authorized_keys.stat().st_mode & 0o777 == 0o600
    assert box.authorized_keys.parent.stat().st_mode & 0o777 == 0o700
    assert outcome.room_id == config.room.id and "enrollment code" in str(outcome)

    boot = box.settings.parent
    assert not box.settings.exists()
    applied = parse_settings((boot / "roomrec.toml.applied").read_text())
    assert applied.room_name == "Simulation lab 2" and applied.enrollment_code is None
    assert applied.cameras is not None and applied.cameras[0].password is None
    assert CODE not in all_text(boot) and CAM_SECRET not in all_text(boot)


def test_a_second_boot_changes_nothing(box: Paths) -> None:
    box.settings.write_text(SETTINGS)
    apply(box)
    before = box.config.read_bytes()
    outcome = apply(box)
    assert str(outcome) == "nothing to do" and outcome.room_id is None
    assert box.config.read_bytes() == before


def test_new_settings_keep_the_rooms_stable_id_unless_they_name_one(box: Paths) -> None:
    box.settings.write_text(SETTINGS)
    first = apply(box).room_id
    box.settings.write_text('room_name = "Sim lab 2 (renamed)"\n')
    apply(box)
    assert load(box.config).room.id == first
    assert load(box.config).room.name == "Sim lab 2 (renamed)"
    assert load(box.config).cameras[0].name == "overview"  # not named: kept
    box.settings.write_text('room_name = "Sim lab 2"\nroom_id = "sim-lab-2"\n'
                            'hostname = "box-17"\n')
    apply(box)
    assert load(box.config).room.id == "sim-lab-2"
    assert box.hostname.read_text() == "box-17\n"


def test_an_unconfigured_box_gets_an_id_of_its_own(box: Paths, tmp_path: Path) -> None:
    other = Paths(**{k: Path(str(v).replace(str(tmp_path), str(tmp_path / "b")))
                     for k, v in vars(box).items()})
    for p in (other.config, other.machine_id, other.settings):
        p.parent.mkdir(parents=True, exist_ok=True)
    other.config.write_text(image_config())
    other.machine_id.write_text("77e0c1aa0000000000000000000000ff\n")
    a, b = apply(box).room_id, apply(other).room_id
    assert a == "unconfigured-3fa9c2" and b == "unconfigured-77e0c1"
    assert load(box.config).room.name == "Unconfigured room 3fa9c2"
    assert not box.settings.exists()


@pytest.mark.parametrize(("settings", "expected"), [
    ('room_name = "Lab"\ncoordinator = "http://coord.lab:8000"\n', "coordinator: Value error, "
                                                                  "give the coordinator's host"),
    ('room_name = "Lab"\n[[cameras]]\nname = "a"\nurl = "rtsp://u:p@192.0.2.1/s"\n',
     "put credentials in username/password"),
    ('room_name = "Lab"\n[[cameras]]\nname = "a"\nurl = "test:a"\n'
     '[[cameras]]\nname = "a"\nurl = "test:b"\n', "camera names must be unique"),
    ('room_nam = "Lab"\n', "room_nam: Extra inputs are not permitted"),
    ('room_name = "Lab\n', "not valid TOML"),
    ('room_name = "Lab"\nssh_authorized_keys = ["-----BEGIN OPENSSH PRIVATE KEY-----"]\n',
     "entry 1 is not an OpenSSH public key"),
])
def test_bad_settings_change_nothing_and_say_why_beside_the_file(
        box: Paths, settings: str, expected: str) -> None:
    box.settings.write_text(settings)
    before = box.config.read_bytes()
    with pytest.raises(ConfigError):
        apply(box)
    assert box.config.read_bytes() == before
    assert box.settings.read_text() == settings  # kept, to be mended
    error = box.settings.with_name("roomrec.toml.error").read_text()
    assert expected.removeprefix("coordinator: Value error, ") in error
    assert not box.chrony_sources.exists() and not box.hostname.exists()
    assert not box.authorized_keys.exists()
    box.settings.write_text('room_name = "Lab"\n')  # mended: applied, the error file goes
    apply(box)
    assert not box.settings.with_name("roomrec.toml.error").exists()


# --- the image side: written without mounting ------------------------------------------

def make_image(path: Path, fat_mb: int = 40) -> None:
    """An MBR disk image: a FAT32 boot partition at 1 MiB, then a Linux partition."""
    start, fat = 2048, fat_mb * 2048
    with path.open("wb") as f:
        f.truncate((start + fat + 2048) * 512)
        for i, (kind, lba, count) in enumerate([(0x0C, start, fat), (0x83, start + fat, 2048)]):
            f.seek(446 + 16 * i)
            f.write(bytes([0, 0, 0, 0, kind, 0, 0, 0]) + struct.pack("<II", lba, count))
        f.seek(510)
        f.write(b"\x55\xaa")
    subprocess.run(["mkfs.vfat", "-F", "32", "-s", "1", "--offset", str(start), "-n", "RRBOOT",
                    str(path), str(fat_mb * 1024)], check=True, capture_output=True)


def edge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True,
                          text=True, timeout=60, check=False)


@needs_mtools
def test_settings_written_into_an_image_are_applied_at_first_boot(
        tmp_path: Path, box: Paths) -> None:
    img = tmp_path / "roomrec-edge.img"
    make_image(img)
    assert boot_partition(img).start == 2048 * 512
    key = tmp_path / "admin.pub"
    key.write_text(SSH_KEY + "\n")
    done = edge_cli("image-settings", str(img), "--room-name", "Interview 1",
                    "--coordinator", "192.0.2.5", "--generate-code", "--ssh-key", str(key))
    assert done.returncode == 0, done.stderr
    code = done.stdout.rsplit("enrollment code: ", 1)[1].strip()
    assert len(code) == 8
    shown = edge_cli("image-settings", str(img), "--show")
    assert shown.returncode == 0 and 'room_name = "Interview 1"' in shown.stdout
    assert code not in shown.stdout and "enrollment code: set (hidden)" in shown.stdout

    # The box boots: its boot partition holds the file just written.
    raw = read_file(img, "roomrec.toml")
    assert raw is not None
    box.settings.write_bytes(raw)
    fb = edge_cli("firstboot", "--settings", str(box.settings), "--config", str(box.config),
                  "--chrony-sources", str(box.chrony_sources), "--hostname-file",
                  str(box.hostname), "--hosts-file", str(box.hosts), "--machine-id-file",
                  str(box.machine_id), "--authorized-keys-file", str(box.authorized_keys),
                  "--no-sethostname")
    assert fb.returncode == 0, fb.stderr
    config = load(box.config)
    assert config.room.name == "Interview 1"
    assert config.pairing.code is not None and config.pairing.code.get_secret_value() == code
    assert "server 192.0.2.5 iburst" in box.chrony_sources.read_text()
    assert box.authorized_keys.read_text() == SSH_KEY + "\n"
    assert code not in fb.stdout + fb.stderr


@needs_mtools
def test_writing_settings_replaces_them_and_keeps_the_rest_of_the_partition(
        tmp_path: Path) -> None:
    img = tmp_path / "a.img"
    make_image(img)
    write_file(img, "config.txt", b"arm_64bit=1\n")
    first = FirstBootSettings(room_name="A")
    write_file(img, "roomrec.toml", render_settings(first).encode())
    assert edge_cli("image-settings", str(img), "--room-name", "B",
                    "--room-id", "lab-b").returncode == 0
    raw = read_file(img, "roomrec.toml")
    assert raw is not None
    again = parse_settings(raw.decode())
    assert (again.room_name, again.room_id) == ("B", "lab-b")
    assert read_file(img, "config.txt") == b"arm_64bit=1\n"
    assert read_file(img, "missing.txt") is None


@needs_mtools
def test_bad_input_is_refused_and_the_image_is_untouched(tmp_path: Path) -> None:
    img = tmp_path / "a.img"
    make_image(img)
    before = img.read_bytes()
    bad = edge_cli("image-settings", str(img), "--room-name", "A", "--coordinator",
                   "https://coord/")
    assert bad.returncode == 2 and "give the coordinator's host name" in bad.stderr
    assert edge_cli("image-settings", str(img)).returncode == 2  # no room name
    assert img.read_bytes() == before

    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(4096))
    no_mbr = edge_cli("image-settings", str(blank), "--room-name", "A")
    assert no_mbr.returncode == 1 and "no partition table" in no_mbr.stderr
    with pytest.raises(ImageError, match="GPT"):
        gpt = tmp_path / "gpt.img"
        gpt.write_bytes(bytes(446) + bytes([0, 0, 0, 0, 0xEE, 0, 0, 0]) + struct.pack(
            "<II", 1, 100) + bytes(48) + b"\x55\xaa")
        boot_partition(gpt)


def test_the_first_boot_unit_runs_before_the_edge_and_chrony() -> None:
    unit = (ROOT / "edge" / "data" / "roomrec-firstboot.service").read_text()
    edge_unit = (ROOT / "edge" / "data" / "roomrec-edge.service").read_text()
    lines = dict(ln.split("=", 1) for ln in unit.splitlines() if "=" in ln
                 and not ln.startswith("#"))
    assert set(lines["Before"].split()) >= {"roomrec-edge.service", "chrony.service"}
    assert "/boot/firmware" in lines["RequiresMountsFor"].split()
    exe = lines["ExecStart"].split()[0]
    assert exe in edge_unit  # the same installed command as the service
    assert Path(exe).name == "roomrec-edge"
