#!/usr/bin/env bash
# Start or stop N lab hosts (containers running systemd and their own dockerd) and write an inventory.
#   tests/lab/lab.sh up [N] [PREFIX]    default 2 hosts named PREFIX-1..N (PREFIX: tests/lab/prefix.sh, that is
#                                       $LAB_PREFIX, else this checkout's own pmr-<hash>)
#   tests/lab/lab.sh down [PREFIX]      removes the hosts named exactly PREFIX-<number>, nothing else
# The inventory ($LAB_INVENTORY, else lab/inventory.ini) reaches each host through the docker connection: no network.
# Options (environment), all off by default:
#   LAB_PUBLISH="9100 ..."       publish these container ports on 127.0.0.1 only, on ports the kernel picks
#                                (read them back with `docker port NAME 9100/tcp`)
#   LAB_DATA_ROOT_SIZE=1G        /var/lib/docker on a small ext4 filesystem of its own (tests/lab/loopfs.sh, named
#                                after the host) instead of a volume, so "the disk is full" is real; removed by down
#   LAB_MOUNTS="SRC:DST:ro ..."  extra bind mounts (docker run -v syntax)
source "$(dirname "$0")/common.sh"

action=${1:-up}
count=${2:-2}
prefix=${3:-$(bash "$LAB_DIR/prefix.sh")}
[ "$action" = down ] && prefix=${2:-$(bash "$LAB_DIR/prefix.sh")}
inventory=${LAB_INVENTORY:-$REPO_ROOT/lab/inventory.ini}

# Only PREFIX-<number>: on an engine shared by several labs, pmr-me must not match pmr-me-x-1 or pmr-me-1-old.
is_lab_host() {
  [[ $1 =~ ^"$prefix"-[0-9]+$ ]]
}

run_host() {
  local name=$1
  local caps=()
  local extra=() data_root port mount
  for c in "${LAB_CAPS[@]}"; do caps+=(--cap-add "$c"); done
  if [ -n "${LAB_DATA_ROOT_SIZE:-}" ]; then
    data_root=$(bash "$LAB_DIR/loopfs.sh" create "$name" "$LAB_DATA_ROOT_SIZE")
  else
    docker volume create "$name-docker" >/dev/null
    data_root="$name-docker"
  fi
  for port in ${LAB_PUBLISH:-}; do extra+=(-p "127.0.0.1::$port"); done
  for mount in ${LAB_MOUNTS:-}; do extra+=(-v "$mount"); done
  docker run -d --name "$name" --hostname "$name" "${caps[@]}" \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock \
    -v "$data_root:/var/lib/docker" "${extra[@]}" \
    --label pmr.lab=1 "$LAB_IMAGE" /sbin/init >/dev/null
}

remove_host() {
  local name=$1
  docker rm -f -v "$name" >/dev/null 2>&1 || true
  docker volume rm "$name-docker" >/dev/null 2>&1 || true
  # A data root on a loop filesystem (LAB_DATA_ROOT_SIZE) goes with its host.
  if [ -e "$(bash "$LAB_DIR/loopfs.sh" path "$name")" ]; then bash "$LAB_DIR/loopfs.sh" destroy "$name"; fi
}

wait_running() {
  local name=$1 state=""
  for _ in $(seq 1 90); do
    state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded)
      docker exec "$name" systemctl is-active --quiet docker && return 0 ;;
    esac
    sleep 1
  done
  log "$name did not come up (systemd: ${state:-no answer})"
  local failed
  failed=$(docker exec "$name" systemctl --failed --no-pager 2>&1 || true)
  printf '%s\n' "$failed" >&2
  # Each lab host's systemd takes several inotify instances, counted per user (root) machine-wide: with the default
  # limit of 128, path units fail from about the 19th host on.
  if grep -q '\.path ' <<<"$failed"; then
    log "its .path units failed: fs.inotify.max_user_instances ($(sysctl -n fs.inotify.max_user_instances 2>/dev/null)) is" \
        "probably used up by the lab hosts running; raise it (sysctl -w fs.inotify.max_user_instances=1024) to run more"
  fi
  return 1
}

case "$action" in
  up)
    bash "$LAB_DIR/engine.sh"
    bash "$LAB_DIR/image.sh"
    mkdir -p "$(dirname "$inventory")"
    {
      echo "# Written by tests/lab/lab.sh; hosts are reached with docker exec."
      echo "[docker_hosts]"
      for i in $(seq 1 "$count"); do echo "$prefix-$i"; done
      echo
      echo "[docker_hosts:vars]"
      echo "ansible_connection=community.docker.docker"
      echo "ansible_python_interpreter=/usr/bin/python3"
      echo "# Lab hosts run everything as root and have no sudo."
      echo "ansible_become=false"
    } >"$inventory"
    for i in $(seq 1 "$count"); do
      name="$prefix-$i"
      # docker prints an empty line for a container that does not exist: ask for existence first.
      if docker container inspect "$name" >/dev/null 2>&1; then
        running=$(docker container inspect -f '{{.State.Running}}' "$name")
      else
        running=absent
      fi
      case "$running" in
        true) log "$name is already running" ;;
        absent) run_host "$name" ;;
        # Left behind stopped (an engine restart, a killed session): start it afresh.
        *) log "$name exists but is stopped: recreating it"
           remove_host "$name"
           run_host "$name" ;;
      esac
    done
    for i in $(seq 1 "$count"); do
      wait_running "$prefix-$i"
      docker exec "$prefix-$i" /usr/local/sbin/pmr-workload-image >/dev/null
      log "$prefix-$i: systemd running, docker active"
    done
    log "Inventory: $inventory"
    ;;
  down)
    for name in $(docker ps -a --filter label=pmr.lab=1 --format '{{.Names}}'); do
      is_lab_host "$name" || continue
      remove_host "$name"
      log "removed $name"
    done
    ;;
  *) echo "usage: $0 up [N] [PREFIX] | down [PREFIX]" >&2; exit 2 ;;
esac
