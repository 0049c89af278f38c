"""An idempotent harden run against a facts-only play, and storage-driver rollouts, at several fleet sizes.

On lab hosts of its own (PREFIX-1..N, default LAB_PREFIX-fleet, LAB_PREFIX from tests/lab/prefix.sh; it refuses to
start when one of them exists already, and removes exactly those at the end), after converging them once and checking
that a second run changes nothing:

1. settings: forks, pipelining and strategy (linear, free) tried at one size (--search-size), both sides with the
   same settings; the lowest ratio of the harden run to the facts-only play beside it picks the settings used below
   (absolute times taken minutes apart on a shared machine follow its load);
2. sizes: the idempotent harden run against a facts-only play (gather_facts: true, no task) at each size, interleaved
   (A B, then B A), --rounds rounds, medians with min and max, the load average beside each figure;
3. rollout: playbooks/rollout_storage_driver.yml with the driver the hosts already run (overlay2: every host is
   reported unchanged; no dockerd restart, no soak), against the same facts-only play, at each size;
4. switch (only with --switch-rounds N, N > 0): a real switch through the same playbook at each size, N rounds of
   overlay2 -> vfs, then vfs -> overlay2 (each round starts where the last ended, and the hosts end as they were),
   both directions timed, interleaved with the facts-only play (switch pair, facts, then facts, switch pair). Every
   host goes through the canary and the growing batches ([1, 2, '50%']), the preflight, the backup, the dockerd
   restart, the probe container, the role's soak, the batch soak and the playbook's re-check. The soak is shortened
   (rollout_storage_driver_batch_soak_seconds=3, docker_storage_driver_soak_samples=2 and
   docker_storage_driver_soak_interval=2 instead of 60, 3 and 10): every batch sleeps 5 s, printed with the batch
   structure; "rest" is each run with those sleeps subtracted, what the rollout itself costs. Each round is printed
   with its load, then medians with min and max per size. (A host's first switch to vfs imports the image there;
   later ones find it.)

   What the hosts carry, and why the switch is allowed: the lab image pmr-workload:latest (imported by
   tests/lab/lab.sh) and no container, checked before every switch (a switch stops running containers, which the
   role refuses by default, and hides every container and image of the old driver). The preflight stays on. vfs is
   risky in the compatibility table (no copy-on-write): allowed with docker_storage_driver_allow_risky on the way
   there only (one 2 MB image here); overlay2 on the ext4 data root is supported. Each switch hides that one image:
   accepted with docker_storage_driver_accept_hidden_data because the probe's prepare command
   (/usr/local/sbin/pmr-workload-image) imports the same image under the new driver and the probe runs on it, so the
   host keeps what it needs; each host's rollout record must say it hid exactly one image and no container of the
   old driver. After every switch each host's record must say changed and `docker exec HOST docker info --format
   '{{.Driver}}'` must report the new driver; at the end every host runs overlay2 and an idempotent harden run
   changes nothing (the daemon.json now names overlay2, the vfs directory keeps its copy of the image).

Also counted once, on one host: the docker exec calls (module round trips) of an idempotent harden run.

Exits 1 when a harden run is not idempotent or fails, or when the harden run misses its target (median at most 2x
the facts-only play's at every size); it then prints the profile (ansible.posix.profile_tasks) of the run at the
size that missed, which shows what is left. Also exits 1 when a switch fails or a host is left on the wrong driver
(the switch has no speed target: it records figures). Not part of `make test` (it takes 20-40 minutes on 2 shared
cores without the switch).

    .venv/bin/python bench/bench_fleet.py [--sizes 1,4,8,16] [--rounds 3] [--collections DIR]
    .venv/bin/python bench/bench_fleet.py --sizes 1,2 --rounds 1 --no-rollout --settings 5,on,linear --switch-rounds 1

--collections DIR runs the playbooks of another checkout's collection (DIR/ansible_collections/postmortem/remediation),
such as the tree before a change, for a before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "tests" / "lab" / "lab.sh"
# This checkout's LAB_PREFIX (exported by make, else computed from the checkout's path): another checkout's bench
# never meets these hosts.
LAB_PREFIX = subprocess.run(["bash", str(ROOT / "tests" / "lab" / "prefix.sh")], capture_output=True, text=True,
                            check=True).stdout.strip()
BIN = ROOT / ".venv" / "bin"
TARGET_RATIO = 2.0
FACTS_PLAY = """---
- name: Gather facts only
  hosts: docker_hosts
  gather_facts: true
  tasks: []
