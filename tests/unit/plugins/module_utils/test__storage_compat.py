"""The storage-driver compatibility table, as a specification: host facts + driver -> verdict and rules."""

from __future__ import annotations

import pytest
from ansible_collections.postmortem.remediation.plugins.module_utils import _storage_compat as sc


def host(
    container: str | None = None,
    fs: str | None = "ext4",
    zfs: str | None = None,
    ftype: int | None = None,
    kernel: str = "6.1.0-18-amd64",
    dev_fuse: bool = True,
    fuse_binary: str | None = "/usr/bin/fuse-overlayfs",
    dev_zfs: bool = False,
    driver: str | None = "overlay2",
    images: int = 0,
    containers: int = 0,
    containerd_store: bool = False,
    reachable: bool = True,
) -> dict:
    """Facts shaped like docker_host_info returns them, with only what the table reads."""
    return {
        "virtualization": {"type": "container" if container else "none", "container": container},
        "kernel": {"release": kernel},
        "data_root": {"path": "/var/lib/docker", "filesystem": fs, "xfs_ftype": ftype, "zfs_version": zfs},
        "docker": {
            "reachable": reachable,
            "storage_driver": driver if reachable else None,
            "images": images if reachable else None,
            "containers": containers if reachable else None,
            "containerd_image_store": containerd_store,
        },
        "fuse": {"dev_fuse": dev_fuse, "fuse_overlayfs": fuse_binary},
        "zfs": {"version": zfs, "dev_zfs": dev_zfs},
    }


S, R, U = sc.SUPPORTED, sc.RISKY, sc.UNSUPPORTED

TABLE = [
    # (case, driver, facts, verdict, rules that must apply)
    ("the incident: fuse-overlayfs in LXC on ZFS 2.1", "fuse-overlayfs",
     host(container="lxc", fs="zfs", zfs="2.1.11-pve1", driver="vfs"), U,
     {"fuse_overlayfs_lxc_zfs", "fuse_overlayfs_lxc"}),
    ("the incident on ZFS 2.2: still the incident", "fuse-overlayfs",
     host(container="lxc", fs="zfs", zfs="2.2.0-pve1", driver="vfs"), U, {"fuse_overlayfs_lxc_zfs"}),
    ("fuse-overlayfs in LXC on ext4: freezer deadlocks", "fuse-overlayfs", host(container="lxc"), R,
     {"fuse_overlayfs_lxc"}),
    ("fuse-overlayfs in LXC without /dev/fuse (the lab)", "fuse-overlayfs", host(container="lxc", dev_fuse=False), U,
     {"fuse_overlayfs_lxc", "fuse_overlayfs_no_dev_fuse"}),
    ("fuse-overlayfs without the program", "fuse-overlayfs", host(fuse_binary=None, kernel="5.4.0"), U,
     {"fuse_overlayfs_no_binary"}),
    ("fuse-overlayfs on an old kernel, bare metal", "fuse-overlayfs", host(kernel="5.4.0-150-generic"), S, set()),
    ("fuse-overlayfs on a kernel with native rootless overlay", "fuse-overlayfs", host(kernel="5.15.0"), R,
     {"fuse_overlayfs_new_kernel"}),
    ("overlay2 on ext4", "overlay2", host(), S, set()),
    ("overlay2 on xfs ftype=1", "overlay2", host(fs="xfs", ftype=1), S, set()),
    ("overlay2 on xfs ftype=0", "overlay2", host(fs="xfs", ftype=0), U, {"overlay2_xfs_ftype0"}),
    ("overlay2 on xfs, ftype unknown", "overlay2", host(fs="xfs", ftype=None), R, {"overlay2_xfs_ftype_unknown"}),
    ("overlay2 on ZFS 2.1", "overlay2", host(fs="zfs", zfs="2.1.14"), U, {"overlay2_zfs_before_2_2"}),
    ("overlay2 on ZFS, version unreadable", "overlay2", host(fs="zfs", zfs=None), U, {"overlay2_zfs_before_2_2"}),
    ("overlay2 on ZFS 2.2", "overlay2", host(fs="zfs", zfs="2.2.3-1"), R, {"overlay2_zfs_2_2"}),
    ("overlay2 on overlay (nested, no own volume)", "overlay2", host(fs="overlay"), U, {"overlay2_on_overlay"}),
    ("overlay2 on btrfs, kernel 5.15", "overlay2", host(fs="btrfs", kernel="5.15.0"), U,
     {"overlay2_btrfs_old_kernel"}),
    ("overlay2 on btrfs, kernel 6.1", "overlay2", host(fs="btrfs"), S, set()),
    ("overlay2 on an unlisted filesystem", "overlay2", host(fs="nfs4"), R, {"overlay2_other_fs"}),
    ("overlay2 on a 3.x kernel", "overlay2", host(kernel="3.10.0-1160.el7.x86_64"), U, {"overlay2_old_kernel"}),
    ("vfs anywhere copies every layer", "vfs", host(), R, {"vfs_copies_layers"}),
    ("vfs in LXC on ZFS: still only risky", "vfs", host(container="lxc", fs="zfs", zfs="2.1.11"), R,
     {"vfs_copies_layers"}),
    ("zfs driver on ext4 (the lab's real failure)", "zfs", host(), U, {"zfs_needs_zfs"}),
    ("zfs driver on ZFS with /dev/zfs", "zfs", host(fs="zfs", zfs="2.2.3", dev_zfs=True), S, set()),
    ("zfs driver on ZFS inside LXC, no /dev/zfs", "zfs", host(container="lxc", fs="zfs", zfs="2.2.3"), U,
     {"zfs_no_dev_zfs"}),
    ("btrfs driver on ext4", "btrfs", host(), U, {"btrfs_needs_btrfs"}),
    ("btrfs driver on btrfs", "btrfs", host(fs="btrfs"), S, set()),
    ("any driver with the data root on tmpfs", "overlay2", host(fs="tmpfs"), R, {"data_root_tmpfs"}),
    ("filesystem unknown", "overlay2", host(fs=None), R, {"backing_fs_unknown"}),
    ("containerd image store in use", "overlay2", host(containerd_store=True), R, {"containerd_image_store"}),
    ("docker not answering", "overlay2", host(reachable=False), R, {"docker_unreachable"}),
    ("removed driver", "devicemapper", host(), U, {"removed_driver"}),
    ("removed driver aufs", "aufs", host(), U, {"removed_driver"}),
    ("unknown driver", "overlay3", host(), U, {"unknown_driver"}),
]


