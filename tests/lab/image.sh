#!/usr/bin/env bash
# Build the lab host image (Debian bookworm + systemd + dockerd + python3 + rsync + node_exporter) and a tiny workload
# image from Debian packages, import them, and rebuild only when this definition changes.
source "$(dirname "$0")/common.sh"

PACKAGES=systemd,systemd-sysv,dbus,python3,docker.io,rsync,procps,iproute2,busybox-static,sqlite3,e2fsprogs,fuse-overlayfs,util-linux,kmod,prometheus-node-exporter
definition_hash=$( { cat "$LAB_DIR/image.sh" "$LAB_DIR/common.sh" "$LAB_DIR/workload-image.sh"; echo "$PACKAGES"; } | sha256sum | cut -c1-16)

current_label() { docker image inspect -f '{{index .Config.Labels "pmr.definition"}}' "$1" 2>/dev/null || true; }

need_tools() {
  command -v mmdebstrap >/dev/null 2>&1 && [ -x /bin/busybox ] && return 0
  log "Installing mmdebstrap and busybox-static"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap busybox-static >/dev/null
}

build_workload_rootfs() {
  # A static busybox and its applet links: enough for sh, sleep, dd, yes, cat.
  local root=$1
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  cp /bin/busybox "$root/bin/busybox"
  for applet in sh sleep dd yes cat head echo ls rm true false seq; do ln -sf busybox "$root/bin/$applet"; done
  echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
}

build_lab() {
  need_tools
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  log "Building $LAB_IMAGE from Debian packages (about a minute)"
  mmdebstrap --variant=minbase --include="$PACKAGES" \
    --customize-hook='chroot "$1" systemctl mask getty@tty1.service console-getty.service systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service systemd-remount-fs.service sys-kernel-debug.mount sys-kernel-tracing.mount >/dev/null 2>&1 || true' \
    --customize-hook='rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"' \
    --customize-hook='mkdir -p "$1/usr/local/share/pmr-workload"' \
    --customize-hook='upload /bin/busybox /usr/local/share/pmr-workload/busybox' \
    --customize-hook='upload '"$LAB_DIR"'/workload-image.sh /usr/local/sbin/pmr-workload-image' \
    --customize-hook='chmod 0755 "$1/usr/local/sbin/pmr-workload-image" "$1/usr/local/share/pmr-workload/busybox"' \
    --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*.bin' \
    bookworm "$work/rootfs.tar" >"$work/mmdebstrap.log" 2>&1 || { tail -n 30 "$work/mmdebstrap.log" >&2; exit 1; }
  docker import \
    --change 'CMD ["/sbin/init"]' \
    --change 'ENV container=docker' \
    --change "LABEL pmr.definition=$definition_hash" \
    "$work/rootfs.tar" "$LAB_IMAGE" >/dev/null
}

build_workload() {
  need_tools
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  build_workload_rootfs "$work/root"
  tar -C "$work/root" -cf "$work/workload.tar" .
  docker import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' --change "LABEL pmr.definition=$definition_hash" \
    "$work/workload.tar" "$LAB_WORKLOAD_IMAGE" >/dev/null
}

if [ "$(current_label "$LAB_IMAGE")" = "$definition_hash" ]; then
  log "$LAB_IMAGE is up to date ($definition_hash)"
else
  build_lab
  log "Imported $LAB_IMAGE ($definition_hash)"
fi
if [ "$(current_label "$LAB_WORKLOAD_IMAGE")" = "$definition_hash" ]; then
  log "$LAB_WORKLOAD_IMAGE is up to date"
else
  build_workload
  log "Imported $LAB_WORKLOAD_IMAGE"
fi
