#!/bin/sh
# Inside a lab host: import the tiny busybox workload image into this host's own dockerd.
# Idempotent; run again after a storage-driver switch (images of the old driver are hidden).
set -eu
tag=${1:-pmr-workload:latest}
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "present $tag"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/tmp" "$work/etc"
install -m 0755 /usr/local/share/pmr-workload/busybox "$work/bin/busybox"
for applet in sh sleep dd yes cat head echo ls rm true false seq; do ln -s busybox "$work/bin/$applet"; done
echo 'root:x:0:0:root:/:/bin/sh' >"$work/etc/passwd"
tar -C "$work" -c . | docker import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' - "$tag" >/dev/null
echo "imported $tag"
