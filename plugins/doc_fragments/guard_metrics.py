# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # The guard outcome metrics shared by safe_sync and guarded_cleanup (plugins/module_utils/_textfile_metrics.py).
    DOCUMENTATION = r"""
options:
  metrics_file:
    description:
      - Write the outcome of the run as node_exporter textfile metrics to this file (a C(.prom) file in the
        textfile collector directory, for example C(/var/lib/prometheus/node-exporter/pmr_guard_mirror.prom)),
        atomically (temporary file and rename), so that the collection's alert rules see every refusal and failure.
      - Metrics C(pmr_guard_last_run_timestamp_seconds) (when the run ended), C(pmr_guard_refused) (1/0),
        C(pmr_guard_failed) (1/0), C(pmr_guard_planned_deletions), C(pmr_guard_deleted), and for guarded_cleanup's
        reconciliation C(pmr_guard_reference_healthy) (1/0), each labelled C(guard), C(name) (O(metrics_name)) and
        C(unit) (O(metrics_unit)).
      - Every run that ends writes how it ended - ok (both 0), refused, or failed (bad parameters, a lock held past
        its timeout, rsync or a file operation failing, an unexpected error, SIGTERM); a failed run's
        C(pmr_guard_deleted) counts what it did before the error. Only a run killed with SIGKILL writes nothing.
      - Use one file per job; each run replaces the whole file. Not written in check mode.
      - A file that cannot be written (read-only or missing directory, a directory in its place) is a warning and
        C(metrics_error) in the result, never a failure - the run's own outcome (ok, refused or failed) is
        what the task returns, and the file keeps the previous run's outcome until a later run can write it.
    type: path
  metrics_name:
    description:
      - The C(name) label of the metrics, naming the job. Defaults to the destination (safe_sync) or the
        directory (guarded_cleanup).
    type: str
  metrics_unit:
    description:
      - The C(unit) label of the metrics - the systemd service whose timer runs this job (for example
        C(mirror-sync.service)), which a containment playbook stops and disables when the guard refuses.
      - Empty when no timer runs the job.
    type: str
    default: ""
  metrics_max_age:
    description:
      - How long after a run ended the job counts as stale - its timer disabled, its cron entry broken, the host
        that runs it gone - written as C(pmr_guard_max_age_seconds) (same labels) so that the collection's
        MirrorSyncStale and BackupCleanupStale alerts page when C(pmr_guard_last_run_timestamp_seconds) is older.
        The module cannot know the job's schedule; this option says it.
      - Whole seconds (C(93600)) or a whole number with a unit C(s), C(m), C(h), C(d) or C(w) (C(26h)). Set the
        schedule's period plus a margin for a slow run - for a daily job C(26h) (the playbooks' default).
      - Anything else, or 0, is refused (in check mode too) with the option's name, and the run fails.
      - Unset (the default), no such metric is written and no staleness alert can fire for this job. Without
        O(metrics_file) it has no effect.
    type: raw
"""
