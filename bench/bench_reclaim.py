"""docker_reclaim against `docker system prune -af` and against what a careful operator would run, same filled hosts.

Every round starts one fresh lab host per contender, each with /var/lib/docker on its own 2.5 GB ext4 filesystem
(loop device), filled identically the way the incident did (the Molecule scenario's fill.sh: CI rebuilds with the
classic builder and BuildKit, finished job containers, a database stopped by the backup with a restart policy, a
keep-labelled tool image, a running web service, a container logging fast into an unbounded json-file log). The
bench waits until the fill is over (the log writer done and the log's size steady) before anything is measured.
Then, in an order that rotates every round, each contender runs as an Ansible ad-hoc task over the same docker
connection, and its wall time is measured the same way:

- `docker_reclaim target_free=80%` (the product);
- `docker system prune -af` (a `command:` task; the naive fix);
- a careful operator (a `shell:` task): `docker builder prune -af`, `docker image prune -af` filtered to spare the
  keep label, and truncating the one runaway log.

The bench prints, per contender, medians with min and max of wall time, bytes freed on the filesystem (df) and free
space reached, and what it removed that it should not have. Exit status 1 when docker_reclaim misses the free-space
target or removes anything on the must-keep list, in any round.

Host names are `<LAB_PREFIX>-reclaim-<pid>-<round>-<n>` (LAB_PREFIX: this checkout's, tests/lab/prefix.sh); a name
already taken stops the bench (nothing of anyone else's is removed), and only the hosts and loop filesystems the bench
created are removed.

    .venv/bin/python bench/bench_reclaim.py [--rounds 3] [--quick] [--markdown FILE]   (root, a Docker engine, pmr-lab)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "extensions" / "molecule" / "docker_prune_timer"
LOOPFS = REPO / "tests" / "lab" / "loopfs.sh"
SIZE = "2560M"
TARGET = "80%"
KEEP_LABEL = "postmortem.remediation.keep"
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
CAREFUL = ("docker builder prune -af >/dev/null && "
           f"docker image prune -af --filter 'label!={KEEP_LABEL}' >/dev/null && "
           "truncate -s 0 \"$(docker inspect -f '{{.LogPath}}' chatty)\"")
# Ansible templates a task's arguments: the Go template of `docker inspect -f` must reach the shell as written.
def untemplated(command: str) -> str:
    """(An ad-hoc argument that starts with '{' would be read as JSON: hence the 'set -e; ' before it.)"""
    return "set -e; {% raw %}" + command + "{% endraw %}"


CONTENDERS: dict[str, tuple[str, str]] = {
    # name: (ansible module, its arguments)
    f"docker_reclaim target_free={TARGET}": ("postmortem.remediation.docker_reclaim", f"target_free={TARGET}"),
    "docker system prune -af": ("ansible.builtin.command", "docker system prune -af"),
    "careful operator (3 commands)": ("ansible.builtin.shell", untemplated(CAREFUL)),
}
PRODUCT = f"docker_reclaim target_free={TARGET}"


def sh(*args: str, check: bool = True) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result.stdout


class LabHost:
    """One lab host this bench created (and only that one is ever removed)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.container = False
        self.loopfs = False

    def run(self, command: str, check: bool = True) -> str:
        return sh("docker", "exec", self.name, "bash", "-c", command, check=check)

    def create(self) -> None:
        taken = sh("docker", "ps", "-a", "--filter", f"name=^/{self.name}$", "--format", "{{.Names}}").strip()
        if taken or Path(sh("bash", str(LOOPFS), "path", self.name).strip()).exists():
            raise RuntimeError(f"{self.name} exists already (a container or a loop filesystem): not ours, left alone")
        self.loopfs = True
        mount = sh("bash", str(LOOPFS), "create", self.name, SIZE).strip().splitlines()[-1]
        caps = [arg for cap in CAPS for arg in ("--cap-add", cap)]
        sh("docker", "run", "-d", "--name", self.name, "--hostname", self.name, *caps,
           "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
           "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
           "-v", f"{mount}:/var/lib/docker:rw", "--label", "pmr.lab=1", "pmr-lab:latest", "/sbin/init")
        self.container = True
        for _attempt in range(120):
            state = sh("docker", "exec", self.name, "systemctl", "is-system-running", check=False).strip()
            if state in ("running", "degraded") and self.run("docker info >/dev/null 2>&1 && echo up", check=False):
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"{self.name} did not come up")
        self.run("/usr/local/sbin/pmr-workload-image >/dev/null")
        sh("docker", "cp", str(SCENARIO / "files" / "ci"), f"{self.name}:/root/ci")
        sh("docker", "cp", str(SCENARIO / "files" / "fill.sh"), f"{self.name}:/root/fill.sh")

    def fill(self) -> float:
        started = time.monotonic()
        self.run("cd /root/ci && DOCKER_BUILDKIT=1 docker build -q -f Dockerfile.stage --build-arg BUILD=old "
                 "-t ci-stage:latest . >/dev/null")
        self.run("bash /root/fill.sh 4 450")
        self.wait_until_the_fill_is_over()
        return time.monotonic() - started

    def wait_until_the_fill_is_over(self) -> None:
        """fill.sh returns once the log has its nominal size, but json-file wraps every line: the writer goes on for a
        while. Wait for the writer (`yes`) to end and the log to grow by no more than its one tick a second."""
        last = -1
        for _attempt in range(300):
            writing = "yes" in self.run("docker top chatty -o comm", check=False).split()
            size = self.log_size()
            if not writing and last >= 0 and size - last < 4096:
                return
            last = size
            time.sleep(2)
        raise RuntimeError(f"{self.name}: the fill's log writer did not finish")

    def log_size(self) -> int:
        return int(self.run("stat -c %s \"$(docker inspect -f '{{.LogPath}}' chatty)\"", check=False).strip() or 0)

    def snapshot(self) -> dict[str, Any]:
        avail, size = self.run("df --output=avail,size -B1 /var/lib/docker | tail -n 1").split()
        images = self.run("docker image ls --format '{{.Repository}}:{{.Tag}}'").split()
        containers = self.run("docker ps -a --format '{{.Names}}'").split()
        return {"free": int(avail), "size": int(size), "images": images, "containers": containers,
                "log": self.log_size()}

    def destroy(self) -> None:
        if self.container:
            sh("docker", "rm", "-f", "-v", self.name, check=False)
        if self.loopfs:
            sh("bash", str(LOOPFS), "destroy", self.name, check=False)


