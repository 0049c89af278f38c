"""The rollout playbook's decisions over its per-host records: when to stop, and the summary an operator reads."""

from __future__ import annotations

import pytest
from ansible_collections.postmortem.remediation.plugins.filter import storage_rollout as sr


def rec(host: str, outcome: str | None, driver: str | None = "overlay2", message: str = "") -> dict:
    record = {"host": host, "batch": [host]}
    if outcome is not None:
        record["outcome"] = outcome
    if driver is not None:
        record["driver"] = driver
    if message:
        record["message"] = message
    return record


STOPS = [
    # (case, records, hosts that stop the rollout)
    ("no batch yet", [], []),
    ("every host succeeded", [rec("a", "changed"), rec("b", "unchanged"), rec("c", "planned")], []),
    ("a refusal stops it", [rec("a", "changed"), rec("b", "refused")], ["b"]),
    ("a rollback stops it", [rec("a", "rolled_back")], ["a"]),
    ("a failed rollback stops it", [rec("a", "rollback_failed")], ["a"]),
    ("a failure stops it", [rec("a", "failed")], ["a"]),
    ("a host left mid-change stops it", [rec("b", "interrupted", driver=None), rec("a", "changed")], ["b"]),
    ("a record without an outcome counts as interrupted", [rec("a", None)], ["a"]),
    ("a stray file without a host is ignored", [{"outcome": "failed"}, "junk", rec("a", "changed")], []),
]


@pytest.mark.parametrize(("case", "records", "stopped"), STOPS, ids=[row[0] for row in STOPS])
def test_what_stops_the_rollout(case, records, stopped):
    assert sr.rollout_stopped_by(records) == stopped


TARGETS = ["r1", "r2", "r3", "r4"]

SUMMARIES = [
    # (case, records, driver asked for, expected subset of the summary)
    ("a canary rolled back, the rest untouched",
     [rec("r1", "rolled_back", "zfs", "Switching r1 ... Rolled back")], "zfs",
     {"rolled_back": ["r1"], "untouched": ["r2", "r3", "r4"], "changed": [], "failed": [], "succeeded": False,
      "messages": {"r1": "Switching r1 ... Rolled back"}, "driver": "zfs"}),
    ("every host done, some already on the driver",
     [rec("r1", "changed"), rec("r2", "unchanged"), rec("r3", "unchanged"), rec("r4", "changed")], "overlay2",
     {"changed": ["r1", "r4"], "unchanged": ["r2", "r3"], "untouched": [], "succeeded": True, "messages": {}}),
    ("a dry run plans every host",
     [rec(h, "planned") for h in TARGETS], "vfs", {"planned": TARGETS, "succeeded": True}),
    ("failed, rollback_failed and interrupted are all failed",
     [rec("r1", "failed"), rec("r2", "rollback_failed"), rec("r3", "interrupted", driver=None)], "vfs",
     {"failed": ["r1", "r2", "r3"], "untouched": ["r4"], "succeeded": False}),
    ("a refusal is not a success", [rec(h, "refused") for h in TARGETS], "zfs",
     {"refused": TARGETS, "succeeded": False}),
    ("the driver this run was started for wins over the records",
     [rec("r1", "rolled_back", "zfs")], "vfs", {"driver": "vfs"}),
    ("without a run record the records name the driver", [rec("r1", "changed", "vfs")], None, {"driver": "vfs"}),
    ("an interrupted record names no driver", [rec("r1", "interrupted", driver=None)], None, {"driver": "?"}),
    ("no records at all: every target untouched", [], "overlay2", {"untouched": TARGETS, "succeeded": False}),
]


@pytest.mark.parametrize(("case", "records", "driver", "expected"), SUMMARIES, ids=[row[0] for row in SUMMARIES])
def test_rollout_summary(case, records, driver, expected):
    summary = sr.rollout_summary(records, TARGETS, "run-1", driver)
    assert summary["run"] == "run-1"
    for key, value in expected.items():
        assert summary[key] == value, (case, key, summary)
    listed = [h for key, _label in sr.SUMMARY_GROUPS for h in summary[key]]
    assert sorted(listed + summary["untouched"]) == sorted(set(listed) | set(TARGETS)), "each host in one list"


def test_summary_keys_are_what_the_playbook_and_set_stats_hand_out():
    summary = sr.rollout_summary([], [], "r", "vfs")
    assert set(summary) == {"run", "driver", "changed", "unchanged", "planned", "refused", "rolled_back", "failed",
                            "untouched", "messages", "succeeded"}


def test_the_filters_are_registered():
    assert set(sr.FilterModule().filters()) == {"rollout_stopped_by", "rollout_summary"}
