#!/bin/sh
# Build the storage-driver probe image from this host's own files, into the store of the driver dockerd runs now.
# No registry: a static busybox when the host has one (a one-file image), else the host's /bin/sh with the shared
# libraries it loads. Usage: storage-probe-image.sh TAG. Prints "present TAG" or "built TAG from PATH".
set -eu
tag=${1:?usage: storage-probe-image.sh TAG}
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "present $tag"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/tmp"

# ldd exits non-zero for a static executable ("not a dynamic executable").
is_static() { command -v ldd >/dev/null 2>&1 && ! ldd "$1" >/dev/null 2>&1; }

source=""
for candidate in /bin/busybox /usr/bin/busybox /sbin/busybox /usr/sbin/busybox; do
  if [ -x "$candidate" ] && is_static "$candidate"; then
    cp "$candidate" "$work/bin/busybox"
    ln -s busybox "$work/bin/sh"
    source=$candidate
    break
  fi
done
if [ -z "$source" ]; then
  source=$(readlink -f /bin/sh)
  cp "$source" "$work/bin/sh"
  if command -v ldd >/dev/null 2>&1; then
    for lib in $(ldd "$source" 2>/dev/null | grep -o '/[^ ]*'); do
      mkdir -p "$work$(dirname "$lib")"
      cp -L "$lib" "$work$lib"
    done
  fi
fi
tar -C "$work" -c . | docker import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' \
  --change 'LABEL postmortem.remediation.probe=storage-driver' - "$tag" >/dev/null
echo "built $tag from $source"