def ansible_task(host: str, module: str, module_args: str) -> tuple[float, dict[str, Any]]:
    """One ad-hoc task over the docker connection; the wall time of the whole `ansible` process."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
               ANSIBLE_HOME=str(REPO / "build" / "ansible-home"), ANSIBLE_FORCE_COLOR="false",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="true", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    ansible = Path(sys.executable).parent / "ansible"
    started = time.monotonic()
    result = subprocess.run(
        [str(ansible), "-i", f"{host},", "-c", "community.docker.docker", "-e",
         "ansible_python_interpreter=/usr/bin/python3", host, "-m", module, "-a", module_args],
        capture_output=True, text=True, env=env, check=False,
    )
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{module} on {host} failed: {result.stdout[-3000:]}{result.stderr[-2000:]}")
    return wall, json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"][host]


def wrongly_removed(after: dict[str, Any]) -> list[str]:
    lost = [f"image {name} ({why})" for name, why in MUST_SURVIVE_IMAGES.items() if name not in after["images"]]
    lost += [f"container {name} ({why})" for name, why in MUST_SURVIVE_CONTAINERS.items()
             if name not in after["containers"]]
    return lost


def measure(name: str, host: LabHost, fill_seconds: float) -> dict[str, Any]:
    before = host.snapshot()
    module, module_args = CONTENDERS[name]
    seconds, answer = ansible_task(host.name, module, module_args)
    after = host.snapshot()
    target = int(before["size"] * float(TARGET.rstrip("%")) / 100)
    return {
        "name": name, "host": host.name, "fill_seconds": round(fill_seconds, 1), "seconds": round(seconds, 2),
        "inner_seconds": answer.get("elapsed_seconds"),
        "free_before": before["free"], "free_after": after["free"], "reclaimed": after["free"] - before["free"],
        "target": target, "target_met": after["free"] >= target, "log_before": before["log"],
        "log_after": after["log"], "images_left": len(after["images"]), "containers_left": len(after["containers"]),
        "wrongly_removed": wrongly_removed(after),
    }


def in_parallel(action: Callable[[LabHost], Any], hosts: list[LabHost]) -> list[Any]:
    answers: list[Any] = [None] * len(hosts)
    errors: list[BaseException] = []

    def work(index: int, host: LabHost) -> None:
        try:
            answers[index] = action(host)
        except BaseException as exc:  # re-raised below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, h)) for i, h in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return answers


def mib(n: float) -> str:
    return f"{n / 1048576:.0f}"


def spread(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(results: list[dict[str, Any]], rounds: int, load_start: str, load_end: str) -> tuple[list[str], bool]:
    lines = [
        f"same fill on every host (2.5 GB ext4 data root, CI rebuilds, jobs, a stopped service, a 450 MB log), "
        f"waited until the fill was over; target {TARGET} free; {rounds} round(s), one fresh host per contender per "
        f"round, order rotating; load average at start {load_start}, at end {load_end}",
        "",
        "| contender (an Ansible ad-hoc task over the docker connection) | wall time, s | freed, MiB | "
        "free after, MiB | target met | log after, MiB | removed what it should keep |",
        "|---|---|---|---|---|---|---|",
    ]
    by_name = {name: [r for r in results if r["name"] == name] for name in CONTENDERS}
    for name, runs in by_name.items():
        if not runs:
            continue
        met = sum(r["target_met"] for r in runs)
        lost = sorted({item for r in runs for item in r["wrongly_removed"]})
        lines.append(
            f"| {name} | {spread([r['seconds'] for r in runs], lambda v: f'{v:.2f}')} | "
            f"{spread([r['reclaimed'] for r in runs], mib)} | {spread([r['free_after'] for r in runs], mib)} | "
            f"{met} of {len(runs)} | {spread([r['log_after'] for r in runs], mib)} | {', '.join(lost) or 'nothing'} |")
    ours = by_name[PRODUCT]
    lines += ["", f"The careful operator's commands: `{CAREFUL}`."]
    for name, runs in by_name.items():
        if name == PRODUCT or not runs or not ours:
            continue
        time_ratio = statistics.median(r["seconds"] for r in ours) / statistics.median(r["seconds"] for r in runs)
        bytes_ratio = (statistics.median(r["reclaimed"] for r in ours)
                       / max(statistics.median(r["reclaimed"] for r in runs), 1))
        lines.append(f"docker_reclaim / {name}: wall time {time_ratio:.2f}x, bytes freed {bytes_ratio:.2f}x")
    inner = [r["inner_seconds"] for r in ours if r["inner_seconds"] is not None]
    if inner:
        lines.append(f"docker_reclaim's tiers alone (its elapsed_seconds, inside the wall time above): "
                     f"{spread(inner, lambda v: f'{v:.2f}')} s")
    fills = [r["fill_seconds"] for r in results]
    lines.append(f"fill per host (parallel, not measured): {spread(fills, lambda v: f'{v:.0f}')} s")
    ok = bool(ours) and all(r["target_met"] and not r["wrongly_removed"] for r in ours)
    verdict = "target met, nothing it should keep removed" if ok else "TARGET MISSED or WRONGLY REMOVED"
    lines.append(f"verdict: {verdict} (docker_reclaim in every round)")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, one fresh host per contender each (default 3)")
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--markdown", type=Path, help="also write the figures to this file")
    parser.add_argument("--prefix", default=None, help="host name prefix (default: LAB_PREFIX, tests/lab/prefix.sh)")
    args = parser.parse_args(argv)
    if args.prefix is None:
        args.prefix = subprocess.run(["bash", str(REPO / "tests" / "lab" / "prefix.sh")], capture_output=True,
                                     text=True, check=True).stdout.strip()
    if args.quick:
        args.rounds = 1
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if os.geteuid() != 0:
        print("bench_reclaim: needs root (losetup, mount)", file=sys.stderr)
        return 1
    names = list(CONTENDERS)
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    load_start = loadavg()
    for round_index in range(args.rounds):
        hosts = [LabHost(f"{args.prefix}-reclaim-{os.getpid()}-{round_index + 1}-{n + 1}") for n in range(len(names))]
        try:
            in_parallel(LabHost.create, hosts)
            fills = in_parallel(LabHost.fill, hosts)
            shift = round_index % len(names)
            for offset in range(len(names)):  # round 1: A B C, round 2: B C A, round 3: C A B
                index = (shift + offset) % len(names)
                try:
                    results.append(measure(names[index], hosts[index], fills[index]))
                except RuntimeError as exc:  # one contender failing must not lose the others' figures
                    errors.append(f"round {round_index + 1}, {names[index]}: {str(exc)[-800:]}")
        finally:
            for host in hosts:
                host.destroy()
    lines, ok = report(results, args.rounds, load_start, loadavg())
    lines += [f"FAILED: {error}" for error in errors]
    ok = ok and not any(PRODUCT in error for error in errors)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_reclaim.json").write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
