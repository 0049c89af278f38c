# Shared settings for the lab scripts. Sourced, not run.
# shellcheck shell=bash
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_DIR/../.." && pwd)
LAB_IMAGE=${LAB_IMAGE:-pmr-lab:latest}
LAB_WORKLOAD_IMAGE=${LAB_WORKLOAD_IMAGE:-pmr-workload:latest}
LAB_CACHE=${LAB_CACHE:-/var/cache/postmortem-remediation}
# What a lab host needs instead of --privileged (the sandbox refuses CAP_SYS_RESOURCE).
LAB_CAPS=(SYS_ADMIN NET_ADMIN MKNOD SYS_PTRACE SYS_CHROOT SETFCAP AUDIT_CONTROL DAC_READ_SEARCH NET_RAW IPC_LOCK SYS_MODULE SYS_RAWIO)
log() { printf '[lab] %s\n' "$*" >&2; }
