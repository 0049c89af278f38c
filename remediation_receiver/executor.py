"""Executor: ansible-runner in a bounded worker pool, one fresh private_data_dir per run, ident = run id.

Never called from an HTTP request. Events stream into the journal (redacted); after the run the artifacts are
scrubbed (runner writes the whole process environment into `artifacts/<ident>/command`) and old run directories
are removed by the retention bound.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml

from .config import Config, receiver_id
from .journal import Journal, JournalError, RunRecord
from .redact import MASK, Redactor

log = logging.getLogger("remediation_receiver.executor")

RUN_MARKER = "REMEDIATION_RUN_ID"
KEPT_EVENTS = frozenset({
    "playbook_on_start", "playbook_on_play_start", "playbook_on_task_start", "runner_on_ok", "runner_on_failed",
    "runner_on_unreachable", "runner_on_skipped", "runner_item_on_failed", "playbook_on_stats",
    "runner_on_async_failed", "error",
})
RES_KEYS = ("changed", "failed", "msg", "rc", "stdout", "stderr", "skipped", "unreachable", "reclaimed", "diff")
MAX_TEXT = 4000
# Events kept in memory while the journal cannot take them (the oldest go first beyond this).
MAX_UNWRITTEN_EVENTS = 2000
# The final status of a run is written again until the journal takes it: first after this many seconds, then twice as
# long each time, at most RECORD_RETRY_MAX.
RECORD_RETRY = 0.5
RECORD_RETRY_MAX = 10.0


class Unsafe(str):
    """A string Ansible must never template (written as `!unsafe` into env/extravars)."""


class UnsafeMapping(dict[str, Any]):
    """A mapping whose keys and values Ansible must never template (a `!unsafe` mapping node)."""


class UnsafeList(list[Any]):
    """A list whose items Ansible must never template (a `!unsafe` sequence node)."""


def _unsafe_representer(dumper: yaml.SafeDumper, data: Unsafe) -> yaml.ScalarNode:
    return dumper.represent_scalar("!unsafe", str(data), style="'")


def _unsafe_mapping_representer(dumper: yaml.SafeDumper, data: UnsafeMapping) -> yaml.MappingNode:
    return dumper.represent_mapping("!unsafe", data)


def _unsafe_list_representer(dumper: yaml.SafeDumper, data: UnsafeList) -> yaml.SequenceNode:
    return dumper.represent_sequence("!unsafe", data)


class _ExtravarsDumper(yaml.SafeDumper):
    pass


_ExtravarsDumper.add_representer(Unsafe, _unsafe_representer)
_ExtravarsDumper.add_representer(UnsafeMapping, _unsafe_mapping_representer)
_ExtravarsDumper.add_representer(UnsafeList, _unsafe_list_representer)


def mark_unsafe(value: Any) -> Any:
    """Every mapping and list becomes a `!unsafe` node, keys included: alert data reaches the playbook as data only,
    however the playbook reads it (`dict2items`, `keys()`, a loop over the labels).

    ansible-core builds everything under a `!unsafe` collection node untrusted, keys too, while each quoted scalar
    keeps its own type. A lone string is tagged only when it holds a '{' (the only way into a Jinja delimiter):
    ansible-core 2.19 re-resolves a tagged scalar as if it were plain, so `!unsafe '1'` would become the integer 1.
    """
    if isinstance(value, str):
        return Unsafe(value) if "{" in value else value
    if isinstance(value, dict):
        return UnsafeMapping({str(k): mark_unsafe(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return UnsafeList(mark_unsafe(v) for v in value)
    return value


def dump_extravars(extravars: dict[str, Any]) -> str:
    return yaml.dump(mark_unsafe(extravars), Dumper=_ExtravarsDumper, default_flow_style=False, sort_keys=True)


def _trim(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + f"... [{len(value) - MAX_TEXT} more characters]"
    if isinstance(value, list):
        return [_trim(v) for v in value[:50]]
    if isinstance(value, dict):
        return {k: _trim(v) for k, v in list(value.items())[:50]}
    return value


def summarise_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """The part of a runner event worth keeping in the journal."""
    name = event.get("event", "")
    if name not in KEPT_EVENTS:
        return None
    data = event.get("event_data") or {}
    raw_res = data.get("res")
    res = raw_res if isinstance(raw_res, dict) else {}
    kept: dict[str, Any] = {"res": {k: _trim(res[k]) for k in RES_KEYS if k in res}}
    if name == "playbook_on_stats":
        kept = {k: data.get(k) for k in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")}
    return {
        "counter": event.get("counter"),
        "event": name,
        "task": data.get("task"),
        "host": data.get("host"),
        "data": kept,
    }


def scrub_artifacts(private_data_dir: str, redactor: Redactor) -> None:
    """Remove the environment runner wrote to disk and redact what remains."""
    env_dir = os.path.join(private_data_dir, "env")
    failed: list[str] = []
    for name in ("envvars", "passwords", "ssh_key", "cmdline"):
        path = os.path.join(env_dir, name)
        if os.path.exists(path):
            os.remove(path)
    for root, _dirs, files in os.walk(private_data_dir):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            if name == "command" and os.path.basename(os.path.dirname(os.path.dirname(path))) == "artifacts":
                try:
                    with open(path, encoding="utf-8") as handle:
                        data = json.load(handle)
                    data["env"] = MASK + " (removed by remediation-receiver)"
                    data = redactor.data(data)
                    text = json.dumps(data)
                except (OSError, ValueError):
                    text = json.dumps({"env": MASK})
            else:
                try:
                    with open(path, encoding="utf-8") as handle:
                        original = handle.read()
                except (OSError, UnicodeDecodeError):
                    continue
                text = redactor.text(original)
                if text == original:
                    continue
            if not _replace_or_remove(path, text):
                failed.append(path)
    if failed:
        raise OSError(f"could not scrub {len(failed)} artifact file(s), removed instead: {', '.join(failed[:5])}")


def _replace_or_remove(path: str, text: str) -> bool:
    """Put the scrubbed `text` in place of `path`; when that fails (a full disk), remove `path` rather than keep
    what it held unredacted, and never leave the temporary copy behind."""
    tmp = f"{path}.scrub"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError:
        for leftover in (tmp, path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
        return False
    return True


def prune_artifacts(artifacts_dir: str, keep: int, max_age_days: float, active: set[str]) -> list[str]:
    """Remove run directories beyond the newest `keep` or older than `max_age_days`; never an active one."""
    if not os.path.isdir(artifacts_dir):
        return []
    entries = []
    for name in os.listdir(artifacts_dir):
        path = os.path.join(artifacts_dir, name)
        if os.path.isdir(path) and not os.path.islink(path) and name not in active:
            entries.append((os.path.getmtime(path), name, path))
    entries.sort(reverse=True)
    cutoff = time.time() - max_age_days * 86400
    removed = []
    for index, (mtime, name, path) in enumerate(entries):
        if index >= keep or mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def find_run_processes(run_id: str, proc: str = "/proc") -> list[int]:
    """Processes (from an earlier receiver) that carry this run's marker in their environment."""
    marker = f"{RUN_MARKER}={run_id}".encode()
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "environ"), "rb") as handle:
                if marker in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_run_processes(run_id: str, grace: float = 5.0) -> list[int]:
    """Stop what an interrupted run left behind (ansible-playbook and its workers), TERM then KILL."""
    pids = find_run_processes(run_id)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.killpg(os.getpgid(pid), sig)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        deadline = time.time() + grace
        while time.time() < deadline and find_run_processes(run_id):
            time.sleep(0.1)
        if not find_run_processes(run_id):
            break
    return pids


