#!/usr/bin/env bash
# A small real filesystem of its own for a lab host's /var/lib/docker, so that "the disk is nearly full" is a
# real condition: a sparse file, mkfs.ext4, loop-mounted on the outer machine, bind-mounted into the lab host.
#   tests/lab/loopfs.sh create NAME [SIZE]   prints the mount point (default SIZE 2560M)
#   tests/lab/loopfs.sh destroy NAME         unmounts, detaches the loop device, removes the image
#   tests/lab/loopfs.sh path NAME            prints the mount point
# Needs root on the outer machine (losetup, mount). NAME must be a plain name (letters, digits, - and _).
source "$(dirname "$0")/common.sh"

action=${1:-}
name=${2:-}
size=${3:-2560M}
loop_root="$LAB_CACHE/loop"

case "$name" in
  ''|*[!A-Za-z0-9_-]*) echo "usage: $0 create NAME [SIZE] | destroy NAME | path NAME (NAME: [A-Za-z0-9_-]+)" >&2; exit 2 ;;
esac
image="$loop_root/$name.img"
mnt="$loop_root/$name"

is_mounted() { mountpoint -q "$mnt" 2>/dev/null; }

case "$action" in
  create)
    mkdir -p "$loop_root" "$mnt"
    if is_mounted; then
      log "loopfs $name already mounted at $mnt"
    else
      # A left-over image from an interrupted run is recreated: the lab host's data-root starts empty.
      rm -f "$image"
      truncate -s "$size" "$image"
      # An ext4 label holds 16 characters: the end of the name (it carries the host's number) fits.
      mkfs.ext4 -q -F -m 0 -L "${name: -16}" "$image"
      # -o loop attaches a loop device with autoclear: unmounting detaches it.
      mount -o loop,noatime "$image" "$mnt"
      log "loopfs $name: $(df -h --output=size,avail "$mnt" | tail -n 1 | xargs) (size avail) at $mnt"
    fi
    echo "$mnt"
    ;;
  destroy)
    if is_mounted; then
      dev=$(findmnt -n -o SOURCE --target "$mnt" || true)
      umount "$mnt" || umount -l "$mnt"
      # autoclear normally detaches; make sure nothing is left behind.
      if [ -n "$dev" ] && losetup "$dev" >/dev/null 2>&1; then losetup -d "$dev" 2>/dev/null || true; fi
    fi
    for dev in $(losetup -j "$image" 2>/dev/null | cut -d: -f1); do losetup -d "$dev" 2>/dev/null || true; done
    rm -f "$image"
    rmdir "$mnt" 2>/dev/null || true
    log "loopfs $name removed"
    ;;
  path)
    echo "$mnt"
    ;;
  *) echo "usage: $0 create NAME [SIZE] | destroy NAME | path NAME" >&2; exit 2 ;;
esac
