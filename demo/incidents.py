"""The five incidents of the post-mortems, replayed on the lab hosts: how each is set up, how its symptom is
produced for real, and what the demo checks on its own afterwards (independently of the playbook's own check)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .hosts import copy_to, free_ratio, sh, unit_state, write_file
from .settings import REPO, VENV

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
FIXED = "fixed"
CONTAINED = "contained"


@dataclass
class Check:
    ok: bool
    detail: str


@dataclass
class Incident:
    """One incident. `alerts` are the rules that may answer it, `primary` the one the replay waits for."""

    key: str
    title: str
    host_index: int
    alerts: tuple[str, ...]
    playbooks: tuple[str, ...]
    expected: str
    host: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return self.alerts[0]

    def before_setup(self) -> None:
        """What the host had before the collection's roles were applied to it (demo/playbooks/setup.yml)."""

    def prepare(self) -> None:
        """Bring the host into the state it was in before the incident (the healthy baseline)."""

    def inject(self, alert_state: AlertProbe) -> float:
        """Produce the symptom for real; returns when it began."""
        raise NotImplementedError

    def verify(self) -> Check:
        """The demo's own check once the run has finished: fixed, or (for a refusal) nothing deleted and contained."""
        raise NotImplementedError

    def operator_fix(self) -> str:
        """For a refusal: what the human paged does (so the alert can resolve). Returns what was done."""
        return ""

    def cleanup(self) -> None:
        """Leave the host ready for the next incident."""


# Whether any of these alerts of this host is pending or firing (the injection of a filling disk stops there).
AlertProbe = Callable[[str, tuple[str, ...]], bool]