"""
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
# Fewer collector runs on the lab hosts while the benchmark runs (the machine is shared); the cost of an idempotent
# run does not depend on the interval.
HARDEN_VARS = ["-e", "docker_signals_interval=5min"]
# The storage-driver switch (--switch-rounds): from the driver the lab hosts run to vfs and back.
SWITCH_DRIVERS = ("overlay2", "vfs")
# The soak shortened for the benchmark (the defaults: 60 s after each batch; 3 samples 10 s apart in the role). Both
# are sleeps: a batch that changed a host waits BATCH_SOAK seconds after the role waited (SAMPLES - 1) * INTERVAL.
SWITCH_SOAK = {"rollout_storage_driver_batch_soak_seconds": 3, "docker_storage_driver_soak_samples": 2,
               "docker_storage_driver_soak_interval": 2}
SWITCH_SOAK_PER_BATCH = (max(1, SWITCH_SOAK["rollout_storage_driver_batch_soak_seconds"])
                         + (SWITCH_SOAK["docker_storage_driver_soak_samples"] - 1)
                         * SWITCH_SOAK["docker_storage_driver_soak_interval"])
# What a lab host carries (tests/lab/lab.sh imports the image; nothing runs a container): the one image the switch
# hides, which the probe's prepare command imports again under the new driver, and the probe then runs on.
WORKLOAD_IMAGE = "pmr-workload:latest"
WORKLOAD_IMPORT = "/usr/local/sbin/pmr-workload-image"


@dataclass(frozen=True)
class Settings:
    forks: int
    pipelining: bool
    strategy: str

    def env(self) -> dict[str, str]:
        return {"ANSIBLE_FORKS": str(self.forks), "ANSIBLE_PIPELINING": str(self.pipelining),
                "ANSIBLE_STRATEGY": self.strategy}

    def __str__(self) -> str:
        return f"forks={self.forks} pipelining={'on' if self.pipelining else 'off'} strategy={self.strategy}"


class BenchError(Exception):
    """A run failed or was not what it was meant to measure."""


def load() -> float:
    return os.getloadavg()[0]


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} s ({min(values):.1f}-{max(values):.1f})"


@dataclass(frozen=True)
class Switch:
    """One real switch through the rollout playbook: its wall time and its batches (host names, in order)."""
    elapsed: float
    batches: tuple[tuple[str, ...], ...]

    @property
    def soak(self) -> float:
        """The seconds this run slept in the shortened soak: every batch changed its hosts."""
        return len(self.batches) * SWITCH_SOAK_PER_BATCH

    @property
    def structure(self) -> str:
        return "+".join(str(len(batch)) for batch in self.batches)


class Fleet:
    def __init__(self, prefix: str, work: Path, collections: Path) -> None:
        self.prefix = prefix
        self.work = work
        self.collections = collections
        self.collection = collections / "ansible_collections" / "postmortem" / "remediation"
        self.inventory = work / "inventory.ini"
        self.facts = work / "facts_only.yml"
        self.facts.write_text(FACTS_PLAY)
        self.report_dir = work / "rollout-records"
        self.size = 0
        self.created = False
        self.runs = 0
        self.run_id = ""

    def env(self, settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(self.collections),
                   ANSIBLE_HOME=str(self.work / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(self.work / "ansible-tmp"),
                   ANSIBLE_FORCE_COLOR="false", ANSIBLE_HOST_KEY_CHECKING="false",
                   PATH=f"{BIN}:{os.environ['PATH']}", LAB_INVENTORY=str(self.inventory))
        env.update(settings.env())
        env.update(extra or {})
        return env

    def hosts(self, size: int) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(1, size + 1)]

    # -- lab hosts ---------------------------------------------------------------------------------------------
    def refuse_existing(self, size: int) -> None:
        names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True,
                               check=True).stdout.split()
        taken = sorted(set(names) & set(self.hosts(size)))
        if taken:
            raise BenchError(f"lab hosts {', '.join(taken)} exist already and were not created by this run: remove "
                             f"them (tests/lab/lab.sh down {self.prefix}) or pass another --prefix")

    def grow(self, size: int, settings: Settings) -> None:
        """Lab hosts 1..size up (lab.sh waits for systemd and dockerd), hardened once, then checked idempotent."""
        if size <= self.size:
            return
        self.created = True
        started = time.monotonic()
        subprocess.run(["bash", str(LAB), "up", str(size), self.prefix], check=True, env=self.env(settings),
                       capture_output=True, text=True)
        self.size = size
        self.write_inventory(size)
        self.playbook("harden", settings, expect_idempotent=False)
        changed = self.playbook("harden", settings)[1]
        print(f"  lab of {size} host(s) up, hardened and idempotent ({changed} changed) in "
              f"{time.monotonic() - started:.0f} s; load {load():.1f}", flush=True)

    def write_inventory(self, size: int) -> None:
        lines = ["[docker_hosts]", *self.hosts(size), "", "[docker_hosts:vars]",
                 "ansible_connection=community.docker.docker", "ansible_python_interpreter=/usr/bin/python3",
                 "ansible_become=false", ""]
        self.inventory.write_text("\n".join(lines))

    def host_memory_mib(self) -> float:
        """Resident memory of every process of the first lab host, in MiB (shared pages counted in full)."""
        out = subprocess.run(["docker", "exec", f"{self.prefix}-1", "ps", "-eo", "rss="], capture_output=True,
                             text=True, check=True).stdout
        return sum(int(v) for v in out.split()) / 1024

    def docker(self, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """A docker command run by the lab host's own dockerd (docker exec, no network)."""
        return subprocess.run(["docker", "exec", host, "docker", *argv], capture_output=True, text=True, check=False)

    def drivers(self) -> dict[str, str]:
        """The storage driver each lab host's dockerd reports (docker info), or why it reported none."""
        found = {}
        for host in self.hosts(self.size):
            proc = self.docker(host, "info", "--format", "{{.Driver}}")
            found[host] = proc.stdout.strip() if proc.returncode == 0 else f"no answer ({proc.stderr.strip()[-200:]})"
        return found

    def check_carried(self, driver: str) -> None:
        """Every host runs ``driver`` and carries what the switch is set up for: the workload image, no container."""
        problems = []
        for host in self.hosts(self.size):
            info = self.docker(host, "info", "--format", "{{.Driver}} {{.Containers}}")
            images = self.docker(host, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}")
            carried = (info.stdout.split(), images.stdout.split())
            if info.returncode or images.returncode or carried != ([driver, "0"], [WORKLOAD_IMAGE]):
                problems.append(f"{host}: driver and containers {info.stdout.strip() or info.stderr.strip()!r}, "
                                f"images {images.stdout.split()}")
        if problems:
            raise BenchError(f"before the switch from {driver}, every host should run {driver} with the image "
                             f"{WORKLOAD_IMAGE} and no container (a switch stops running containers and hides every "
                             f"container and image of the old driver): " + "; ".join(problems))

    def switch(self, driver: str, settings: Settings) -> Switch:
        """Roll ``driver`` out to every host for real; check each host's record and that dockerd reports it."""
        previous = SWITCH_DRIVERS[1] if driver == SWITCH_DRIVERS[0] else SWITCH_DRIVERS[0]
        self.check_carried(previous)
        try:
            elapsed = self.playbook(f"switch:{driver}", settings)[0]
        except BenchError as exc:
            raise BenchError(f"switch to {driver}: {exc}\ndrivers now: {self.drivers()}") from None
        records = {}
        for path in (self.report_dir / self.run_id).glob("*.json"):
            record = json.loads(path.read_text())
            records[record["host"]] = record
        problems = []
        for host in self.hosts(self.size):
            record = records.get(host, {})
            hidden = record.get("hides_data") or {}
            if record.get("outcome") != "changed":
                problems.append(f"{host}: outcome {record.get('outcome')!r} ({record.get('message', 'no record')})")
            elif (hidden.get("driver"), hidden.get("images"), hidden.get("containers")) != (previous, 1, 0):
                problems.append(f"{host}: the switch hid {hidden or 'nothing'}, not the one image {WORKLOAD_IMAGE}")
        wrong = {host: found for host, found in self.drivers().items() if found != driver}
        problems += [f"{host}: dockerd reports {found!r} after the switch to {driver}" for host, found in wrong.items()]
        if problems:
            raise BenchError(f"switch to {driver} (run {self.run_id}): " + "; ".join(problems))
        order = {host: index for index, host in enumerate(self.hosts(self.size))}
        batches = sorted({tuple(sorted(record["batch"], key=order.__getitem__)) for record in records.values()},
                         key=lambda batch: order[batch[0]])
        return Switch(elapsed, tuple(batches))

    def down(self) -> None:
        if self.created:
            subprocess.run(["bash", str(LAB), "down", self.prefix], check=False, capture_output=True)

    # -- runs --------------------------------------------------------------------------------------------------
    def command(self, kind: str) -> list[str]:
        playbook = {"harden": self.collection / "playbooks" / "harden_docker_hosts.yml",
                    "rollout": self.collection / "playbooks" / "rollout_storage_driver.yml",
                    "switch": self.collection / "playbooks" / "rollout_storage_driver.yml",
                    "facts": self.facts}[kind.partition(":")[0]]
        argv = [str(BIN / "ansible-playbook"), "-i", str(self.inventory), str(playbook)]
        if kind == "harden":
            argv += HARDEN_VARS
        if kind == "rollout":
            self.runs += 1
            argv += ["-e", "rollout_storage_driver_hosts=docker_hosts", "-e", "docker_storage_driver_name=overlay2",
                     "-e", f"rollout_storage_driver_report_dir={self.report_dir}",
                     "-e", f"rollout_storage_driver_run=bench-{os.getpid()}-{self.runs}"]
        if kind.startswith("switch:"):
            argv += ["-e", json.dumps(self.switch_vars(kind.partition(":")[2]))]
        return argv

    def switch_vars(self, driver: str) -> dict[str, object]:
        """Extra variables of a real switch to ``driver`` (a new run id each time: a run id names one run)."""
        self.runs += 1
        self.run_id = f"bench-{os.getpid()}-{self.runs}"
        extra: dict[str, object] = {
            "rollout_storage_driver_hosts": "docker_hosts", "docker_storage_driver_name": driver,
            "rollout_storage_driver_report_dir": str(self.report_dir), "rollout_storage_driver_run": self.run_id,
            # The one image a host carries is hidden by the switch and imported again under the new driver by the
            # probe's prepare command, before the probe runs on it: the switch hides nothing the host needs.
            "docker_storage_driver_accept_hidden_data": True, "docker_storage_driver_probe_image": WORKLOAD_IMAGE,
            "docker_storage_driver_probe_prepare_command": [WORKLOAD_IMPORT], **SWITCH_SOAK}
        if driver == "vfs":
            # vfs is risky in the table (no copy-on-write: every layer a full copy): the hosts hold one 2 MB image.
            extra["docker_storage_driver_allow_risky"] = True
        return extra

    def playbook(self, kind: str, settings: Settings, expect_idempotent: bool = True,
                 extra_env: dict[str, str] | None = None, verbose: bool = False) -> tuple[float, int, str]:
        """Wall time, hosts changed, output; raises when the run fails or an idempotent run changed something."""
        argv = self.command(kind) + (["-vvv"] if verbose else [])
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(settings, extra_env), check=False,
                              cwd=self.work)
        elapsed = time.perf_counter() - started
        out = proc.stdout + proc.stderr
        recap = {m[0]: (int(m[2]), int(m[3]), int(m[4])) for m in RECAP.findall(out)}
        missing = set(self.hosts(self.size)) - set(recap)
        if proc.returncode != 0 or missing or any(u or f for _c, u, f in recap.values()):
            raise BenchError(f"{kind} ({settings}) failed, rc {proc.returncode}, no recap for {sorted(missing)}:\n"
                             f"{out[-4000:]}")
        changed = sum(1 for host, (c, _u, _f) in recap.items() if c and host in self.hosts(self.size))
        if kind == "harden" and expect_idempotent and changed:
            raise BenchError(f"the idempotent harden run changed {changed} host(s): not idempotent\n{out[-4000:]}")
        return elapsed, changed, out

    def rounds(self, sides: tuple[str, str], settings: Settings, count: int,
               warm: tuple[str, ...] = ()) -> dict[str, list[float]]:
        """Interleaved: A B, then B A, ... after one unmeasured run of each side in ``warm``."""
        times: dict[str, list[float]] = {side: [] for side in sides}
        for side in warm:
            self.playbook(side, settings)
        for index in range(count):
            for side in sides if index % 2 == 0 else tuple(reversed(sides)):
                times[side].append(self.playbook(side, settings)[0])
        return times

    def exec_calls(self, settings: Settings) -> int:
        """docker exec calls of one idempotent harden run on the first host (-vvv prints one EXEC line per call)."""
        self.write_inventory(1)
        saved, self.size = self.size, 1
        try:
            out = self.playbook("harden", settings, verbose=True)[2]
        finally:
            self.size = saved
            self.write_inventory(saved)
        return len(re.findall(rf"^<{re.escape(self.prefix)}-1> EXEC ", out, re.MULTILINE))

    def profile(self, settings: Settings) -> str:
        out = self.playbook("harden", settings, extra_env={
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "25"})[2]
        return out[out.find("TASKS RECAP"):] if "TASKS RECAP" in out else out[-3000:]


