"""Files on the FAT boot partition of a disk image (or a flashed card), without mounting.

The partition is found from the image's MBR; files are written with mtools
(`mcopy -i IMAGE@@OFFSET`), which works on a regular file or a block device as an
unprivileged user, with no loop device and no mount.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError

SECTOR = 512
FAT_TYPES = {0x01: "FAT12", 0x04: "FAT16", 0x06: "FAT16", 0x0B: "FAT32", 0x0C: "FAT32 (LBA)",
             0x0E: "FAT16 (LBA)"}
GPT_PROTECTIVE = 0xEE


class ImageError(EdgeError):
    """The image has no usable FAT partition, or mtools failed."""


@dataclass(frozen=True)
class Partition:
    number: int  # 1-4
    kind: int  # the MBR partition type
    start: int  # bytes from the start of the image
    size: int  # bytes


def partitions(image: Path) -> list[Partition]:
    """The primary partitions of an MBR disk image."""
    try:
        with image.open("rb") as f:
            mbr = f.read(SECTOR)
    except OSError as e:
        raise ImageError(f"cannot read {image}: {e.strerror}") from None
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise ImageError(f"{image} has no partition table (no MBR signature)")
    out = []
    for i in range(4):
        entry = mbr[446 + 16 * i: 446 + 16 * (i + 1)]
        kind = entry[4]
        start, count = struct.unpack("<II", entry[8:16])
        if kind and count:
            out.append(Partition(i + 1, kind, start * SECTOR, count * SECTOR))
    if any(p.kind == GPT_PROTECTIVE for p in out):
        raise ImageError(f"{image} is partitioned with GPT; roomrec images use an MBR")
    return out


def boot_partition(image: Path) -> Partition:
    """The first FAT partition: the boot partition of a roomrec (and Raspberry Pi) image."""
    for p in partitions(image):
        if p.kind in FAT_TYPES:
            return p
    raise ImageError(f"{image} has no FAT partition")


def _mtools(args: list[str], what: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    try:
        done = subprocess.run(args, capture_output=True, env=env, timeout=60, check=False)
    except FileNotFoundError:
        raise ImageError("mtools is needed (Debian/Ubuntu: apt install mtools; "
                         "macOS: brew install mtools)") from None
    if done.returncode != 0:
        raise ImageError(f"{what}: {done.stderr.decode(errors='replace').strip()}")
    return done


def _target(image: Path, part: Partition) -> str:
    return f"{image}@@{part.start}"


def write_file(image: Path, name: str, data: bytes) -> Partition:
    """Write `data` as `name` at the top of the image's boot partition, replacing it."""
    part = boot_partition(image)
    with tempfile.NamedTemporaryFile(prefix="roomrec-", suffix=".tmp") as tmp:
        tmp.write(data)
        tmp.flush()
        _mtools(["mcopy", "-o", "-i", _target(image, part), tmp.name, f"::{name}"],
                f"writing {name} into {image}")
    return part


def list_files(image: Path) -> list[str]:
    """The names at the top of the image's boot partition."""
    listing = _mtools(["mdir", "-b", "-i", _target(image, boot_partition(image)), "::"],
                      f"listing {image}").stdout.decode(errors="replace")
    return [entry.removeprefix("::/") for entry in listing.split()]


def read_file(image: Path, name: str) -> bytes | None:
    """`name` from the boot partition, or None if it is not there."""
    if name not in list_files(image):
        return None
    return _mtools(["mtype", "-i", _target(image, boot_partition(image)), f"::{name}"],
                   f"reading {name} from {image}").stdout
