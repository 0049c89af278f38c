#!/usr/bin/env bash
# The prefix of every name this checkout creates on the shared machine: lab hosts (make lab-up), Molecule's hosts,
# the end-to-end tests' hosts, the demo's, the benches', their volumes and loop filesystems.
#   tests/lab/prefix.sh        prints $LAB_PREFIX if set, else pmr-<first 6 hex digits of the sha256 of this
#                              checkout's absolute path>: two checkouts on one Docker engine never share a name.
# The Makefile computes it once (make lab-prefix prints it) and exports it; the Python programs ask this script when
# they are run without make. A prefix is letters, digits, - and _ (a container name, a loop file name).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
prefix=${LAB_PREFIX:-}
if [ -z "$prefix" ]; then
  prefix="pmr-$(printf '%s' "$root" | sha256sum | cut -c1-6)"
fi
case "$prefix" in
  [A-Za-z0-9]*) ;;
  *) echo "LAB_PREFIX '$prefix' must start with a letter or a digit" >&2; exit 2 ;;
esac
case "$prefix" in
  *[!A-Za-z0-9_-]*) echo "LAB_PREFIX '$prefix' may hold only letters, digits, - and _" >&2; exit 2 ;;
esac
echo "$prefix"