def search(fleet: Fleet, size: int, rounds: int) -> Settings:
    print(f"\nSettings at {size} host(s), harden vs facts-only, {rounds} interleaved rounds each:", flush=True)
    # Ansible's default (5 forks, no pipelining, linear), then one change at a time: pipelining, fewer forks (one per
    # core of this machine) and more (one per host), the free strategy.
    wide = max(size, 5)
    candidates = [Settings(5, False, "linear"), Settings(5, True, "linear"), Settings(2, True, "linear"),
                  Settings(wide, True, "linear"), Settings(wide, True, "free")]
    best: tuple[float, Settings] | None = None
    for settings in dict.fromkeys(candidates):
        before = load()
        times = fleet.rounds(("harden", "facts"), settings, rounds, warm=("facts",))
        harden = statistics.median(times["harden"])
        ratio = harden / statistics.median(times["facts"])
        print(f"  {settings!s:42} harden {summary(times['harden'])}  facts {summary(times['facts'])}  "
              f"ratio {ratio:.2f}  load {before:.1f}-{load():.1f}", flush=True)
        # Absolute times taken minutes apart on a shared machine follow its load; the ratio to the facts-only play
        # run beside them does not, so it picks the settings.
        if best is None or ratio < best[0]:
            best = (ratio, settings)
    assert best is not None
    print(f"  lowest ratio to the facts-only play: {best[1]}", flush=True)
    return best[1]