# -- 1. the CI build cache fills the data root ------------------------------------------------------------------
class BuildCacheFills(Incident):
    """The CI server's BuildKit cache fills /var/lib/docker (a 1 GB filesystem of its own on host 1), one build
    after another (demo/ci/Dockerfile: each build leaves its build stage in the cache)."""

    target = 0.06  # the last build aims here, below the alert's threshold (10 % free)
    threshold = 0.10  # DockerDiskPressure's: once free space is below it, the symptom is there and the fill stops

    def prepare(self) -> None:
        self.cleanup()
        sh(self.host, "/usr/local/sbin/pmr-workload-image >/dev/null")
        copy_to(self.host, str(REPO / "demo" / "ci"), "/root/")

    def inject(self, alert_state: AlertProbe) -> float:
        began = time.time()
        failures = 0
        for build in range(1, 30):
            df = sh(self.host, "df --output=avail,size -B1 /var/lib/docker | tail -n 1").split()
            avail, size = int(df[0]), int(df[1])
            # Large builds while there is room, then what brings the disk just below the threshold.
            mb = max(20, min(300, (avail - int(self.target * size)) // 2**20))
            # A build that fails for want of space is the incident too (the CI server's builds failed): go on.
            out = sh(self.host, f"cd /root/ci && DOCKER_BUILDKIT=1 docker build -q --build-arg BUILD=demo-{build} "
                                f"--build-arg MB={mb} -t ci-app:latest . >/dev/null 2>&1 && echo ok || echo failed")
            failures = failures + 1 if out.strip() == "failed" else 0
            free = free_ratio(self.host)
            print(f"    CI build {build} ({mb} MB of build stage) {out.strip()}: {free:.0%} free on /var/lib/docker",
                  flush=True)
            # Stop as soon as the symptom is there: on a loaded machine the alert can fire and the fix run while the
            # builds go on, and a fill that went on would undo the fix it is meant to show.
            if free < self.threshold or failures >= 3 or alert_state(self.host, (self.primary,)):
                break
        return began

    def verify(self) -> Check:
        free = free_ratio(self.host)
        cache = sh(self.host, "docker system df --format '{{.Type}} {{.Size}}' | grep -i 'build cache' || true").strip()
        return Check(free >= 0.15, f"df: {free:.0%} free on /var/lib/docker (15 % wanted); {cache or 'no build cache'}")

    def cleanup(self) -> None:
        # The CI's images and cache only: pmr-workload:latest, which every build starts from, stays.
        sh(self.host, "docker rmi -f ci-app:latest >/dev/null 2>&1; docker image prune -f >/dev/null; "
                      "docker builder prune -af >/dev/null", check=False)


# -- 2. a container floods its unbounded json-file log -----------------------------------------------------------
class LogFlood(Incident):
    """A service created before its host got log limits (so its json-file log has no max-size) logs 7 KB request
    bodies on every line: 400 MB as fast as dockerd takes them, then a line a second. Left alone, the growth rate
    the alert reads stays above its threshold for minutes; the remediation cuts the log (above 100 MB)."""

    container = "orders-api"
    burst = 400_000_000
    cut_above = 100 * 2**20  # log_growth.yml's default log_growth_max_size
    peak = 0
    script = ("while [ ! -e /tmp/flood ]; do sleep 1; done; "
              "line=$(head -c 7000 /dev/zero | busybox tr '\\0' x); "
              f"yes \"POST /orders body=$line\" | head -c {burst}; "
              "while true; do echo 'GET /health 200'; sleep 1; done")

    def before_setup(self) -> None:
        """Created before docker_log_rotation runs on the host (demo/playbooks/setup.yml)."""
        # --init: the workload ends on docker stop's SIGTERM, as a real service does (as PID 1, sh and sleep ignore it,
        # and every dockerd restart of the demo then waited out the 10 s stop timeout).
        sh(self.host, f"docker rm -f {self.container} >/dev/null 2>&1 || true; "
                      f"docker run -d --name {self.container} --restart unless-stopped --init pmr-workload:latest "
                      f"sh -c {shlex.quote(self.script)} >/dev/null")

    def prepare(self) -> None:
        if not sh(self.host, f"docker ps -q --filter name=^{self.container}$").strip():
            raise RuntimeError(f"no {self.container} on {self.host}: it is created before the host gets its log "
                               "limits, by `make demo` (python -m demo run), not by a replay")
        _, config = self._log()
        if json.loads(config).get("Config", {}).get("max-size"):
            raise RuntimeError(f"{self.container} on {self.host} has a bounded log ({config}): nothing to replay")

    def inject(self, alert_state: AlertProbe) -> float:
        began = time.time()
        sh(self.host, f"docker exec {self.container} sh -c ': > /tmp/flood'")
        deadline = time.time() + 120
        while time.time() < deadline and self.peak < self.burst:
            self.peak = max(self.peak, self._log()[0])
            time.sleep(1)
        print(f"    {self.container}'s log: {self.peak / 1e6:.0f} MB", flush=True)
        return began

    def _log(self) -> tuple[int, str]:
        out = sh(self.host, f"p=$(docker inspect -f '{{{{.LogPath}}}}' {self.container}); "
                            f"echo $(stat -c %s \"$p\") "
                            f"$(docker inspect -f '{{{{json .HostConfig.LogConfig}}}}' {self.container})").split(" ", 1)
        return int(out[0]), out[1].strip()

    def verify(self) -> Check:
        size, _ = self._log()
        # What a container created now gets (never started, removed at once).
        probe = sh(self.host, "docker create pmr-workload:latest true").strip()
        new = sh(self.host, f"docker inspect -f '{{{{json .HostConfig.LogConfig}}}}' {probe}; "
                            f"docker rm {probe} >/dev/null")
        bounded_new = bool(json.loads(new).get("Config", {}).get("max-size"))
        return Check(self.peak > self.cut_above > size and bounded_new,
                     f"log of {self.container}: {size / 1e6:.1f} MB (was {self.peak / 1e6:.0f} MB); "
                     f"new containers get {new.strip()}")

    def cleanup(self) -> None:
        sh(self.host, f"docker rm -f {self.container} >/dev/null 2>&1 || true", check=False)


# -- 3. a daemon.json change stops dockerd -----------------------------------------------------------------------
class DaemonConfigRejected(Incident):
    """Somebody sets "storage-driver": "zfs" in /etc/docker/daemon.json on a host without ZFS and restarts
    Docker: dockerd refuses to start, systemd gives up after its start limit, the services are down."""

    app = "shop"

    def prepare(self) -> None:
        # The host runs with the daemon.json it has, or with none (dockerd's defaults, as on a fresh Debian host):
        # docker_daemon.yml restores a recorded copy, or moves the rejected file aside when there was none.
        sh(self.host, f"docker rm -f {self.app} >/dev/null 2>&1 || true; "
                      f"docker run -d --name {self.app} --restart unless-stopped --init pmr-workload:latest "
                      f"sleep 86400 >/dev/null")

    def inject(self, alert_state: AlertProbe) -> float:
        sh(self.host, "python3 - <<'PY'\n"
                      "import json, os\n"
                      "path = '/etc/docker/daemon.json'\n"
                      "data = json.load(open(path)) if os.path.exists(path) else {}\n"
                      "data['storage-driver'] = 'zfs'\n"
                      "open(path, 'w').write(json.dumps(data, indent=2) + '\\n')\n"
                      "PY")
        began = time.time()
        sh(self.host, "systemctl restart docker.service", check=False)
        return began

    def verify(self) -> Check:
        active, _ = unit_state(self.host, "docker.service")
        config = sh(self.host, "cat /etc/docker/daemon.json 2>/dev/null || echo '(none)'").strip()
        running = sh(self.host, f"docker inspect -f '{{{{.State.Running}}}}' {self.app} 2>&1 || true").strip()
        ok = active == "active" and "zfs" not in config and running == "true"
        return Check(ok, f"docker.service {active}; daemon.json {' '.join(config.split())}; {self.app} running: "
                         f"{running}")

    def cleanup(self) -> None:
        sh(self.host, f"docker rm -f {self.app} >/dev/null 2>&1 || true", check=False)


# -- the scheduled jobs on host 3 ---------------------------------------------------------------------------------
def job_environment() -> str:
    """systemd Environment= lines for a job that runs this checkout's Ansible on a lab host (bind-mounted
    read-only there at the same path): the lab image has python3 but no Ansible."""
    site = VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    return "\n".join([
        f"Environment=PYTHONPATH={site}",
        "Environment=LANG=C.UTF-8",
        f"Environment=ANSIBLE_COLLECTIONS_PATH={REPO / 'build' / 'collections'}",
        "Environment=ANSIBLE_HOME=/var/lib/demo-jobs/ansible",
        "Environment=ANSIBLE_LOCAL_TEMP=/var/lib/demo-jobs/ansible/tmp",
        "Environment=ANSIBLE_FORCE_COLOR=false",
        "Environment=ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3",
    ])


def install_job(host: str, name: str, description: str, script: str, env_file: str) -> None:
    """/usr/local/sbin/NAME run by NAME.service, started hourly by NAME.timer (enabled), settings in
    /etc/default/NAME."""
    write_file(host, f"/usr/local/sbin/{name}", script, mode="0755")
    write_file(host, f"/etc/default/{name}", env_file)
    write_file(host, f"/etc/systemd/system/{name}.service",
               f"[Unit]\nDescription={description}\n\n[Service]\nType=oneshot\n{job_environment()}\n"
               f"EnvironmentFile=/etc/default/{name}\nExecStart=/usr/local/sbin/{name}\n")
    write_file(host, f"/etc/systemd/system/{name}.timer",
               f"[Unit]\nDescription={description} (schedule)\n\n[Timer]\nOnCalendar=hourly\n\n"
               f"[Install]\nWantedBy=timers.target\n")
    sh(host, f"mkdir -p /var/lib/demo-jobs/ansible/tmp && systemctl daemon-reload && "
             f"systemctl enable --now {name}.timer >/dev/null 2>&1")


def run_job(host: str, name: str) -> bool:
    """Start the job now, as its timer would; True when it succeeded."""
    out = sh(host, f"systemctl start {name}.service && echo ok || echo failed", timeout=180).strip()
    return out.endswith("ok")


ANSIBLE = f"python3 {VENV / 'bin' / 'ansible'} localhost -c local -i localhost,"


# -- 4. a mirror sync with an empty architecture ----------------------------------------------------------------
class MirrorSyncEmptyArch(Incident):
    """The upload job of a package mirror publishes $MIRROR_REPO/$MIRROR_ARCH with safe_sync (where the incident
    ran `rsync --delete $repo/$arch $dest/$repo/`). One day MIRROR_ARCH is empty."""

    job = "mirror-sync"
    archs = ("amd64", "i386", "arm64")

    def prepare(self) -> None:
        sh(self.host, "rm -rf /srv/build /srv/mirror && mkdir -p /srv/build/debian/amd64 && "
                      "for a in amd64 i386 arm64; do mkdir -p /srv/mirror/debian/$a; "
                      "for i in $(seq -w 1 40); do echo \"$a $i\" > /srv/mirror/debian/$a/pkg$i.deb; done; done && "
                      "for i in $(seq -w 1 40); do echo \"amd64 $i new\" > /srv/build/debian/amd64/pkg$i.deb; done")
        install_job(self.host, self.job, "Publish the build of one architecture to the package mirror",
                    "#!/bin/bash\n"
                    "# The mirror upload (where the incident ran rsync --delete $repo/$arch $dest/$repo/).\n"
                    f"exec {ANSIBLE} -m postmortem.remediation.safe_sync -a \""
                    "src=/srv/build/$MIRROR_REPO/$MIRROR_ARCH dest=/srv/mirror/$MIRROR_REPO/$MIRROR_ARCH "
                    "expect_suffix=$MIRROR_REPO/$MIRROR_ARCH max_delete=10 max_delete_ratio=0.1 "
                    f"metrics_file={TEXTFILE_DIR}/pmr_guard_mirror_sync.prom metrics_name=mirror-debian "
                    f"metrics_unit={self.job}.service\"\n",
                    "MIRROR_REPO=debian\nMIRROR_ARCH=amd64\n")
        if not run_job(self.host, self.job):
            raise RuntimeError(f"{self.host}: the healthy mirror sync failed: "
                               f"{sh(self.host, f'journalctl -u {self.job} -n 30 --no-pager', check=False)}")
        self.before = self._inventory()

    def _inventory(self) -> dict[str, int]:
        out = sh(self.host, "for a in amd64 i386 arm64; do echo $a $(ls /srv/mirror/debian/$a | wc -l); done")
        return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}

    def inject(self, alert_state: AlertProbe) -> float:
        sh(self.host, f"sed -i 's/^MIRROR_ARCH=.*/MIRROR_ARCH=/' /etc/default/{self.job}")
        began = time.time()
        run_job(self.host, self.job)
        return began

    def verify(self) -> Check:
        after = self._inventory()
        active, enabled = unit_state(self.host, f"{self.job}.timer")
        ok = after == self.before and active == "inactive" and enabled == "disabled"
        return Check(ok, f"mirror files per architecture {after} (before {self.before}); "
                         f"{self.job}.timer {active}, {enabled}")

    def operator_fix(self) -> str:
        sh(self.host, f"sed -i 's/^MIRROR_ARCH=.*/MIRROR_ARCH=amd64/' /etc/default/{self.job}")
        ok = run_job(self.host, self.job)
        sh(self.host, f"systemctl enable --now {self.job}.timer >/dev/null 2>&1")
        return f"set MIRROR_ARCH=amd64, ran {self.job} ({'ok' if ok else 'FAILED'}), re-enabled its timer"

    def cleanup(self) -> None:
        sh(self.host, f"systemctl disable --now {self.job}.timer >/dev/null 2>&1 || true", check=False)


# -- 5. a backup cleanup while the database fails ----------------------------------------------------------------
class BackupCleanupDatabaseDown(Incident):
    """The nightly cleanup of orphaned backups (guarded_cleanup) reads its catalogue from SQLite; the catalogue
    database hangs holding a lock (it crashed in the middle of a write) while the cleanup runs."""

    job = "backup-cleanup"
    catalogue = "/var/lib/backupd/catalog.db"

    def prepare(self) -> None:
        sh(self.host, f"systemctl stop backupd-db-crash.service >/dev/null 2>&1 || true; "
                      f"rm -rf /srv/backups /var/lib/backupd && mkdir -p /srv/backups /var/lib/backupd && "
                      f"for i in $(seq -w 1 100); do echo backup-$i > /srv/backups/cust$i.tar.gz; done && "
                      f"python3 -c \"import sqlite3; c = sqlite3.connect('{self.catalogue}'); "
                      f"c.execute('CREATE TABLE backups (file_name TEXT)'); "
                      f"c.executemany('INSERT INTO backups VALUES (?)', "
                      f"[('cust%03d.tar.gz' % i,) for i in range(1, 101)]); c.commit()\"")
        args = ('{"path": "/srv/backups", "pattern": "*.tar.gz", '
                f'"reference_sqlite": "{self.catalogue}", "reference_query": "SELECT file_name FROM backups", '
                '"reference_timeout": 3, "min_references": 50, "max_orphans": 10, "max_orphan_ratio": 0.05, '
                f'"metrics_file": "{TEXTFILE_DIR}/pmr_guard_backup_cleanup.prom", "metrics_name": "backups", '
                f'"metrics_unit": "{self.job}.service"}}')
        install_job(self.host, self.job, "Quarantine and purge backups that the catalogue no longer names",
                    "#!/bin/bash\n# The cleanup of orphaned backups, guarded by guarded_cleanup.\n"
                    f"exec {ANSIBLE} -m postmortem.remediation.guarded_cleanup -a '{args}'\n", "")
        if not run_job(self.host, self.job):
            raise RuntimeError(f"{self.host}: the healthy backup cleanup failed: "
                               f"{sh(self.host, f'journalctl -u {self.job} -n 30 --no-pager', check=False)}")
        self.before = self._backups()

    def _backups(self) -> str:
        return sh(self.host, "find /srv/backups -type f | sort | sha256sum | cut -c1-12; "
                             "find /srv/backups -type f | wc -l").replace("\n", " ").strip()

    def inject(self, alert_state: AlertProbe) -> float:
        began = time.time()
        # The database dies holding its write lock: every read of the catalogue times out.
        sh(self.host, "systemd-run --unit=backupd-db-crash --quiet python3 -c \"import sqlite3, time; "
                      f"c = sqlite3.connect('{self.catalogue}', isolation_level=None); "
                      "c.execute('BEGIN EXCLUSIVE'); time.sleep(3600)\"")
        # Until a read fails: on a loaded machine Python can take longer to start than any fixed wait, and a cleanup
        # that runs before the lock is taken meets a healthy database (the incident is not replayed).
        locked = sh(self.host, "for i in $(seq 300); do out=$(python3 -c \"import sqlite3; sqlite3.connect("
                               f"'{self.catalogue}', timeout=0).execute('SELECT count(*) FROM backups')\" 2>&1 "
                               "|| true); case $out in *'database is locked'*) echo locked; exit 0;; esac; sleep 0.1; "
                               "done", check=False)
        if "locked" not in locked:
            raise RuntimeError(f"{self.host}: the catalogue {self.catalogue} was never locked by backupd-db-crash")
        run_job(self.host, self.job)
        return began

    def verify(self) -> Check:
        after = self._backups()
        active, enabled = unit_state(self.host, f"{self.job}.timer")
        ok = after == self.before and active == "inactive" and enabled == "disabled"
        return Check(ok, f"backups (digest, count) {after} (before {self.before}); {self.job}.timer {active}, "
                         f"{enabled}")

    def operator_fix(self) -> str:
        sh(self.host, "systemctl stop backupd-db-crash.service")
        ok = run_job(self.host, self.job)
        sh(self.host, f"systemctl enable --now {self.job}.timer >/dev/null 2>&1")
        return f"restarted the catalogue database, ran {self.job} ({'ok' if ok else 'FAILED'}), re-enabled its timer"

    def cleanup(self) -> None:
        sh(self.host, f"systemctl disable --now {self.job}.timer >/dev/null 2>&1 || true; "
                      "systemctl stop backupd-db-crash.service >/dev/null 2>&1 || true", check=False)


def all_incidents(prefix: str) -> list[Incident]:
    incidents: list[Incident] = [
        BuildCacheFills("disk", "CI build cache fills the disk", 1, ("DockerDiskPressure", "DockerDataRootFillingUp"),
                        ("remediate/disk_pressure.yml",), FIXED),
        LogFlood("logs", "a container floods its log", 2, ("ContainerLogGrowth",), ("remediate/log_growth.yml",),
                 FIXED),
        DaemonConfigRejected("daemon", "daemon.json change stops dockerd", 2,
                             ("DockerDaemonConfigRejected", "DockerDaemonDown"), ("remediate/docker_daemon.yml",),
                             FIXED),
        MirrorSyncEmptyArch("mirror", "mirror sync with an empty arch", 3, ("MirrorSyncRefused",),
                            ("remediate/mirror_sync.yml",), CONTAINED),
        BackupCleanupDatabaseDown("backup", "backup cleanup while the DB fails", 3,
                                  ("BackupReferenceUnhealthy", "BackupCleanupRefused"),
                                  ("remediate/backup_cleanup.yml",), CONTAINED),
    ]
    for incident in incidents:
        incident.host = f"{prefix}-{incident.host_index}"
    return incidents


def playbooks_missing(incident: Incident) -> list[str]:
    return [p for p in incident.playbooks if not (REPO / "playbooks" / p).exists()]


def rules_missing(incident: Incident, alerts: list[str]) -> list[str]:
    return [a for a in incident.alerts if a not in alerts]

# Incidents whose alerts read the docker_signals collector's metrics.
EXPECTED_NEEDS_SIGNALS = ("disk", "logs", "daemon")
