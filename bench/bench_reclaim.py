"""docker_reclaim against `docker system prune -af` on the same filled host.

Each contender gets a fresh lab host whose /var/lib/docker is its own 2.5 GB ext4 filesystem (loop device), filled
identically the way the incident did (the Molecule scenario's fill.sh: CI rebuilds with the classic builder and
BuildKit, finished job containers, a database stopped by the backup with a restart policy, a keep-labelled tool
image, a running web service, a container logging fast into an unbounded json-file log). Then it runs, and the
bench prints: wall time, bytes freed on the filesystem (df), free space reached, and what it removed that it
should not have.

    .venv/bin/python bench/bench_reclaim.py            (make bench runs it; needs root, a Docker engine, pmr-lab)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "extensions" / "molecule" / "docker_prune_timer"
LOOPFS = REPO / "tests" / "lab" / "loopfs.sh"
HOST = "pmr-i4-bench"
SIZE = "2560M"
TARGET = "80%"
CAPS = ["SYS_ADMIN", "NET_ADMIN", "MKNOD", "SYS_PTRACE", "SYS_CHROOT", "SETFCAP", "AUDIT_CONTROL", "DAC_READ_SEARCH",
        "NET_RAW", "IPC_LOCK", "SYS_MODULE", "SYS_RAWIO"]
# What an operator needs to still be there afterwards, and why.
MUST_SURVIVE_IMAGES = {
    "tool-keep:latest": "keep-labelled image",
    "svc-db:latest": "image of the database the backup stopped",
    "svc-web:latest": "image of the running web service",
    "pmr-workload:latest": "image of a running container",
}
MUST_SURVIVE_CONTAINERS = {
    "db": "database stopped by the backup (restart policy unless-stopped)",
    "web": "running web service",
    "chatty": "running container",
}


def sh(*args: str, check: bool = True, capture: bool = True) -> str:
    result = subprocess.run(list(args), capture_output=capture, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result.stdout if capture else ""


def in_host(command: str, check: bool = True) -> str:
    return sh("docker", "exec", HOST, "bash", "-c", command, check=check)


def destroy_host() -> None:
    sh("docker", "rm", "-f", "-v", HOST, check=False)
    sh("bash", str(LOOPFS), "destroy", HOST, check=False)


def create_host() -> None:
    destroy_host()
    mount = sh("bash", str(LOOPFS), "create", HOST, SIZE).strip().splitlines()[-1]
    caps = [arg for cap in CAPS for arg in ("--cap-add", cap)]
    sh("docker", "run", "-d", "--name", HOST, "--hostname", HOST, *caps,
       "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
       "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
       "-v", f"{mount}:/var/lib/docker:rw", "--label", "pmr.lab=1", "pmr-lab:latest", "/sbin/init")
    for _attempt in range(90):
        state = sh("docker", "exec", HOST, "systemctl", "is-system-running", check=False).strip()
        if state in ("running", "degraded") and in_host("docker info >/dev/null 2>&1 && echo up", check=False):
            break
        time.sleep(1)
    else:
        raise RuntimeError(f"{HOST} did not come up")
    in_host("/usr/local/sbin/pmr-workload-image >/dev/null")
    sh("docker", "cp", str(SCENARIO / "files" / "ci"), f"{HOST}:/root/ci")
    sh("docker", "cp", str(SCENARIO / "files" / "fill.sh"), f"{HOST}:/root/fill.sh")


def fill() -> dict:
    in_host("cd /root/ci && DOCKER_BUILDKIT=1 docker build -q -f Dockerfile.stage --build-arg BUILD=old "
            "-t ci-stage:latest . >/dev/null")
    return json.loads(in_host("bash /root/fill.sh 4 450").strip().splitlines()[-1])


def snapshot() -> dict:
    avail, size = in_host("df --output=avail,size -B1 /var/lib/docker | tail -n 1").split()
    images = in_host("docker image ls --format '{{.Repository}}:{{.Tag}}'").split()
    containers = in_host("docker ps -a --format '{{.Names}}'").split()
    log_size = int(in_host("stat -c %s $(docker inspect -f '{{.LogPath}}' chatty)", check=False).strip() or 0)
    return {"free": int(avail), "size": int(size), "images": images, "containers": containers, "log": log_size}


INNER_SECONDS: dict[str, float] = {}


def run_docker_reclaim() -> float:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_FORCE_COLOR="false",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="true", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    ansible = Path(sys.executable).parent / "ansible"
    started = time.monotonic()
    result = subprocess.run(
        [str(ansible), "-i", f"{HOST},", "-c", "community.docker.docker", "-e",
         "ansible_python_interpreter=/usr/bin/python3", HOST, "-m", "postmortem.remediation.docker_reclaim",
         "-a", f"target_free={TARGET}"],
        capture_output=True, text=True, env=env, check=False,
    )
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"docker_reclaim failed: {result.stdout}{result.stderr}")
    answer = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"][HOST]
    INNER_SECONDS["docker_reclaim"] = answer["elapsed_seconds"]
    return wall


def run_system_prune() -> float:
    started = time.monotonic()
    in_host("docker system prune -af >/dev/null")
    return time.monotonic() - started


def wrongly_removed(after: dict) -> list[str]:
    lost = [f"image {name} ({why})" for name, why in MUST_SURVIVE_IMAGES.items() if name not in after["images"]]
    lost += [f"container {name} ({why})" for name, why in MUST_SURVIVE_CONTAINERS.items()
             if name not in after["containers"]]
    return lost


def measure(name: str, action) -> dict:
    create_host()
    fill_started = time.monotonic()
    fill()
    fill_seconds = time.monotonic() - fill_started
    before = snapshot()
    seconds = action()
    after = snapshot()
    target = int(before["size"] * float(TARGET.rstrip("%")) / 100)
    return {
        "name": name,
        "fill_seconds": round(fill_seconds, 1),
        "seconds": round(seconds, 2),
        "free_before": before["free"],
        "free_after": after["free"],
        "reclaimed": after["free"] - before["free"],
        "target": target,
        "target_met": after["free"] >= target,
        "log_before": before["log"],
        "log_after": after["log"],
        "images_left": len(after["images"]),
        "containers_left": len(after["containers"]),
        "wrongly_removed": wrongly_removed(after),
    }


def mib(n: int) -> str:
    return f"{n / 1048576:8.1f} MiB"


def main() -> int:
    if os.geteuid() != 0:
        print("bench_reclaim: needs root (losetup, mount)", file=sys.stderr)
        return 1
    results = []
    try:
        results.append(measure(f"docker_reclaim target_free={TARGET}", run_docker_reclaim))
        results.append(measure("docker system prune -af", run_system_prune))
    finally:
        destroy_host()
    print(f"\nbench_reclaim: same fill each time (2.5 GB ext4 data-root, CI rebuilds, jobs, a stopped service, "
          f"a 450 MB log); target {TARGET} free\n")
    print(f"{'contender':34} {'time':>8} {'freed':>13} {'free after':>13} {'target':>7} {'log after':>13}")
    for r in results:
        print(f"{r['name']:34} {r['seconds']:7.2f}s {mib(r['reclaimed'])} {mib(r['free_after'])} "
              f"{'met' if r['target_met'] else 'MISSED':>7} {mib(r['log_after'])}")
    for r in results:
        print(f"  {r['name']}: removed what it should not have: {', '.join(r['wrongly_removed']) or 'nothing'}")
    ours, prune = results
    print(f"\nratios (docker_reclaim / system prune): time {ours['seconds'] / prune['seconds']:.2f}x, "
          f"bytes freed {ours['reclaimed'] / max(prune['reclaimed'], 1):.2f}x, "
          f"wrongly removed {len(ours['wrongly_removed'])} vs {len(prune['wrongly_removed'])}")
    print(f"  docker_reclaim's time is an ansible ad-hoc call (connection and module transfer included); the tiers "
          f"themselves took {INNER_SECONDS.get('docker_reclaim', 0):.2f}s, "
          f"{INNER_SECONDS.get('docker_reclaim', 0) / prune['seconds']:.2f}x the prune")
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_reclaim.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