def switch_phase(fleet: Fleet, sizes: list[int], settings: Settings, count: int) -> None:
    """At each size: ``count`` rounds of overlay2 -> vfs -> overlay2, interleaved with the facts-only play."""
    there, back = SWITCH_DRIVERS[1], SWITCH_DRIVERS[0]
    soak = ", ".join(f"{name}={value}" for name, value in SWITCH_SOAK.items())
    print(f"\nStorage-driver switch {back} -> {there} -> {back} through rollout_storage_driver.yml (canary, batches "
          f"[1, 2, '50%'], preflight, probe on {WORKLOAD_IMAGE}, re-check) vs facts-only play ({settings}), "
          f"{count} interleaved rounds;\n  soak shortened: {soak}, so every batch sleeps {SWITCH_SOAK_PER_BATCH} s; "
          f"'rest' is the run without those sleeps:", flush=True)
    for size in sizes:
        fleet.write_inventory(size)
        fleet.size = size
        before = load()
        switches: dict[str, list[Switch]] = {there: [], back: []}
        facts: list[float] = []
        fleet.playbook("facts", settings)
        for index in range(count):
            started = load()
            for side in ("switch", "facts") if index % 2 == 0 else ("facts", "switch"):
                if side == "facts":
                    facts.append(fleet.playbook("facts", settings)[0])
                    continue
                for driver in (there, back):
                    switches[driver].append(fleet.switch(driver, settings))
            print(f"    round {index + 1} at {size} host(s): " + ", ".join(
                f"to {driver} {runs[-1].elapsed:.1f} s (rest {runs[-1].elapsed - runs[-1].soak:.1f} s)"
                for driver, runs in switches.items()) + f", facts {facts[-1]:.1f} s; load {started:.1f}-{load():.1f}",
                flush=True)
        structures = sorted({run.structure for runs in switches.values() for run in runs})
        figures = []
        for driver, runs in switches.items():
            rest = [run.elapsed - run.soak for run in runs]
            figures.append(f"to {driver} {summary([run.elapsed for run in runs])} rest {summary(rest)} "
                           f"(per host {statistics.median(rest) / size:.2f} s)")
        print(f"  {size:3} host(s), batches {'/'.join(structures)}: {'  '.join(figures)}  facts {summary(facts)}  "
              f"load {before:.1f}-{load():.1f}", flush=True)
    wrong = {host: found for host, found in fleet.drivers().items() if found != back}
    if wrong:
        raise BenchError(f"after the switches, hosts not back on {back}: {wrong}")
    # Back as they were: the driver, and nothing the harden run would change (daemon.json now names overlay2).
    fleet.playbook("harden", settings)
    print(f"  after the switches: every host runs {back} (docker info) and an idempotent harden run changed nothing",
          flush=True)


