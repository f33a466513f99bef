# shellcheck shell=bash
# shellcheck disable=SC2034 # these variables are read by image/build, which sources this
# Board "rpi": Raspberry Pi 4 and Pi 5 in one image, with Raspberry Pi OS's kernels and
# boot firmware from the Raspberry Pi archive on top of Debian bookworm arm64.
#   linux-image-rpi-v8    the Pi 4 kernel, copied to the boot partition as kernel8.img
#   linux-image-rpi-2712  the Pi 5 kernel (16K pages), as kernel_2712.img
#   raspi-firmware        start*.elf, fixup*.dat and the kernel hooks that copy kernels,
#                         initramfs files, device trees and overlays to /boot/firmware
# Sourced by image/build.

BOARD_DESCRIPTION="Raspberry Pi 4 and 5"
BOARD_PACKAGES=(raspberrypi-archive-keyring raspi-firmware linux-image-rpi-v8 linux-image-rpi-2712)
RPI_ARCHIVE=${RPI_ARCHIVE:-http://archive.raspberrypi.com/debian}
# The Raspberry Pi archive's signing key (raspberrypi.gpg.key), checked by fingerprint.
RPI_KEY_URL=${RPI_KEY_URL:-$RPI_ARCHIVE/raspberrypi.gpg.key}
RPI_KEY_FINGERPRINT=CF8A1AF502A2AA2D763BAE7E82B129927FA3303E
BOARD_SOURCES=("deb $RPI_ARCHIVE bookworm main")
BOARD_GPIO_BACKEND=rpi
# The button and LED through rpi-lgpio: RPi.GPIO's API on the kernel's gpiochip
# interface, for Pi 4 and Pi 5 alike (RPi.GPIO itself does not drive a Pi 5)
BOARD_PIP_EXTRA=(rpi-lgpio)
# Every storage driver a Pi 4/5 may boot from (SD, USB, NVMe): the generic set.
BOARD_INITRAMFS_MODULES=most
BOARD_INITRAMFS_EXTRA=()

# Fails early, before anything is built, when the archive cannot be reached; then fetches
# its key and checks the fingerprint. Leaves the key (binary keyring) in $1.
board_prepare() {
  local keyring=$1 tmp
  command -v gpg > /dev/null || die "gpg is needed to check the Raspberry Pi archive's key (Debian: gnupg)"
  echo "checking the Raspberry Pi archive ($RPI_ARCHIVE)"
  if ! curl --silent --show-error --fail --max-time 20 --output /dev/null \
      "$RPI_ARCHIVE/dists/bookworm/InRelease"; then
    die "the Raspberry Pi archive $RPI_ARCHIVE cannot be reached (its kernels and boot" \
        "firmware are needed for --board rpi); check the network or set RPI_ARCHIVE to a mirror"
  fi
  tmp=$(mktemp -d)
  curl --silent --show-error --fail --max-time 60 --output "$tmp/key.asc" "$RPI_KEY_URL" \
    || die "cannot download the Raspberry Pi archive key from $RPI_KEY_URL"
  gpg --batch --quiet --no-default-keyring --keyring "$tmp/ring.gpg" --import "$tmp/key.asc"
  if ! gpg --batch --no-default-keyring --keyring "$tmp/ring.gpg" --with-colons \
      --fingerprint | grep -q "^fpr:::::::::$RPI_KEY_FINGERPRINT:"; then
    die "the key at $RPI_KEY_URL is not $RPI_KEY_FINGERPRINT"
  fi
  gpg --batch --no-default-keyring --keyring "$tmp/ring.gpg" --export "$RPI_KEY_FINGERPRINT" \
    > "$keyring"
  rm -rf "$tmp"
}

# raspi-firmware's hooks copy the kernels, initramfs files and device trees to the boot
# partition; where a file is missing (the hooks changed, or did not run in the chroot) it
# is copied here, then the boot configuration is added and the result checked.
board_boot_files() {
  local root=$1 fw=$1/boot/firmware here=$BOARD_DIR flavour name initrd f kernel dtbs
  for flavour in v8:kernel8.img:initramfs8 2712:kernel_2712.img:initramfs_2712; do
    IFS=: read -r flavour name initrd <<< "$flavour"
    kernel=$(find "$root/boot" -maxdepth 1 -name "vmlinuz-*-rpi-$flavour" | sort -V | tail -n 1)
    [ -n "$kernel" ] || die "no linux-image-rpi-$flavour kernel in $root/boot"
    [ -e "$fw/$name" ] || install -m 0644 "$kernel" "$fw/$name"
    [ -e "$fw/$initrd" ] || install -m 0644 "${kernel/vmlinuz-/initrd.img-}" "$fw/$initrd"
    dtbs=$root/usr/lib/linux-image-${kernel##*/vmlinuz-}
    if [ -d "$dtbs/broadcom" ]; then
      cp -n "$dtbs"/broadcom/*.dtb "$fw/"
    fi
    if [ -d "$dtbs/overlays" ]; then
      mkdir -p "$fw/overlays"
      cp -Rn "$dtbs/overlays/." "$fw/overlays/"
    fi
  done
  if [ ! -e "$fw/start4.elf" ] && [ -d "$root/usr/lib/raspi-firmware" ]; then
    cp -n "$root"/usr/lib/raspi-firmware/* "$fw/"
  fi
  install -m 0644 "$here/config.txt" "$fw/config.txt"
  install -m 0644 "$here/cmdline.txt" "$fw/cmdline.txt"
  for f in kernel8.img initramfs8 kernel_2712.img initramfs_2712 \
           bcm2711-rpi-4-b.dtb bcm2712-rpi-5-b.dtb start4.elf fixup4.dat; do
    [ -e "$fw/$f" ] || die "the boot partition lacks $f"
  done
}

BOARD_BOOT_SIZE=512M
BOARD_ROOT_SIZE=3G