class Executor:
    def __init__(self, cfg: Config, journal: Journal, redactor: Redactor,
                 on_finished: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.journal = journal
        self.redactor = redactor
        self.on_finished = on_finished
        self.capacity = min(cfg.workers, cfg.max_concurrent_runs)
        self._pool = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="runner")
        self._lock = threading.Lock()
        self._active: dict[str, str] = {}  # run id -> host
        self._cancel: dict[str, str] = {}  # run id -> reason
        self._fenced: set[str] = set()  # runs stopped because their lease could not be renewed
        self._stages: dict[str, dict[str, float]] = {}  # run id -> stage -> time.time(), until the run starts
        self._shutdown = threading.Event()
        # On a shared journal, the runs this receiver claims carry its name and a lease it renews (lease thread).
        self.owner = receiver_id(cfg)
        self.lease = cfg.journal_lease
        self._lease_thread: threading.Thread | None = None
        self.lease_renewed = time.monotonic()
        # Imported now, not in the first run: the first alert after a start would wait for it (a few hundred ms).
        import ansible_runner  # noqa: F401

    # -- what the dispatcher asks ----------------------------------------------------------------------------
    def active(self) -> dict[str, str]:
        with self._lock:
            return dict(self._active)

    def has_capacity(self) -> bool:
        with self._lock:
            return len(self._active) < self.capacity

    def submit(self, run: RunRecord) -> bool:
        """Claim the run ('starting', committed) and start it."""
        if not self.claim(run):
            return False
        self.launch(run)
        return True

    def claim(self, run: RunRecord) -> bool:
        """Write 'starting' and count the run as active, without starting it. Inside a journal transaction the
        caller launches it only after the commit (or releases it if the transaction fails)."""
        if not self.journal.claim_run(run.id, self.owner, self.lease):
            return False
        with self._lock:
            self._active[run.id] = run.host
        return True

    def release(self, run: RunRecord) -> None:
        """Forget a claim whose transaction rolled back."""
        with self._lock:
            self._active.pop(run.id, None)

    def launch(self, run: RunRecord) -> None:
        self._pool.submit(self._execute_safely, run)

    def stamp(self, run_id: str, **stamps: float | None) -> None:
        """Note when a run passed stages before the executor (received, woke, picked, committed): the run's
        'stages' event records them with the executor's own."""
        with self._lock:
            self._stages.setdefault(run_id, {}).update({k: v for k, v in stamps.items() if v is not None})

    def cancel(self, run_id: str, reason: str) -> None:
        with self._lock:
            if run_id in self._active:
                self._cancel[run_id] = reason

    # -- leases (a shared journal) -----------------------------------------------------------------------------
    def start_leases(self) -> None:
        """Renew the leases of this receiver's runs every third of the lease; stop the runs when they cannot be
        renewed for half the lease (another receiver takes them over once the lease has expired: never twice at
        once)."""
        if not self.journal.shared:
            return
        self.lease_renewed = time.monotonic()
        self._lease_thread = threading.Thread(target=self._lease_loop, name="leases", daemon=True)
        self._lease_thread.start()

    def _lease_loop(self) -> None:
        while not self._shutdown.wait(self.lease / 3):
            self.renew_leases()

    def renew_leases(self) -> None:
        attempt = time.monotonic()
        try:
            # Only the runs running here: one whose end could not be recorded must not keep a lease for good.
            running = list(self.active())
            self.journal.renew_leases(self.owner, self.lease, running)
            self.lease_renewed = attempt
            # A renewal that came too late (this process starved, the journal slow): another receiver may have
            # taken a run over already. Stop it here at once, so it never runs in two places for longer.
            for run_id in self.journal.runs_taken_from(self.owner, running):
                self.fence("taken over by another receiver (this receiver's lease had expired): stopped here",
                           run_ids=[run_id])
        except Exception as exc:
            lost = time.monotonic() - self.lease_renewed
            log.error("could not renew the leases of this receiver's runs for %.0fs: %s", lost, exc)
            if lost > self.lease / 2:
                self.fence(f"lease lost: the journal could not be reached for {lost:.0f}s (lease "
                           f"{self.lease:.0f}s); another receiver takes the run over")

    def fence(self, reason: str, run_ids: list[str] | None = None) -> None:
        """Stop the runs of this receiver (`run_ids`, or every one): they end interrupted."""
        with self._lock:
            for run_id in self._active if run_ids is None else [r for r in run_ids if r in self._active]:
                if run_id not in self._fenced:
                    log.error("run %s: %s", run_id, reason)
                self._cancel.setdefault(run_id, reason)
                self._fenced.add(run_id)

    def shutdown(self, grace: float) -> None:
        """Let running playbooks finish for `grace` seconds, then cancel them (they become interrupted)."""
        deadline = time.time() + grace
        while self.active() and time.time() < deadline:
            time.sleep(0.2)
        self._shutdown.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- one run ---------------------------------------------------------------------------------------------
    def _journal_errors(self) -> tuple[type[BaseException], ...]:
        """What a journal that cannot be written raises: its driver's errors, and JournalError (a connection that
        cannot be opened again)."""
        return (*self.journal.errors, JournalError)

    def _record_end(self, run_id: str, status: str, write: Callable[[], None]) -> None:
        """`write` (the run's last events and its final status) until the journal takes it: a run whose end is not
        recorded would stay active for good (its host busy, its lease renewed). Given up only at shutdown, when the
        next start finds the run active and handles it as interrupted."""
        delay = RECORD_RETRY
        while True:
            try:
                write()
                return
            except self._journal_errors() as exc:
                if self._shutdown.is_set():
                    raise
                log.error("run %s ended %s; the journal could not record that status (%s): trying again in %.1fs",
                          run_id, status, exc, delay)
            self._shutdown.wait(delay)
            delay = min(delay * 2, RECORD_RETRY_MAX)

    def _execute_safely(self, run: RunRecord) -> None:
        try:
            self._execute(run)
        except Exception as exc:  # a bug or a broken environment must still end the run in the journal
            log.exception("run %s failed to execute", run.id)
            # Never recorded as ended while its playbook still runs: ansible-runner may have stopped watching it.
            try:
                leftovers = kill_run_processes(run.id, grace=2.0)
                if leftovers:
                    log.error("run %s: stopped %d process(es) it left running", run.id, len(leftovers))
            except OSError:
                log.exception("run %s: could not look for its processes", run.id)
            try:
                self.journal.set_run_status(run.id, "error", reason=f"executor error: {exc}",
                                            finished_at=time.time(), expect=("starting", "running"))
            except Exception:  # the journal is unreachable: the run's lease expires and recovery takes it over
                log.exception("run %s: could not record its end", run.id)
        finally:
            with self._lock:
                self._active.pop(run.id, None)
                self._cancel.pop(run.id, None)
                self._fenced.discard(run.id)
                self._stages.pop(run.id, None)
            try:
                prune_artifacts(self.cfg.artifacts_dir, self.cfg.keep_runs, self.cfg.max_artifact_age_days,
                                set(self.active()))
            except OSError:
                log.exception("artifact retention failed")
            self.on_finished(run.id)

    def _prepare(self, run: RunRecord) -> str:
        os.makedirs(self.cfg.artifacts_dir, mode=0o700, exist_ok=True)
        private_data_dir = os.path.join(self.cfg.artifacts_dir, run.id)
        # Fresh every time: runner does not overwrite an existing env/extravars (stale inputs).
        os.mkdir(private_data_dir, 0o700)
        os.mkdir(os.path.join(private_data_dir, "env"), 0o700)
        path = os.path.join(private_data_dir, "env", "extravars")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
            handle.write(dump_extravars(run.extravars))
        return private_data_dir

    def _execute(self, run: RunRecord) -> None:
        import ansible_runner

        with self._lock:
            stages = self._stages.pop(run.id, {})
        stages["worker"] = time.time()
        rule = self.cfg.rule(run.rule)
        job_timeout = (rule.job_timeout if rule and rule.job_timeout else None) or self.cfg.job_timeout
        idle_timeout = (rule.idle_timeout if rule and rule.idle_timeout else None) or self.cfg.idle_timeout
        private_data_dir = self._prepare(run)
        stages["prepared"] = time.time()
        buffer: list[dict[str, Any]] = []
        buffer_lock = threading.Lock()
        last_flush = [time.time()]

        def note_stage(event: dict[str, Any]) -> None:
            stages.setdefault("first_event", time.time())
            name = event.get("event")
            if name == "playbook_on_start":
                stages.setdefault("playbook_start", event_created(event))
            elif name == "playbook_on_task_start" and "task_start" not in stages:
                stages["task_start"] = event_created(event)
                stages["task_start_seen"] = time.time()

        def stages_event() -> dict[str, Any]:
            """When the run passed each stage from its alert to its first task: the 'stages' event, written once
            with the first task's start (no commit of its own)."""
            stages["written"] = time.time()
            return {"event": "stages", "data": {k: round(v, 6) for k, v in stages.items()}}

        def flush(strict: bool = False) -> None:
            """Write the buffered events. Events are a record, not a state anything acts on: a journal that cannot
            take them now keeps them here for the next flush (ansible-runner calls this from its watch loop: an
            error raised here would make it stop watching a playbook that goes on running). `strict`: raise."""
            with buffer_lock:
                pending, buffer[:] = list(buffer), []
                last_flush[0] = time.time()
            try:
                self.journal.add_run_events(run.id, pending)
            except self._journal_errors() as exc:
                with buffer_lock:
                    buffer[:0] = pending
                    dropped = len(buffer) - MAX_UNWRITTEN_EVENTS
                    if dropped > 0:
                        del buffer[:dropped]
                if strict:
                    raise
                log.warning("run %s: %d event(s) kept in memory, the journal could not take them: %s", run.id,
                            len(pending), exc)

        def event_handler(event: dict[str, Any]) -> bool:
            first = "first_event" not in stages
            note_stage(event)
            if first:
                # ansible-playbook runs (its first event). Nothing acts on starting -> running (both are active;
                # recovery treats them alike): no wait for the disk, and written here, not in the status handler,
                # which runner calls just before it spawns ansible-playbook (a write there waits for the journal's
                # lock, behind a delivery's fsync when one is committing, and the spawn waits with it).
                try:
                    self.journal.set_run_status(run.id, "running", expect=("starting",), durable=False)
                except self._journal_errors() as exc:  # the final status says how it ended; never stop the run here
                    log.warning("run %s: could not record 'running': %s", run.id, exc)
            summary = summarise_event(event)
            if summary is not None:
                with buffer_lock:
                    buffer.append(self.redactor.data(summary))
                    if summary["event"] == "playbook_on_task_start" and "written" not in stages:
                        buffer.append(stages_event())
                if summary["event"] in ("playbook_on_task_start", "playbook_on_stats") or \
                        time.time() - last_flush[0] > 0.5:
                    flush()
            return True

        def status_handler(data: dict[str, Any], runner_config: Any = None) -> None:
            # The 'starting' status carries the full environment: only the time is kept.
            if data.get("status") == "starting":
                stages["starting"] = time.time()
            elif data.get("status") == "running":  # ansible-playbook is spawned right after this returns
                stages["spawning"] = time.time()

        def cancel_callback() -> bool:
            with self._lock:
                return run.id in self._cancel or self._shutdown.is_set()

        envvars = dict(self.cfg.envvars)
        envvars[RUN_MARKER] = run.id
        envvars.setdefault("ANSIBLE_NOCOLOR", "1")  # plain text in the stored stdout
        # ansible-playbook from the receiver's own virtual environment comes first.
        bindir = os.path.dirname(sys.executable)
        envvars.setdefault("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
        cmdline = "--check --diff" if run.check_mode else None
        log.info("run %s: %s on %s (rule %s, attempt %d%s)", run.id, run.playbook, run.host, run.rule, run.attempt,
                 ", check mode" if run.check_mode else "")
        stages["runner_called"] = time.time()
        runner = ansible_runner.run(
            private_data_dir=private_data_dir,
            project_dir=self.cfg.project_dir,
            playbook=run.playbook,
            inventory=self.cfg.inventory,
            limit=run.host,
            ident=run.id,
            envvars=envvars,
            cmdline=cmdline,
            settings={"job_timeout": job_timeout, "idle_timeout": idle_timeout, "pexpect_timeout": 1,
                      "suppress_ansible_output": True},
            quiet=True,
            event_handler=event_handler,
            status_handler=status_handler,
            cancel_callback=cancel_callback,
        )
        with buffer_lock:
            if "written" not in stages:  # no task started (the playbook failed before its first one)
                buffer.append(stages_event())
        flush()  # committed without waiting for the disk: the final status below makes it durable
        status, reason = runner.status, ""
        with self._lock:
            cancel_reason = self._cancel.get(run.id)
            fenced = run.id in self._fenced
        if status == "canceled":
            if fenced:
                status, reason = "interrupted", cancel_reason or "lease lost"
            elif cancel_reason:
                reason = cancel_reason
            else:
                status, reason = "interrupted", "the receiver shut down during the run"
        elif status == "timeout":
            reason = f"timed out (job {job_timeout:.0f}s / idle {idle_timeout:.0f}s)"
        elif status == "failed":
            reason = f"playbook failed (rc {runner.rc})"
        # A timeout or a cancel kills ansible-playbook, not what its tasks started: stop those too.
        leftovers = kill_run_processes(run.id, grace=2.0)
        if leftovers:
            with buffer_lock:
                buffer.append({"event": "leftovers_killed", "data": {"pids": leftovers}})
        stats = runner.stats if isinstance(runner.stats, dict) else None
        if status == "successful" and stats is not None and run.host not in _hosts_in_stats(stats):
            status, reason = "failed", f"the play did not reach {run.host}"
        try:
            scrub_artifacts(private_data_dir, self.redactor)
        except OSError:
            log.exception("run %s: scrubbing artifacts failed", run.id)
        finished_at = time.time()

        def record() -> None:
            flush(strict=True)
            # A successful run keeps the reason it was queued with ("approved by ...", "rerun of ...").
            self.journal.set_run_status(run.id, status, reason=reason or None, rc=runner.rc, stats=stats,
                                        finished_at=finished_at, expect=("starting", "running"))

        self._record_end(run.id, status, record)
        log.info("run %s: %s rc=%s %s", run.id, status, runner.rc, reason)


def event_created(event: dict[str, Any]) -> float:
    """When ansible-playbook emitted `event` (its 'created', an ISO time), as time.time() counts; now if absent."""
    try:
        created = datetime.datetime.fromisoformat(str(event["created"]))
    except (KeyError, ValueError):
        return time.time()
    if created.tzinfo is None:
        created = created.replace(tzinfo=datetime.UTC)
    return created.timestamp()


def _hosts_in_stats(stats: dict[str, Any]) -> set[str]:
    hosts: set[str] = set()
    for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored", "processed"):
        value = stats.get(key)
        if isinstance(value, dict):
            hosts.update(value)
    return hosts