@pytest.mark.parametrize(("case", "driver", "facts", "verdict", "rules"), TABLE, ids=[row[0] for row in TABLE])
def test_compatibility_table(case, driver, facts, verdict, rules):
    result = sc.assess(driver, facts)
    applied = {item["rule"] for item in result["findings"]}
    assert result["verdict"] == verdict, (case, result["findings"])
    assert rules <= applied, (case, applied)
    if verdict == S:
        assert applied == set() and result["reasons"] == []
    else:
        assert result["reasons"], "a verdict other than supported must say why"


def test_every_rule_of_the_table_is_exercised():
    exercised = set()
    for _case, driver, facts, _verdict, _rules in TABLE:
        exercised |= {item["rule"] for item in sc.findings(driver, facts)}
    assert {rule.rule_id for rule in sc.RULES} <= exercised


HIDDEN = [
    # (current driver, images, containers, target, hides)
    ("overlay2", 3, 2, "vfs", {"driver": "overlay2", "images": 3, "containers": 2,
                               "path": "/var/lib/docker/overlay2"}),
    ("vfs", 12, 0, "fuse-overlayfs", {"driver": "vfs", "images": 12, "containers": 0, "path": "/var/lib/docker/vfs"}),
    ("overlay2", 0, 0, "vfs", None),
    ("overlay2", 5, 5, "overlay2", None),
]


@pytest.mark.parametrize(("current", "images", "containers", "target", "hides"), HIDDEN)
def test_a_switch_reports_what_it_hides(current, images, containers, target, hides):
    result = sc.assess(target, host(driver=current, images=images, containers=containers))
    assert result["hides_data"] == hides
    assert result["change"] is (current != target)
    if hides:
        sentence = result["reasons"][-1]
        assert f"hides {images} image(s) and {containers} container(s)" in sentence
        assert "not deleted" in sentence


def test_hidden_data_does_not_change_the_verdict():
    assert sc.assess("overlay2", host(driver="vfs", images=40, containers=9))["verdict"] == S


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6.1.0-18-amd64", (6, 1, 0)),
        ("5.15.0-91-generic", (5, 15, 0)),
        ("2.2.0-pve1", (2, 2, 0)),
        ("zfs-2.1.11-1", (2, 1, 11)),
        ("4", (4, 0, 0)),
        ("", None),
        (None, None),
        ("unknown", None),
    ],
)
def test_version_tuple(text, expected):
    assert sc.version_tuple(text) == expected


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [([], S), ([S, S], S), ([S, R], R), ([R, U, S], U)],
)
def test_the_worst_verdict_wins(verdicts, expected):
    assert sc.worst(verdicts) == expected


