"""The reclaim rules as tables: sizes, targets, ages, windows, keep rules, tier planning, truncation, lock, metrics."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible_collections.postmortem.remediation.plugins.module_utils import _prune_policy as policy

NOW = 1_800_000_000.0
KEEP = "postmortem.remediation.keep"
GIB = 1024**3
MIB = 1024**2


def ts(seconds_ago: float) -> str:
    """An RFC 3339 timestamp (Docker style, nanoseconds) seconds_ago before NOW."""
    stamp = time.gmtime(NOW - seconds_ago)
    return time.strftime("%Y-%m-%dT%H:%M:%S", stamp) + ".123456789Z"


# --- sizes and targets -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        (2048, 2048),
        ("500M", 500 * MIB),
        ("500m", 500 * MIB),
        ("2G", 2 * GIB),
        ("2GB", 2 * GIB),
        ("2GiB", 2 * GIB),
        ("1.5G", int(1.5 * GIB)),
        ("10k", 10 * 1024),
        (" 3 T ", 3 * 1024**4),
        ("0", 0),
        ("7B", 7),
    ],
)
def test_parse_size_reads_binary_units(text, expected):
    assert policy.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "2X", "1,5G", "15%", True, -5, "two"])
def test_parse_size_refuses_what_it_cannot_read(text):
    with pytest.raises(policy.PolicyError):
        policy.parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15%", ("percent", 15.0)),
        (" 2.5 % ", ("percent", 2.5)),
        ("2G", ("bytes", 2 * GIB)),
        ("500M", ("bytes", 500 * MIB)),
        ("1048576", ("bytes", 1048576)),
    ],
)
def test_parse_target(text, expected):
    assert policy.parse_target(text) == expected


@pytest.mark.parametrize("text", ["0%", "100%", "150%", "0", "0G", "%", "abc"])
def test_parse_target_refuses_targets_that_mean_nothing(text):
    with pytest.raises(policy.PolicyError):
        policy.parse_target(text)


@pytest.mark.parametrize(
    ("target", "total", "expected"),
    [
        (("percent", 15.0), 1000, 150),
        (("percent", 50.0), 10 * GIB, 5 * GIB),
        (("bytes", 2 * GIB), 10 * GIB, 2 * GIB),
    ],
)
def test_target_bytes(target, total, expected):
    assert policy.target_bytes(target, total) == expected


# --- durations, timestamps, windows ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30),
        ("10m", 600),
        ("24h", 86400),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),
        ("90", 90),
        (90, 90),
        ("0s", 0),
        ("0", 0),
        (" 1H ", 3600),
    ],
)
def test_parse_duration(text, expected):
    assert policy.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "10x", "-5m", "1 day", True, -3])
def test_parse_duration_refuses_what_it_cannot_read(text):
    with pytest.raises(policy.PolicyError):
        policy.parse_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2027-01-15T08:00:00Z", 1_800_000_000.0),
        ("2027-01-15T08:00:00.500000000Z", 1_800_000_000.5),
        ("2027-01-15T10:00:00+02:00", 1_800_000_000.0),
        ("2027-01-15T03:00:00-05:00", 1_800_000_000.0),
        (1_800_000_000, 1_800_000_000.0),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        (None, None),
        (0, None),
        ("yesterday", None),
    ],
)
def test_parse_timestamp(value, expected):
    assert policy.parse_timestamp(value) == expected


BACKUP = [{"name": "backup", "start": "01:00", "end": "04:30"}]
OVERNIGHT = [{"name": "batch", "start": "22:00", "end": "02:00"}]


@pytest.mark.parametrize(
    ("windows", "clock", "inside"),
    [
        (BACKUP, "00:59", False),
        (BACKUP, "01:00", True),
        (BACKUP, "03:15", True),
        (BACKUP, "04:29", True),
        (BACKUP, "04:30", False),
        (OVERNIGHT, "21:59", False),
        (OVERNIGHT, "22:00", True),
        (OVERNIGHT, "23:59", True),
        (OVERNIGHT, "00:00", True),
        (OVERNIGHT, "01:59", True),
        (OVERNIGHT, "02:00", False),
        ([], "03:00", False),
        ([{"start": "05:00", "end": "05:00"}], "05:00", False),
        (BACKUP + OVERNIGHT, "23:00", True),
    ],
)
def test_active_window(windows, clock, inside):
    minute = policy.parse_clock(clock)
    assert (policy.active_window(windows, minute) is not None) is inside


@pytest.mark.parametrize("clock", ["24:00", "1:60", "noon", "", "12"])
def test_parse_clock_refuses_bad_times(clock):
    with pytest.raises(policy.PolicyError):
        policy.parse_clock(clock)


# --- keep rules ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "kept"),
    [
        ({KEEP: "true"}, True),
        ({KEEP: ""}, True),
        ({KEEP: "yes"}, True),
        ({KEEP: "false"}, False),
        ({KEEP: "0"}, False),
        ({KEEP: "no"}, False),
        ({"other": "true"}, False),
        ({}, False),
        (None, False),
    ],
)
def test_is_kept(labels, kept):
    assert policy.is_kept(labels, KEEP) is kept


def container(
    cid: str,
    status: str = "exited",
    finished_ago: float = 3600,
    labels: dict | None = None,
    restart: str = "no",
    image: str = "sha256:img",
    size_rw: int = 0,
    log_size: int = 0,
    log_type: str = "json-file",
) -> dict:
    return {
        "Id": cid,
        "Names": ["/" + cid],
        "State": {"Status": status, "Running": status == "running", "FinishedAt": ts(finished_ago)},
        "Created": ts(finished_ago + 60),
        "HostConfig": {"RestartPolicy": {"Name": restart}, "LogConfig": {"Type": log_type}},
        "Config": {"Labels": labels or {}},
        "Labels": labels or {},
        "ImageID": image,
        "SizeRw": size_rw,
        "LogSize": log_size,
        "LogPath": f"/var/lib/docker/containers/{cid}/{cid}-json.log",
    }


@pytest.mark.parametrize(
    ("spec", "reason_start"),
    [
        ({}, None),
        ({"labels": {KEEP: "true"}}, "keep label"),
        ({"restart": "always"}, "restart policy always"),
        ({"restart": "unless-stopped"}, "restart policy unless-stopped"),
        ({"restart": "on-failure"}, "restart policy on-failure"),
        ({"labels": {"com.docker.compose.project": "shop"}}, "part of Compose project shop"),
    ],
)
def test_container_keep_reason(spec, reason_start):
    reason = policy.container_keep_reason(container("c1", **spec), KEEP)
    if reason_start is None:
        assert reason is None
    else:
        assert reason.startswith(reason_start)


def test_stopped_containers_oldest_first_and_wanted_ones_spared():
    containers = [
        container("young", finished_ago=60, size_rw=10, log_size=5),
        container("old", finished_ago=7200, size_rw=100),
        container("middle", finished_ago=3600),
        container("running", status="running"),
        container("paused", status="paused"),
        container("created", status="created", finished_ago=5000),
        container("dead", status="dead", finished_ago=4000),
        container("service", restart="always", finished_ago=9000),
        container("kept", labels={KEEP: "1"}, finished_ago=9000),
    ]
    candidates, spared = policy.plan_stopped_containers(containers, KEEP, min_age=0, now=NOW)
    assert [c["name"] for c in candidates] == ["old", "created", "dead", "middle", "young"]
    assert candidates[0]["estimated_bytes"] == 100
    assert candidates[-1]["estimated_bytes"] == 15
    assert sorted(s["name"] for s in spared) == ["kept", "service"]


def test_stopped_containers_min_age_spares_recent_exits():
    containers = [container("recent", finished_ago=30), container("older", finished_ago=120)]
    candidates, spared = policy.plan_stopped_containers(containers, KEEP, min_age=60, now=NOW)
    assert [c["name"] for c in candidates] == ["older"]
    assert [s["name"] for s in spared] == ["recent"]


def image(
    iid: str,
    tags: list[str] | None = None,
    created_ago: float = 3600,
    size: int = 100,
    shared: int = 0,
    labels: dict | None = None,
    parent: str = "",
) -> dict:
    return {
        "Id": iid,
        "RepoTags": tags,
        "Created": int(NOW - created_ago),
        "Size": size,
        "SharedSize": shared,
        "Labels": labels,
        "ParentId": parent,
    }


IMAGES = [
    image("base", ["base:1"], created_ago=90000, size=10, shared=10),
    image("app-old", ["app:1"], created_ago=80000, size=60, shared=10),
    image("app-run", ["app:2"], created_ago=70000, size=60, shared=10),
    image("app-stopped", ["app:3"], created_ago=60000, size=60, shared=10),
    image("kept", ["tool:1"], created_ago=95000, size=500, labels={KEEP: "true"}),
    image("tagless-1", None, created_ago=50000, size=40),
    image("tagless-2", ["<none>:<none>"], created_ago=55000, size=30),
    image("tagless-used", ["<none>:<none>"], created_ago=56000, size=30),
    image("fresh", ["app:4"], created_ago=10, size=60, shared=10),
    image("classic-child", ["ci:latest"], created_ago=40000, size=70, shared=0, parent="intermediate"),
    image("classic-base", ["ci-base:1"], created_ago=41000, size=20, shared=0),
]
PARENTS = {
    "intermediate": "classic-base",
    "classic-child": "intermediate",
    "app-run": "",
    "base": "",
}
CONTAINERS = [
    container("web", status="running", image="app-run"),
    container("job", status="exited", image="app-stopped"),
    container("old-job", status="exited", image="tagless-used"),
]


@pytest.mark.parametrize(
    ("image_id", "reason_fragment"),
    [
        ("app-run", "used by container web"),
        ("app-stopped", "used by container job"),
        ("tagless-used", "used by container old-job"),
        ("kept", "keep label"),
        ("classic-base", "parent of another image"),
        ("app-old", None),
        ("base", None),
        ("tagless-1", None),
    ],
)
def test_protected_images(image_id, reason_fragment):
    reasons = policy.protected_images(IMAGES, CONTAINERS, PARENTS, KEEP)
    if reason_fragment is None:
        assert image_id not in reasons
    else:
        assert reason_fragment in reasons[image_id]


def test_parents_of_used_images_are_protected():
    parents = {"child": "mid", "mid": "root"}
    images = [image("child", ["c:1"]), image("root", ["r:1"])]
    reasons = policy.protected_images(images, [container("x", status="running", image="child")], parents, KEEP)
    assert reasons["root"].startswith("parent of")
    assert reasons["mid"].startswith("parent of")


def test_dangling_tier_takes_only_tagless_unused_images_oldest_first():
    candidates, spared = policy.plan_images(IMAGES, CONTAINERS, PARENTS, KEEP, dangling=True, min_age=0, now=NOW)
    assert [c["id"] for c in candidates] == ["tagless-2", "tagless-1"]
    assert [c["estimated_bytes"] for c in candidates] == [30, 40]
    assert [s["id"] for s in spared] == ["tagless-used"]


def test_unused_tier_takes_tagged_unused_images_oldest_first_and_spares_the_rest():
    candidates, spared = policy.plan_images(IMAGES, CONTAINERS, PARENTS, KEEP, dangling=False, min_age=0, now=NOW)
    assert [c["id"] for c in candidates] == ["app-old", "classic-child", "fresh"]
    assert candidates[0]["estimated_bytes"] == 50
    assert candidates[0]["tags"] == ["app:1"]
    reasons = {s["id"]: s["reason"] for s in spared}
    assert set(reasons) == {"base", "app-run", "app-stopped", "kept", "classic-base"}
    assert "frees nothing" in reasons["base"]


def test_unused_tier_min_age_spares_fresh_images():
    candidates, spared = policy.plan_images(IMAGES, CONTAINERS, PARENTS, KEEP, dangling=False, min_age=600, now=NOW)
    assert "fresh" not in [c["id"] for c in candidates]
    assert "created less than" in {s["id"]: s["reason"] for s in spared}["fresh"]


def test_images_of_removed_containers_become_candidates():
    remaining = [c for c in CONTAINERS if c["Id"] != "job"]
    candidates = policy.plan_images(IMAGES, remaining, PARENTS, KEEP, dangling=False, min_age=0, now=NOW)[0]
    assert "app-stopped" in [c["id"] for c in candidates]


@pytest.mark.parametrize(
    ("record", "min_age", "estimated"),
    [
        ({"ID": "a", "InUse": False, "Shared": False, "Size": 500, "LastUsedAt": ts(7200)}, 0, 500),
        ({"ID": "b", "InUse": True, "Shared": False, "Size": 500, "LastUsedAt": ts(7200)}, 0, None),
        ({"ID": "c", "InUse": False, "Shared": True, "Size": 500, "LastUsedAt": ts(7200)}, 0, 0),
        ({"ID": "d", "InUse": False, "Shared": False, "Size": 500, "LastUsedAt": ts(30)}, 60, None),
        ({"ID": "e", "InUse": False, "Shared": False, "Size": 500, "LastUsedAt": ts(120)}, 60, 500),
        ({"ID": "f", "InUse": False, "Shared": False, "Size": 9, "LastUsedAt": None, "CreatedAt": ts(120)}, 60, 9),
    ],
)
def test_plan_build_cache(record, min_age, estimated):
    candidates = policy.plan_build_cache([record], min_age, NOW)
    if estimated is None:
        assert candidates == []
    else:
        assert [c["estimated_bytes"] for c in candidates] == [estimated]


def test_container_logs_only_big_json_file_logs_of_running_unkept_containers_largest_first():
    containers = [
        container("big", status="running", log_size=900 * MIB),
        container("bigger", status="running", log_size=1200 * MIB),
        container("small", status="running", log_size=10 * MIB),
        container("stopped", status="exited", log_size=900 * MIB),
        container("journald", status="running", log_size=900 * MIB, log_type="journald"),
        container("kept", status="running", log_size=900 * MIB, labels={KEEP: "true"}),
    ]
    candidates, spared = policy.plan_container_logs(containers, KEEP, max_size=100 * MIB, keep_tail=MIB)
    assert [c["name"] for c in candidates] == ["bigger", "big"]
    assert candidates[1]["estimated_bytes"] == 899 * MIB
    assert [s["name"] for s in spared] == ["kept"]


@pytest.mark.parametrize(
    ("wanted", "cut"),
    [
        ([], ["bigger", "big"]),  # no filter: every big log
        (["big"], ["big"]),
        (["/bigger"], ["bigger"]),  # a name as the engine writes it
        (["nobody"], []),
        (["bi"], []),  # a name is matched whole, never as a prefix
    ],
)
def test_container_logs_are_cut_only_for_the_containers_named(wanted, cut):
    state = SimpleNamespace(containers=[
        container("big", status="running", log_size=900 * MIB),
        container("bigger", status="running", log_size=1200 * MIB),
    ])
    reclaimer = policy.Reclaimer(api=None, data_root="/", tiers=["container_logs"], keep_label=KEEP,
                                 containers=wanted, clock=lambda: NOW)
    candidates, _spared = reclaimer.plan_tier("container_logs", state)
    assert [c["name"] for c in candidates] == cut


def test_a_container_is_matched_by_a_prefix_of_its_id_of_12_characters_or_more():
    box = dict(container("big", status="running", log_size=900 * MIB), Id="0123456789abcdef" * 4)
    assert policy.matches_container(box, [box["Id"][:12]])
    assert not policy.matches_container(box, [box["Id"][:6]])


def test_plan_volumes_takes_unreferenced_unkept_volumes():
    volumes = [
        {"Name": "orphan", "Labels": None, "UsageData": {"RefCount": 0, "Size": 300}},
        {"Name": "in-use", "Labels": None, "UsageData": {"RefCount": 1, "Size": 300}},
        {"Name": "kept", "Labels": {KEEP: "true"}, "UsageData": {"RefCount": 0, "Size": 300}},
        {"Name": "unknown-size", "Labels": {}, "UsageData": {"RefCount": 0, "Size": -1}},
    ]
    candidates, spared = policy.plan_volumes(volumes, KEEP)
    assert [(c["name"], c["estimated_bytes"]) for c in candidates] == [("orphan", 300), ("unknown-size", 0)]
    assert [s["name"] for s in spared] == ["kept"]


@pytest.mark.parametrize(
    ("tiers", "volumes", "expected"),
    [
        (list(policy.DEFAULT_TIERS), False, list(policy.DEFAULT_TIERS)),
        (["container_logs", "build_cache"], False, ["build_cache", "container_logs"]),
        (["volumes", "build_cache"], False, ["build_cache"]),
        (["build_cache"], True, ["build_cache", "volumes"]),
        ([], False, []),
    ],
)
def test_select_tiers_keeps_the_canonical_order_and_volumes_opt_in(tiers, volumes, expected):
    assert policy.select_tiers(tiers, volumes) == expected


def test_select_tiers_refuses_unknown_tiers():
    with pytest.raises(policy.PolicyError, match="networks"):
        policy.select_tiers(["networks"], False)


# --- tier planning: stop as soon as the target is met -------------------------------------------------------
def estimate(free: int, target: int | None, tiers: list[str]) -> tuple[list[dict], int]:
    state = SimpleNamespace(
        images=IMAGES,
        containers=CONTAINERS,
        parents=PARENTS,
        volumes=[],
        build_cache=[{"ID": "cache", "InUse": False, "Shared": False, "Size": 1000, "LastUsedAt": ts(7200)}],
    )
    reclaimer = policy.Reclaimer(
        api=None, data_root="/", tiers=tiers, keep_label=KEEP, measure=lambda _path: (free, 10_000), clock=lambda: NOW
    )
    return reclaimer.estimate(state, target)


@pytest.mark.parametrize(
    ("free", "target", "would_run"),
    [
        # Build cache alone (1000) is enough.
        (0, 900, ["build_cache"]),
        # Cache (1000) + the stopped containers (0 bytes each) + dangling images (30 + 40).
        (0, 1050, ["build_cache", "stopped_containers", "dangling_images"]),
        # Everything is needed and still not enough.
        (0, 9000, ["build_cache", "stopped_containers", "dangling_images", "unused_images"]),
        # Already met: nothing runs.
        (5000, 4000, []),
        # No target (the timer): every tier with candidates runs.
        (0, None, ["build_cache", "stopped_containers", "dangling_images", "unused_images"]),
    ],
)
def test_estimate_stops_at_the_first_tier_that_meets_the_target(free, target, would_run):
    report, _free_after = estimate(free, target, list(policy.DEFAULT_TIERS))
    assert [t["tier"] for t in report if t["would_run"]] == would_run
    assert [t["tier"] for t in report] == list(policy.DEFAULT_TIERS)


def test_estimate_counts_images_freed_by_removing_their_stopped_containers():
    report, free_after = estimate(0, 9000, list(policy.DEFAULT_TIERS))
    unused = next(t for t in report if t["tier"] == "unused_images")
    assert "app:3 (app-stopped)" in unused["would_remove"]
    # cache 1000; dangling 30 + 30 + 40 (tagless-used too, once old-job is gone); unused 50 + 50 + 70 + 50.
    assert free_after == 1000 + 100 + 220


@pytest.mark.parametrize(
    ("target", "dangling_removed"),
    [
        (1025, ["tagless-used"]),
        (1031, ["tagless-used", "tagless-2"]),
        (1061, ["tagless-used", "tagless-2", "tagless-1"]),
    ],
)
def test_estimate_stops_inside_a_tier(target, dangling_removed):
    # The stopped containers go first, so the image old-job used becomes dangling-and-unused.
    report = estimate(0, target, list(policy.DEFAULT_TIERS))[0]
    dangling = next(t for t in report if t["tier"] == "dangling_images")
    assert dangling["would_remove"] == dangling_removed


# --- log truncation on real files ---------------------------------------------------------------------------
def write_log(path: Path, lines: int) -> bytes:
    data = b"".join(b'{"log":"line %06d\\n","stream":"stdout"}\n' % i for i in range(lines))
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("keep_tail", [0, 100, 1000, 10**9])
def test_truncate_keep_tail_keeps_whole_last_lines(tmp_path, keep_tail):
    log = tmp_path / "c-json.log"
    data = write_log(log, 500)
    before, after = policy.truncate_keep_tail(str(log), keep_tail)
    kept = log.read_bytes()
    assert before == len(data)
    assert after == len(kept)
    assert len(kept) <= max(keep_tail, 0) or keep_tail >= len(data)
    assert data.endswith(kept)
    assert kept == b"" or (kept.startswith(b'{"log"') and kept.endswith(b"\n"))


def test_truncate_keeps_a_writer_with_o_append_writing_at_the_new_end(tmp_path):
    log = tmp_path / "c-json.log"
    write_log(log, 2000)
    fd = os.open(str(log), os.O_WRONLY | os.O_APPEND)
    try:
        policy.truncate_keep_tail(str(log), 200)
        size_after_truncate = log.stat().st_size
        os.write(fd, b'{"log":"after\\n"}\n')
    finally:
        os.close(fd)
    content = log.read_bytes()
    assert len(content) == size_after_truncate + len(b'{"log":"after\\n"}\n')
    assert b"\0" not in content
    assert content.endswith(b'{"log":"after\\n"}\n')


def test_truncate_a_missing_log_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        policy.truncate_keep_tail(str(tmp_path / "gone.log"), 0)


# --- one run at a time ---------------------------------------------------------------------------------------
def test_lock_is_exclusive_and_released_on_close(tmp_path):
    path = str(tmp_path / "lock" / "prune.lock")
    first = policy.acquire_lock(path)
    assert first is not None
    assert policy.acquire_lock(path, wait_seconds=0) is None
    started = time.monotonic()
    assert policy.acquire_lock(path, wait_seconds=1) is None
    assert time.monotonic() - started >= 1
    first.close()
    second = policy.acquire_lock(path)
    assert second is not None
    second.close()


def test_lock_waits_for_the_holder_to_finish(tmp_path):
    path = str(tmp_path / "prune.lock")
    holder = policy.acquire_lock(path)
    threading.Timer(0.5, holder.close).start()
    waiter = policy.acquire_lock(path, wait_seconds=5)
    assert waiter is not None
    waiter.close()


# --- metrics --------------------------------------------------------------------------------------------------
def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_render_metrics_for_a_run():
    run = {
        "timestamp": 1_800_000_123,
        "success": True,
        "last_success_timestamp": 1_800_000_123,
        "skipped": False,
        "duration": 2.5,
        "free_bytes": 5 * GIB,
        "size_bytes": 10 * GIB,
        "tiers": {
            "build_cache": {"reclaimed_bytes": 1024, "removed": 3, "failed": 0},
            "stopped_containers": {"reclaimed_bytes": 0, "removed": 0, "failed": 1},
        },
    }
    text = policy.render_metrics(run)
    samples = parse_metrics(text)
    assert samples["docker_prune_last_run_timestamp_seconds"] == 1_800_000_123
    assert samples["docker_prune_last_run_success"] == 1
    assert samples["docker_prune_last_run_duration_seconds"] == 2.5
    assert samples['docker_prune_reclaimed_bytes{kind="build_cache"}'] == 1024
    assert samples['docker_prune_removed_objects{kind="build_cache"}'] == 3
    assert samples['docker_prune_failed_objects{kind="stopped_containers"}'] == 1
    assert samples['docker_prune_last_run_skipped{reason="none"}'] == 0
    assert samples["docker_prune_filesystem_free_bytes"] == 5 * GIB
    # Every sample has HELP and TYPE lines.
    names = {name.split("{")[0] for name in samples}
    for name in names:
        assert f"# TYPE {name} gauge" in text
        assert f"# HELP {name} " in text


def test_render_metrics_for_a_skipped_run():
    run = {"timestamp": 5, "success": True, "skipped": True, "skip_reason": "window backup", "tiers": {}}
    samples = parse_metrics(policy.render_metrics(run))
    assert samples['docker_prune_last_run_skipped{reason="window backup"}'] == 1
    assert "docker_prune_filesystem_free_bytes" not in samples


def test_write_atomically_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "docker_prune.prom"
    target.write_text("old\n")
    policy.write_atomically(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docker_prune.prom"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


# --- never plan on a partial view ----------------------------------------------------------------------------
class PartialEngine:
    """An engine whose answers disagree with each other: a fault that cannot be produced on a real engine at will."""

    error_class = RuntimeError

    def __init__(self, containers: list, images: list, counts: dict) -> None:
        self._containers = containers
        self._images = images
        self._counts = counts

    def system_df(self) -> dict:
        return {"Images": self._images, "Containers": [], "BuildCache": [], "Volumes": []}

    def containers(self, all: bool = True) -> list:
        return self._containers

    def info(self) -> dict:
        return self._counts

    def images(self, all: bool = False) -> list:
        return self._images


@pytest.mark.parametrize(
    ("containers", "images", "counts", "fragment"),
    [
        ([], [image("a", ["a:1"])], {"Containers": 3, "Images": 1}, "listed no containers but counts 3"),
        ([], [], {"Containers": 0, "Images": 5}, "lists no images but it counts 5"),
    ],
)
def test_engine_state_refuses_a_partial_view(containers, images, counts, fragment):
    with pytest.raises(policy.PolicyError, match=fragment):
        policy.EngineState(PartialEngine(containers, images, counts))


def test_engine_state_accepts_an_empty_engine():
    state = policy.EngineState(PartialEngine([], [], {"Containers": 0, "Images": 0}))
    assert state.containers == [] and state.images == []


class EngineError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class RacingEngine(PartialEngine):
    """Lists containers, then answers their inspect with the given HTTP status (200 = the document)."""

    error_class = EngineError

    def __init__(self, statuses: dict[str, int]) -> None:
        listed = [{"Id": cid, "Names": [f"/{cid}"]} for cid in statuses]
        super().__init__(listed, [image("a", ["a:1"])], {"Containers": len(listed), "Images": 1})
        self._statuses = statuses

    def inspect_container(self, container_id: str) -> dict:
        status = self._statuses[container_id]
        if status != 200:
            raise EngineError(status)
        return {"Id": container_id, "Image": "sha256:a", "State": {"Status": "running", "Running": True}}


def test_engine_state_skips_a_container_removed_between_list_and_inspect():
    # A CI job run with --rm can finish between the two calls: gone, it protects nothing and is not a partial view.
    state = policy.EngineState(RacingEngine({"web": 200, "job-41": 404}))
    assert [c["Id"] for c in state.containers] == ["web"]


@pytest.mark.parametrize("status", [500, 409])
def test_engine_state_refuses_when_an_inspect_fails_otherwise(status):
    with pytest.raises(EngineError):
        policy.EngineState(RacingEngine({"web": 200, "db": status}))
