"""The image recipe's cheap checks, run every time (no image is built): the scripts
parse, the labels the boot depends on agree everywhere, the Raspberry Pi boot files
point at the right kernels, the playbook is valid against the roles it applies."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.firstboot import UNCONFIGURED_ROOM_ID, UNCONFIGURED_ROOM_NAME

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "image"
SCRIPTS = [IMAGE / "build", IMAGE / "release", *sorted(IMAGE.glob("boards/*/board.sh"))]


def build_setting(name: str) -> str:
    m = re.search(rf"^{name}=(\S+)$", (IMAGE / "build").read_text(), re.MULTILINE)
    assert m, f"image/build sets no {name}"
    return m.group(1)


def board_setting(board: str, name: str) -> str:
    """A variable of a board profile, as bash sees it after sourcing the profile."""
    out = subprocess.run(["bash", "-c", f'source "$1" && printf %s "${{{name}}}"', "-",
                          str(IMAGE / "boards" / board / "board.sh")],
                         check=True, capture_output=True, text=True)
    return out.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(IMAGE)))
def test_scripts_parse(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_pass_shellcheck() -> None:
    sh = [IMAGE / "rootfs" / "usr" / "local" / "sbin" / "roomrec-growroot"]
    result = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS + sh)], cwd=IMAGE,
                            check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_build_explains_itself_without_root() -> None:
    result = subprocess.run([str(IMAGE / "build"), "--help"], check=False, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "--board qemu|rpi" in result.stdout
    result = subprocess.run([str(IMAGE / "build"), "--board", "no-such-board"],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "unknown board 'no-such-board' (boards: qemu rpi)" in result.stderr


def test_labels_agree_everywhere() -> None:
    root, boot = build_setting("ROOT_LABEL"), build_setting("BOOT_LABEL")
    assert len(boot) <= 11 and boot == boot.upper(), "a FAT label: 11 characters, upper case"
    assert len(root) <= 16, "an ext4 label has at most 16 bytes"
    fstab = (IMAGE / "rootfs" / "etc" / "fstab").read_text().splitlines()
    mounts = {f[1]: f[0] for f in (line.split() for line in fstab)
              if f and not f[0].startswith("#")}
    assert mounts == {"/": f"LABEL={root}", "/boot/firmware": f"LABEL={boot}"}
    rpi_cmdline = (IMAGE / "boards" / "rpi" / "cmdline.txt").read_text()
    assert rpi_cmdline.count("\n") == 1 and rpi_cmdline.endswith("\n"), \
        "the Pi firmware reads cmdline.txt's first line only"
    for cmdline in (rpi_cmdline, board_setting("qemu", "BOARD_CMDLINE")):
        assert f"root=LABEL={root}" in cmdline.split(), cmdline
    layout = (IMAGE / "genimage.cfg.in").read_text()
    assert 'label = "@ROOT_LABEL@"' in layout and 'label = "@BOOT_LABEL@"' in layout
    assert 'mountpoint = "/boot/firmware"' in layout


def test_raspberry_pi_boot_configuration() -> None:
    sections: dict[str, list[str]] = {"all": []}
    current = "all"
    for raw in (IMAGE / "boards" / "rpi" / "config.txt").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
        else:
            sections[current].append(line)
    assert "arm_64bit=1" in sections["all"]
    assert sections["pi4"] == ["kernel=kernel8.img", "initramfs initramfs8 followkernel"]
    assert sections["pi5"] == ["kernel=kernel_2712.img",
                               "initramfs initramfs_2712 followkernel"]
    packages = board_setting("rpi", "BOARD_PACKAGES[*]").split()
    assert {"linux-image-rpi-v8", "linux-image-rpi-2712", "raspi-firmware"} <= set(packages)


def test_playbook_is_valid_against_the_roles(tmp_path: Path) -> None:
    playbook_cmd = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_cmd.exists():
        pytest.skip(f"ansible is not installed in {playbook_cmd.parent}")
    if not (REPO / "ansible" / "roles" / "edge" / "tasks" / "main.yml").exists():
        pytest.skip("the Ansible edge role is not there yet")
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "ansible" / "roles"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path)}
    result = subprocess.run([str(playbook_cmd), "--syntax-check", "-i", "localhost,",
                             str(IMAGE / "edge-image.yml")],
                            check=False, capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_room_is_the_placeholder_the_first_boot_replaces() -> None:
    play = (IMAGE / "edge-image.yml").read_text()
    room_id = re.search(r"^\s+edge_room_id: (\S+)", play, re.MULTILINE)
    name = re.search(r"^\s+edge_room_name: (.+?)\s*$", play, re.MULTILINE)
    assert room_id and name, "edge-image.yml sets the image's room"
    # any other id would be kept by the first boot: every box would announce the same room
    assert room_id.group(1) == UNCONFIGURED_ROOM_ID
    assert name.group(1) == UNCONFIGURED_ROOM_NAME
