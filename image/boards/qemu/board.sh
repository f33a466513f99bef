# shellcheck shell=bash
# shellcheck disable=SC2034 # these variables are read by image/build, which sources this
# Board "qemu": qemu-system-aarch64 -M virt (what CI boots). Debian's generic arm64 kernel;
# the boot partition holds vmlinuz and initrd.img for a direct kernel boot
# (-kernel/-initrd/-append, read back out of the image; see tests/image/test_boot.py).
# Sourced by image/build.

BOARD_DESCRIPTION="qemu-system-aarch64 -M virt (CI)"
BOARD_PACKAGES=(linux-image-arm64)
BOARD_SOURCES=()
BOARD_GPIO_BACKEND=sim
# pip packages for the edge's venv beyond roomrec's own dependencies
BOARD_PIP_EXTRA=()
# The virt machine's disk, PCI and network are virtio; only those modules go into the
# initramfs (MODULES=list), which keeps it small and quick to build under emulation.
BOARD_INITRAMFS_MODULES=list
BOARD_INITRAMFS_EXTRA=(virtio_pci virtio_blk virtio_net ext4 vfat nls_cp437 nls_ascii)
# The kernel command line the boot test (or any qemu user) passes with -append.
BOARD_CMDLINE="root=LABEL=rrroot rootfstype=ext4 rootwait console=ttyAMA0 panic=-1"

# Copies the kernel and initramfs into the boot partition's folder.
board_boot_files() {
  local root=$1 fw=$1/boot/firmware kernel initrd
  kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
  initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
  [ -n "$kernel" ] || die "no kernel in $root/boot"
  [ -n "$initrd" ] || die "no initramfs in $root/boot"
  install -m 0644 "$kernel" "$fw/vmlinuz"
  install -m 0644 "$initrd" "$fw/initrd.img"
  echo "$BOARD_CMDLINE" > "$fw/cmdline.txt"
}

BOARD_BOOT_SIZE=128M
BOARD_ROOT_SIZE=3G