def interrupted(signum: int, _frame: object) -> None:
    """SIGTERM or SIGINT (ignored in a background job otherwise): stop, and still remove what the run created."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,8,16", help="fleet sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rollout-rounds", type=int, default=2)
    parser.add_argument("--search-size", type=int, default=4, help="size at which the settings are compared")
    parser.add_argument("--search-rounds", type=int, default=2)
    parser.add_argument("--settings", help="skip the search: FORKS,on|off,linear|free")
    parser.add_argument("--no-rollout", action="store_true")
    parser.add_argument("--switch-rounds", type=int, default=0,
                        help="rounds of a real driver switch overlay2 -> vfs -> overlay2 at each size (0: none)")
    parser.add_argument("--prefix", default=f"{LAB_PREFIX}-fleet", help="host name prefix (default: LAB_PREFIX-fleet)")
    parser.add_argument("--collections", type=Path, default=ROOT / "build" / "collections",
                        help="directory holding ansible_collections/postmortem/remediation")
    args = parser.parse_args()
    if args.switch_rounds < 0:
        parser.error("--switch-rounds must be 0 (no switch) or more")
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    mem_available = int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text())[1]) / 1024
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    fleet = Fleet(args.prefix, work, args.collections.resolve())
    failures: list[str] = []
    print(f"bench_fleet: {fleet.collection}; sizes {sizes}; load {os.getloadavg()}; "
          f"{mem_available:.0f} MiB available", flush=True)
    try:
        fleet.refuse_existing(max([*sizes, args.search_size]))
        if args.settings:
            forks, pipelining, strategy = args.settings.split(",")
            settings = Settings(int(forks), pipelining == "on", strategy)
            fleet.grow(max(sizes), settings)
        else:
            first = Settings(max(args.search_size, 5), True, "linear")
            fleet.grow(args.search_size, first)
            settings = search(fleet, args.search_size, args.search_rounds)
            fleet.grow(max(sizes), settings)
        per_host = fleet.host_memory_mib()
        print(f"\nMemory: one lab host {per_host:.0f} MiB resident; {mem_available:.0f} MiB were available: room for "
              f"about {int(mem_available * 0.8 / per_host)} lab hosts; measured up to {max(sizes)}", flush=True)
        calls = fleet.exec_calls(settings)
        print(f"docker exec calls (module round trips) of an idempotent harden run on one host: {calls}", flush=True)

        print(f"\nIdempotent harden run vs facts-only play ({settings}), {args.rounds} interleaved rounds:", flush=True)
        ratios: dict[int, float] = {}
        for size in sizes:
            fleet.write_inventory(size)
            fleet.size = size
            before = load()
            times = fleet.rounds(("harden", "facts"), settings, args.rounds, warm=("facts",))
            ratios[size] = statistics.median(times["harden"]) / statistics.median(times["facts"])
            verdict = "ok" if ratios[size] <= TARGET_RATIO else f"MISSED (target {TARGET_RATIO}x)"
            print(f"  {size:3} host(s): harden {summary(times['harden'])}  facts {summary(times['facts'])}  "
                  f"ratio {ratios[size]:.2f} {verdict}  per host {statistics.median(times['harden']) / size:.2f} s  "
                  f"load {before:.1f}-{load():.1f}", flush=True)
            if ratios[size] > TARGET_RATIO:
                failures.append(f"harden at {size} host(s): {ratios[size]:.2f}x the facts-only play")
                print(f"  profile of the harden run at {size} host(s):\n{fleet.profile(settings)}", flush=True)

        if not args.no_rollout:
            print(f"\nSame-driver rollout (overlay2, every host unchanged) vs facts-only play ({settings}), "
                  f"{args.rollout_rounds} interleaved rounds:", flush=True)
            for size in sizes:
                fleet.write_inventory(size)
                fleet.size = size
                before = load()
                times = fleet.rounds(("rollout", "facts"), settings, args.rollout_rounds, warm=("rollout",))
                ratio = statistics.median(times["rollout"]) / statistics.median(times["facts"])
                print(f"  {size:3} host(s): rollout {summary(times['rollout'])}  facts {summary(times['facts'])}  "
                      f"ratio {ratio:.2f}  per host {statistics.median(times['rollout']) / size:.2f} s  "
                      f"load {before:.1f}-{load():.1f}", flush=True)

        if args.switch_rounds:
            switch_phase(fleet, sizes, settings, args.switch_rounds)
    except BenchError as exc:
        failures.append(str(exc))
    finally:
        fleet.down()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload at the end {os.getloadavg()}", flush=True)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("target met: the idempotent harden run is at most 2x a facts-only play at every size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
