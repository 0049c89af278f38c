# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# The storage-driver compatibility table: which Docker storage driver a host can carry, given the facts
# docker_host_info gathers (virtualization, kernel, backing filesystem of the data root, /dev/fuse, the
# driver in use and what it holds). Kept in one place so the module, the role and the tests read one table.
# Pure functions, no Ansible imports.

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable, Iterable
from typing import Any

SUPPORTED = "supported"
RISKY = "risky"
UNSUPPORTED = "unsupported"
VERDICTS = (SUPPORTED, RISKY, UNSUPPORTED)  # in order of severity

KNOWN_DRIVERS = ("overlay2", "fuse-overlayfs", "btrfs", "zfs", "vfs")
# Removed from Docker Engine: aufs and legacy overlay in 24.0, devicemapper in 25.0.
REMOVED_DRIVERS = ("aufs", "overlay", "devicemapper")

# Filesystems Docker documents as a backing filesystem for overlay2 (select-storage-driver.md).
OVERLAY2_FILESYSTEMS = ("ext4", "xfs")

Rule = namedtuple("Rule", ["rule_id", "drivers", "verdict", "applies", "reason"])


def version_tuple(text: object) -> tuple[int, ...] | None:
    """'6.1.0-18-amd64' -> (6, 1, 0); '2.2.0-pve1' -> (2, 2, 0); None or garbage -> None."""
    if not text:
        return None
    match = re.match(r"^\D*?(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text).strip())
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def _get(facts: dict[str, Any], *path: str) -> Any:
    value: Any = facts
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _container(facts: dict[str, Any]) -> Any:
    return _get(facts, "virtualization", "container")


def _fs(facts: dict[str, Any]) -> Any:
    return _get(facts, "data_root", "filesystem")


def _zfs_version(facts: dict[str, Any]) -> tuple[int, ...] | None:
    return version_tuple(_get(facts, "data_root", "zfs_version") or _get(facts, "zfs", "version"))


def _kernel(facts: dict[str, Any]) -> tuple[int, ...] | None:
    return version_tuple(_get(facts, "kernel", "release"))


def _in_lxc(facts: dict[str, Any]) -> bool:
    return _container(facts) in ("lxc", "lxc-libvirt")


def _on_zfs(facts: dict[str, Any]) -> bool:
    return _fs(facts) == "zfs"


def _fs_unknown(facts: dict[str, Any]) -> bool:
    return not _fs(facts)


def _overlay2_zfs_old(facts: dict[str, Any]) -> bool:
    version = _zfs_version(facts)
    return _on_zfs(facts) and (version is None or version < (2, 2, 0))


def _overlay2_zfs_new(facts: dict[str, Any]) -> bool:
    version = _zfs_version(facts)
    return _on_zfs(facts) and version is not None and version >= (2, 2, 0)


def _xfs_ftype(facts: dict[str, Any], wanted: int | None) -> bool:
    return _fs(facts) == "xfs" and _get(facts, "data_root", "xfs_ftype") == wanted


def _overlay2_btrfs_old_kernel(facts: dict[str, Any]) -> bool:
    kernel = _kernel(facts)
    return _fs(facts) == "btrfs" and (kernel is None or kernel < (5, 19, 0))


def _overlay2_other_fs(facts: dict[str, Any]) -> bool:
    return _fs(facts) not in (None, "", "ext4", "xfs", "zfs", "btrfs", "overlay", "tmpfs", "fuse.fuse-overlayfs")


def _kernel_below(major: int, minor: int) -> Callable[[dict[str, Any]], bool]:
    def check(facts: dict[str, Any]) -> bool:
        kernel = _kernel(facts)
        return kernel is not None and kernel < (major, minor, 0)

    return check


def _no_dev_fuse(facts: dict[str, Any]) -> bool:
    return _get(facts, "fuse", "dev_fuse") is False


def _no_fuse_binary(facts: dict[str, Any]) -> bool:
    return isinstance(_get(facts, "fuse"), dict) and not _get(facts, "fuse", "fuse_overlayfs")


def _no_dev_zfs(facts: dict[str, Any]) -> bool:
    return _on_zfs(facts) and _get(facts, "zfs", "dev_zfs") is False


def _containerd_store(facts: dict[str, Any]) -> bool:
    return bool(_get(facts, "docker", "containerd_image_store"))


def _docker_unreachable(facts: dict[str, Any]) -> bool:
    return _get(facts, "docker", "reachable") is False


def _always(_facts: dict[str, Any]) -> bool:
    return True


def _backing_is(name: str) -> Callable[[dict[str, Any]], bool]:
    def check(facts: dict[str, Any]) -> bool:
        return _fs(facts) == name

    return check


def _backing_is_not(name: str) -> Callable[[dict[str, Any]], bool]:
    def check(facts: dict[str, Any]) -> bool:
        return _fs(facts) not in (None, "", name)

    return check


ALL = KNOWN_DRIVERS

# The table. Each row: id, drivers it applies to, verdict when it applies, condition on the facts, reason.
# The verdict of an assessment is the most severe verdict of the rows that apply.
RULES = (
    # The incident: fuse-overlayfs in LXC containers on Proxmox with ZFS underneath crashed days later,
    # and Proxmox could neither snapshot, clone nor reboot the containers.
    Rule("fuse_overlayfs_lxc_zfs", ("fuse-overlayfs",), UNSUPPORTED,
         lambda f: _in_lxc(f) and _on_zfs(f),
         "fuse-overlayfs inside an LXC container on ZFS is the combination of the storage-driver incident: "
         "containers crashed after days and Proxmox could no longer snapshot, clone or reboot them"),
    Rule("fuse_overlayfs_lxc", ("fuse-overlayfs",), RISKY, _in_lxc,
         "fuse-overlayfs inside an LXC container: Proxmox documents that fuse and the freezer cgroup can "
         "deadlock I/O, so snapshots, backups and replication of the container hang"),
    Rule("fuse_overlayfs_no_dev_fuse", ("fuse-overlayfs",), UNSUPPORTED, _no_dev_fuse,
         "/dev/fuse does not exist on this host (in LXC it needs the fuse=1 feature), so fuse-overlayfs cannot mount"),
    Rule("fuse_overlayfs_no_binary", ("fuse-overlayfs",), UNSUPPORTED, _no_fuse_binary,
         "the fuse-overlayfs program is not installed, so dockerd cannot start with this driver"),
    Rule("fuse_overlayfs_new_kernel", ("fuse-overlayfs",), RISKY, lambda f: not _kernel_below(5, 11)(f),
         "fuse-overlayfs runs every file operation through a FUSE process in user space; Docker documents it "
         "for rootless Docker on kernels older than 5.11 only, and native overlay2 is the faster choice here"),
    Rule("overlay2_zfs_before_2_2", ("overlay2",), UNSUPPORTED, _overlay2_zfs_old,
         "overlay2 on ZFS before OpenZFS 2.2: ZFS lacks RENAME_WHITEOUT, dockerd may start but image layers "
         "fail to apply (moby#45884, moby#46337)"),
    Rule("overlay2_zfs_2_2", ("overlay2",), RISKY, _overlay2_zfs_new,
         "overlay2 on ZFS works since OpenZFS 2.2 but is not a backing filesystem Docker supports for overlay2"),
    Rule("overlay2_xfs_ftype0", ("overlay2",), UNSUPPORTED, lambda f: _xfs_ftype(f, 0),
         "overlay2 on xfs formatted with ftype=0 (no d_type): Docker refuses it; reformat with mkfs.xfs -n ftype=1"),
    Rule("overlay2_xfs_ftype_unknown", ("overlay2",), RISKY, lambda f: _xfs_ftype(f, None),
         "the data root is on xfs and its ftype could not be read (xfs_info missing?): overlay2 needs ftype=1"),
    Rule("overlay2_on_overlay", ("overlay2",), UNSUPPORTED, _backing_is("overlay"),
         "the data root is itself on overlayfs: the kernel refuses overlay on overlay; give it its own volume"),
    Rule("overlay2_btrfs_old_kernel", ("overlay2",), UNSUPPORTED, _overlay2_btrfs_old_kernel,
         "overlay2 on btrfs needs Linux 5.19 or later; use the btrfs driver or another filesystem"),
    Rule("overlay2_other_fs", ("overlay2",), RISKY, _overlay2_other_fs,
         "overlay2 is supported by Docker on ext4 and xfs (ftype=1) only; this backing filesystem is neither"),
    Rule("overlay2_old_kernel", ("overlay2",), UNSUPPORTED, _kernel_below(4, 0),
         "overlay2 needs Linux 4.0 or later"),
    Rule("vfs_copies_layers", ("vfs",), RISKY, _always,
         "vfs has no copy-on-write: every layer and every container is a full copy, so disk use grows many "
         "times (22 GB instead of 3 GB reported on Proxmox LXC) and pulls and starts are slow"),
    Rule("zfs_needs_zfs", ("zfs",), UNSUPPORTED, _backing_is_not("zfs"),
         "the zfs driver needs the data root on a ZFS dataset; dockerd will not start on this filesystem"),
    Rule("zfs_no_dev_zfs", ("zfs",), UNSUPPORTED, _no_dev_zfs,
         "/dev/zfs is not available (typical inside a container), so the zfs driver cannot manage datasets"),
    Rule("btrfs_needs_btrfs", ("btrfs",), UNSUPPORTED, _backing_is_not("btrfs"),
         "the btrfs driver needs the data root on btrfs; dockerd will not start on this filesystem"),
    Rule("data_root_tmpfs", ALL, RISKY, _backing_is("tmpfs"),
         "the data root is on tmpfs: every image and container is lost at reboot and they use memory"),
    Rule("backing_fs_unknown", ALL, RISKY, _fs_unknown,
         "the backing filesystem of the data root could not be determined, so compatibility is not proven"),
    Rule("containerd_image_store", ALL, RISKY, _containerd_store,
         "Docker uses the containerd image store: storage-driver selects a snapshotter there, and images of "
         "the other store are hidden"),
    Rule("docker_unreachable", ALL, RISKY, _docker_unreachable,
         "Docker did not answer, so the driver in use and the images and containers it holds are unknown"),
)


def worst(verdicts: Iterable[str]) -> str:
    """The most severe verdict of a collection; supported when it is empty."""
    rank = max([VERDICTS.index(v) for v in verdicts] or [0])
    return VERDICTS[rank]


def findings(driver: str, facts: dict[str, Any]) -> list[dict[str, str]]:
    """Every table row that applies to the driver on this host, in table order."""
    if driver in REMOVED_DRIVERS:
        return [dict(rule="removed_driver", verdict=UNSUPPORTED,
                     reason="the %s storage driver was removed from Docker Engine (aufs and overlay in 24.0, "
                            "devicemapper in 25.0)" % driver)]
    if driver not in KNOWN_DRIVERS:
        return [dict(rule="unknown_driver", verdict=UNSUPPORTED,
                     reason="%r is not a storage driver this table knows (%s)" % (driver, ", ".join(KNOWN_DRIVERS)))]
    return [
        dict(rule=rule.rule_id, verdict=rule.verdict, reason=rule.reason)
        for rule in RULES
        if driver in rule.drivers and rule.applies(facts)
    ]


def hidden_data(driver: str, facts: dict[str, Any]) -> dict[str, Any] | None:
    """What a switch to `driver` hides from Docker: the old driver's images and containers, or None."""
    current = _get(facts, "docker", "storage_driver")
    if not current or current == driver:
        return None
    images = _get(facts, "docker", "images") or 0
    containers = _get(facts, "docker", "containers") or 0
    if not images and not containers:
        return None
    data_root = _get(facts, "data_root", "path") or "/var/lib/docker"
    return dict(driver=current, images=images, containers=containers, path="%s/%s" % (data_root, current))


def hidden_data_reason(hidden: dict[str, Any], driver: str) -> str:
    return (
        "switching from %s to %s hides %d image(s) and %d container(s) from Docker; they are not deleted and "
        "still use disk under %s, and they come back only if %s is selected again"
        % (hidden["driver"], driver, hidden["images"], hidden["containers"], hidden["path"], hidden["driver"])
    )


# The refusal names the docker_storage_driver role's variables: the role is how an operator meets it.
ALLOW_RISKY_FLAG = "docker_storage_driver_allow_risky"
ACCEPT_HIDDEN_FLAG = "docker_storage_driver_accept_hidden_data"


def cited(found: Iterable[dict[str, str]], verdict: str) -> str:
    """The reasons of one verdict, each followed by its table row: 'reason [rule]; reason [rule]'."""
    return "; ".join("%s [%s]" % (item["reason"], item["rule"]) for item in found if item["verdict"] == verdict)


def refusal(driver: str, found: list[dict[str, str]], hidden: dict[str, Any] | None, allow_risky: bool = False,
            accept_hidden_data: bool = False) -> list[str]:
    """Why a switch to `driver` must not go ahead, one sentence per cause; an empty list lets it go ahead.

    unsupported is always refused (any risky rows are quoted with it); risky unless allowed; hiding the old
    driver's images and containers unless accepted.
    """
    verdict = worst(item["verdict"] for item in found)
    unsupported, risky = cited(found, UNSUPPORTED), cited(found, RISKY)
    sentences = []
    if verdict == UNSUPPORTED:
        sentences.append("Verdict unsupported: %s%s" % (unsupported, " (also risky: %s)" % risky if risky else ""))
    elif verdict == RISKY and not allow_risky:
        sentences.append("Verdict risky (%s: true accepts it): %s" % (ALLOW_RISKY_FLAG, risky))
    if hidden and not accept_hidden_data:
        sentences.append("Existing data would be hidden (%s: true accepts it): %s"
                         % (ACCEPT_HIDDEN_FLAG, hidden_data_reason(hidden, driver)))
    return sentences


def assess(driver: str, facts: dict[str, Any], allow_risky: bool = False, accept_hidden_data: bool = False,
           ) -> dict[str, Any]:
    """The assessment docker_host_info returns for assess_storage_driver=driver, with the refusal decision."""
    found = findings(driver, facts)
    hidden = hidden_data(driver, facts)
    reasons = [item["reason"] for item in found]
    if hidden:
        reasons.append(hidden_data_reason(hidden, driver))
    current = _get(facts, "docker", "storage_driver")
    refused = refusal(driver, found, hidden, allow_risky, accept_hidden_data)
    return dict(
        driver=driver,
        current_driver=current,
        change=current != driver,
        verdict=worst(item["verdict"] for item in found),
        reasons=reasons,
        findings=found,
        hides_data=hidden,
        refused=bool(refused),
        refusal=refused,
    )
