# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# node_exporter's textfile collector reads every *.prom file of one directory at each scrape. A file it reads
# half-written is a scrape error (or, worse, a partial set of samples), so every writer here renders the whole
# text first and moves it into place with a rename: the collector sees the old file or the new one, never a mix.
# The temporary file is named .<name>.<random>.tmp: node_exporter ignores what does not end in .prom. The writer is
# write_atomically of _files.py, the one every atomic text write of the collection uses.
#
# Used by the safe_sync and guarded_cleanup modules (pmr_guard_* metrics, option metrics_file; every run that ends,
# allowed, refused or failed, through _guard_module.GuardedModule) and by the
# docker_signals collector script (copied beside it by the role, with _files.py). Standard library only: this runs
# on managed hosts.

from __future__ import annotations

import math
import os
import re
import time
from typing import TYPE_CHECKING, Any

try:
    from ._files import write_atomically
except ImportError:  # copied beside the docker_signals collector (roles/docker_signals): a flat directory, no package
    from _files import write_atomically  # type: ignore[no-redef]

if TYPE_CHECKING:  # for the checker only: the docker_signals collector runs this file without Ansible
    from ansible.module_utils.basic import AnsibleModule

    from ._deletion_guard import Check, Verdict

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
GUARDS = ("safe_sync", "guarded_cleanup")

# The module options, declared once for both guarded modules (documented in the guard_metrics doc fragment).
GUARD_METRICS_ARGSPEC = dict(
    metrics_file=dict(type="path"),
    metrics_name=dict(type="str"),
    metrics_unit=dict(type="str", default=""),
    # raw: seconds as a number (93600) or a duration string ("26h"); parse_max_age checks both
    metrics_max_age=dict(type="raw"),
)
# A duration: a whole number of seconds, or a whole number with a unit s, m, h, d or w (the grace_period grammar).
DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MetricsError(ValueError):
    """A metric or label name that the exposition format does not allow."""


class Family(object):
    """One metric family: name, help text, type and its samples (a dict of labels and a number each)."""

    def __init__(self, name: str, help_text: str, kind: str = "gauge") -> None:
        if not METRIC_NAME_RE.match(name):
            raise MetricsError("invalid metric name %r" % (name,))
        self.name = name
        self.help_text = help_text
        self.kind = kind
        self.samples: list[tuple[dict[str, Any], float]] = []

    def add(self, value: float, **labels: Any) -> Family:
        for label in labels:
            if not LABEL_NAME_RE.match(label) or label.startswith("__"):
                raise MetricsError("invalid label name %r in %s" % (label, self.name))
        self.samples.append((labels, value))
        return self


def escape_label_value(value: object) -> str:
    """Backslash, double quote and newline escaped as the text exposition format requires."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return "%d" % value
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return "%d" % value
    return repr(value)


def render(families: list[Family]) -> str:
    """The text exposition of ``families``: HELP and TYPE once per family, samples sorted by their labels."""
    lines = []
    for family in families:
        lines.append("# HELP %s %s" % (family.name, family.help_text.replace("\\", "\\\\").replace("\n", " ")))
        lines.append("# TYPE %s %s" % (family.name, family.kind))
        for labels, value in sorted(family.samples, key=lambda sample: sorted(sample[0].items())):
            text = ""
            if labels:
                text = "{%s}" % ",".join('%s="%s"' % (k, escape_label_value(v)) for k, v in sorted(labels.items()))
            lines.append("%s%s %s" % (family.name, text, format_value(value)))
    return "\n".join(lines) + "\n"


def parse_max_age(value: object, option: str = "metrics_max_age") -> int | None:
    """Seconds of a max age given as a number of seconds or a duration (``26h``); None when unset (None or "").

    Refused (ValueError naming ``option``): anything else, 0 or less, a bool, a fraction of a second.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    seconds: int | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str):
        match = DURATION_RE.match(value)
        if match:
            seconds = int(match.group(1)) * DURATION_UNITS[match.group(2)]
    if seconds is None:
        raise ValueError("%s %r is not a duration: give whole seconds (93600) or a number with a unit s, m, h, d or w "
                         "(26h)" % (option, value))
    if seconds <= 0:
        raise ValueError("%s %r must be more than 0 seconds: a max age of 0 would call every run stale (leave it unset "
                         "for no staleness alert)" % (option, value))
    return seconds


