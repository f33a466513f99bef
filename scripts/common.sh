# Shared by scripts/test and scripts/demo: install what roomrec needs on a Debian machine.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${ROOMREC_VENV:-$ROOT/.venv}

# Debian packages: ffmpeg (ffprobe checks every file), the GStreamer RTSP server with
# Debian's python3-gi (the test cameras), and the plugins that encode and packetize;
# Debian's Chromium for the web page's tests (Playwright drives it; it never downloads one);
# for the edge OS image: mmdebstrap and qemu-user-static (an arm64 root built on any
# machine), genimage with dosfstools, mtools and e2fsprogs (the disk image, no loop
# devices), qemu-system-arm and fdisk's sfdisk (booting it in the tests), shellcheck
# (the image scripts are checked).
DEB_PACKAGES=(
  ffmpeg
  python3-gi
  gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-tools
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly
  gstreamer1.0-plugins-bad
  chromium
  mmdebstrap
  arch-test
  qemu-user-static
  binfmt-support
  genimage
  dosfstools
  mtools
  e2fsprogs
  qemu-system-arm
  fdisk
  shellcheck
)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian_packages() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# The virtual environment, with roomrec installed editable plus the given extras.
make_venv() {
  local extras=$1
  local python=${PYTHON:-python3}
  if [ ! -x "$VENV/bin/python" ]; then
    "$python" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
  if [ -n "$extras" ]; then
    "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"
  else
    "$VENV/bin/python" -m pip install -q -e "$ROOT"
  fi
}