# The refusal decision, for every row of the table and every combination of the role's two flags: unsupported is
# refused whatever the flags say and names each reason with its table row; risky only without allow_risky;
# supported never (hidden data is its own sentence, below). This replaced a Jinja loop that rendered None under
# ansible-core 2.19 whenever nothing was merely risky (zfs/btrfs on ext4, devicemapper, a typo), crashing the role.
FLAGS = [(False, False), (True, False), (False, True), (True, True)]
FLAG_IDS = ["strict", "allow-risky", "accept-hidden", "both"]


@pytest.mark.parametrize(("allow_risky", "accept_hidden"), FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize(("case", "driver", "facts", "verdict", "rules"), TABLE, ids=[row[0] for row in TABLE])
def test_refusal_for_every_row(case, driver, facts, verdict, rules, allow_risky, accept_hidden):
    result = sc.assess(driver, facts, allow_risky=allow_risky, accept_hidden_data=accept_hidden)
    refusal = result["refusal"]
    assert all(isinstance(sentence, str) and sentence for sentence in refusal), refusal
    assert result["refused"] is bool(refusal)
    by_verdict = {v: [f["rule"] for f in result["findings"] if f["verdict"] == v] for v in (U, R)}
    if verdict == U:
        assert result["refused"], case
        first = refusal[0]
        assert first.startswith("Verdict unsupported: "), first
        for rule in by_verdict[U]:
            assert f"[{rule}]" in first.split(" (also risky: ")[0], (rule, first)
        for rule in by_verdict[R]:
            assert f"[{rule}]" in first.split(" (also risky: ")[1], (rule, first)
        if not by_verdict[R]:
            assert "also risky" not in first
    elif verdict == R:
        assert result["refused"] is not allow_risky, case
        if not allow_risky:
            assert refusal[0].startswith("Verdict risky (docker_storage_driver_allow_risky: true accepts it): ")
            assert all(f"[{rule}]" in refusal[0] for rule in by_verdict[R])
    else:
        assert refusal == [] and not result["refused"], case


REFUSED_DRIVERS = [
    # (driver asked for on a plain ext4 host, the one sentence of the refusal)
    ("zfs", "Verdict unsupported: the zfs driver needs the data root on a ZFS dataset; dockerd will not start on "
            "this filesystem [zfs_needs_zfs]"),
    ("btrfs", "Verdict unsupported: the btrfs driver needs the data root on btrfs; dockerd will not start on this "
              "filesystem [btrfs_needs_btrfs]"),
    ("devicemapper", "Verdict unsupported: the devicemapper storage driver was removed from Docker Engine (aufs and "
                     "overlay in 24.0, devicemapper in 25.0) [removed_driver]"),
    ("overlay3", "Verdict unsupported: 'overlay3' is not a storage driver this table knows "
                 "(overlay2, fuse-overlayfs, btrfs, zfs, vfs) [unknown_driver]"),
]


@pytest.mark.parametrize(("driver", "sentence"), REFUSED_DRIVERS)
def test_unsupported_with_nothing_risky_is_refused_with_its_reason(driver, sentence):
    result = sc.assess(driver, host(), allow_risky=True, accept_hidden_data=True)
    assert result["refusal"] == [sentence]


@pytest.mark.parametrize(
    ("accept_hidden", "expected"),
    [
        (False, ["Existing data would be hidden (docker_storage_driver_accept_hidden_data: true accepts it): switching "
                 "from vfs to overlay2 hides 4 image(s) and 1 container(s) from Docker; they are not deleted and still "
                 "use disk under /var/lib/docker/vfs, and they come back only if vfs is selected again"]),
        (True, []),
    ],
)
def test_hiding_data_is_refused_unless_accepted(accept_hidden, expected):
    result = sc.assess("overlay2", host(driver="vfs", images=4, containers=1), accept_hidden_data=accept_hidden)
    assert result["verdict"] == S
    assert result["refusal"] == expected


def test_every_cause_is_its_own_sentence():
    result = sc.assess("vfs", host(images=2, containers=0))
    assert [sentence.split(" (")[0].split(":")[0] for sentence in result["refusal"]] == [
        "Verdict risky", "Existing data would be hidden"]