# -- the guard outcome of safe_sync and guarded_cleanup --------------------------------------------------------------
def guard_families(guard: str | None, name: str, unit: str, timestamp: float, refused: bool, planned: int, deleted: int,
                   reference_healthy: bool | None = None, failed: bool = False,
                   max_age: float | None = None) -> list[Family]:
    """pmr_guard_* families for one run of a guarded job, each with labels guard, name and unit.

    A run ends one of three ways: ok (refused 0, failed 0), refused (refused 1) or failed (failed 1: an error ended
    it, before or during its work; what it deleted until then is in pmr_guard_deleted). ``max_age``: the seconds
    after which a job that has not run is stale (pmr_guard_max_age_seconds, the MirrorSyncStale and
    BackupCleanupStale alerts); no such series when None.
    """
    if guard not in GUARDS:
        raise MetricsError("unknown guard %r (one of %s)" % (guard, ", ".join(GUARDS)))
    labels = {"guard": guard, "name": name, "unit": unit or ""}
    families = [
        Family("pmr_guard_last_run_timestamp_seconds", "Unix time the last run of the guarded job ended (ok, refused "
               "or failed).").add(timestamp, **labels),
        Family("pmr_guard_refused", "1 when the guard refused the last run (nothing was deleted), else 0.")
        .add(1 if refused and not failed else 0, **labels),
        Family("pmr_guard_failed", "1 when an error ended the last run (not a refusal: see pmr_guard_deleted), else 0.")
        .add(1 if failed else 0, **labels),
        Family("pmr_guard_planned_deletions", "Deletions the last run planned (refused or not).")
        .add(planned, **labels),
        Family("pmr_guard_deleted", "Items the last run deleted or took out of place (0 when refused).")
        .add(deleted, **labels),
    ]
    if reference_healthy is not None:
        families.append(Family("pmr_guard_reference_healthy",
                               "1 when the reference list of the last run was healthy and plausible, else 0.")
                        .add(1 if reference_healthy else 0, **labels))
    if max_age is not None:
        families.append(Family("pmr_guard_max_age_seconds", "Seconds after the last run's end when the job is stale "
                               "(its schedule has stopped): option metrics_max_age.").add(max_age, **labels))
    return families


def guard_outcome(guard: str, allowed: bool, checks: list[Check], result: dict[str, Any], check_mode: bool = False,
                  ) -> tuple[int, int, bool | None]:
    """(planned, deleted, reference_healthy) of one run, read from the module's verdict checks and result.

    safe_sync: planned = files the dry run would delete; deleted = files the real run deleted.
    guarded_cleanup: planned = orphans the reconciliation found; deleted = items quarantined plus items purged;
    reference healthy = the reference was read and passed every reference check (none for state=restore).
    """
    done = allowed and not check_mode
    if guard == "safe_sync":
        planned = (result.get("plan") or {}).get("delete_count", result.get("deleted", 0)) or 0
        return planned, result.get("deleted", 0) if done else 0, None
    planned = result.get("orphan_count", 0) or 0
    # A run that failed half-way has no *_count yet (they are set when it ends): its lists hold what it moved so far.
    deleted = (result.get("quarantined_count", len(result.get("quarantined", [])))
               + result.get("purged_count", len(result.get("purged", [])))) if done else 0
    healthy = None
    if "reference" in result:
        healthy = not (result["reference"] or {}).get("error") and all(
            check.ok for check in checks if check.name.startswith("reference"))
    return planned, deleted, healthy


def write_guard_metrics(module: AnsibleModule, guard: str, verdict: Verdict | None, result: dict[str, Any],
                        failed: bool = False) -> None:
    """Write the pmr_guard_* metrics of this run to the module's metrics_file, when one is given; once per run.

    Never in check mode (nothing on the host changes). ``failed``: an error ended the run (``verdict`` is None when it
    ended before the module had one: bad parameters). A file that cannot be written is a warning and a
    ``metrics_error`` in the result, never a failure and never a rename through ``module.atomic_move`` (which would
    fail the module): the guarded work has already happened, been refused or failed, and the task says which.
    """
    params = module.params or {}
    path = params.get("metrics_file")
    if not path or module.check_mode or getattr(module, "pmr_guard_metrics_written", False):
        return
    module.pmr_guard_metrics_written = True  # type: ignore[attr-defined]  # a refusal that fails must stay a refusal
    allowed = verdict.allowed if verdict is not None else True
    planned, deleted, healthy = guard_outcome(guard, allowed or failed, verdict.checks if verdict else [], result)
    name = params.get("metrics_name") or params.get("dest") or params.get("path") or ""
    try:
        try:
            max_age = parse_max_age(params.get("metrics_max_age"))
        except ValueError:
            max_age = None  # the run that fails on it (GuardedModule) still records its failure
        text = render(guard_families(guard, str(name), params.get("metrics_unit") or "", time.time(),
                                     not allowed, planned, deleted, healthy, failed=failed, max_age=max_age))
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise OSError("directory %s does not exist" % os.path.dirname(os.path.abspath(path)))
        write_atomically(path, text)
    except (IOError, OSError, MetricsError, TypeError, ValueError) as exc:
        result["metrics_error"] = "metrics file %s not written: %s" % (path, exc)
        module.warn("%s; the guard's alerts cannot see this run (create the directory, or fix metrics_file)"
                    % result["metrics_error"])
