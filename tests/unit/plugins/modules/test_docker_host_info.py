"""docker_host_info: the parsers as tables, then the module run for real on this machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from ansible_collections.postmortem.remediation.plugins.modules import docker_host_info as hf

PROC_MOUNTS = """\
overlay / overlay rw,relatime,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev,mode=755 0 0
/dev/vda /var/lib/docker ext4 rw,relatime,discard 0 0
rpool/data/subvol-101-disk-0 /var/lib/docker/zfs-pool zfs rw,xattr,posixacl 0 0
/dev/sdb1 /srv/docker\\040data xfs rw,relatime,attr2,inode64 0 0
/dev/sdc1 /var/lib/docker2 btrfs rw,relatime 0 0
tmpfs /var/lib/docker2/tmp tmpfs rw 0 0
/dev/vdb /mnt ext4 rw 0 0
/dev/vdc /mnt xfs rw 0 0
"""

MOUNT_FOR = [
    # (path, expected mount point, expected fstype)
    ("/var/lib/docker", "/var/lib/docker", "ext4"),
    ("/var/lib/docker/overlay2", "/var/lib/docker", "ext4"),
    ("/var/lib/docker/zfs-pool/x", "/var/lib/docker/zfs-pool", "zfs"),
    ("/srv/docker data", "/srv/docker data", "xfs"),
    ("/srv/docker data/volumes", "/srv/docker data", "xfs"),
    ("/var/lib/docker2", "/var/lib/docker2", "btrfs"),
    ("/var/lib/docker22", "/", "overlay"),
    ("/var/lib/dockerx", "/", "overlay"),
    ("/run/docker.sock", "/run", "tmpfs"),
    ("/mnt/a", "/mnt", "xfs"),  # a later mount on the same point shadows the earlier one
    ("/", "/", "overlay"),
]


@pytest.mark.parametrize(("path", "point", "fstype"), MOUNT_FOR)
def test_mount_for_finds_the_mount_that_holds_a_path(path, point, fstype):
    mount = hf.mount_for(path, hf.parse_mounts(PROC_MOUNTS))
    assert (mount["mount_point"], mount["fstype"]) == (point, fstype)


def test_parse_mounts_reads_fields_and_unescapes_octal():
    rows = hf.parse_mounts(PROC_MOUNTS + "short line\n")
    assert len(rows) == 10
    assert rows[4]["device"] == "rpool/data/subvol-101-disk-0"
    assert rows[5]["mount_point"] == "/srv/docker data"
    assert rows[3]["options"] == ["rw", "relatime", "discard"]


@pytest.mark.parametrize(
    ("fstype", "expected"),
    [("ext2/ext3", "ext4"), ("ext4", "ext4"), ("overlayfs", "overlay"), ("xfs", "xfs"), ("zfs", "zfs"),
     ("btrfs", "btrfs"), ("tmpfs", "tmpfs"), ("", None), (None, None)],
)
def test_normalize_fstype_names_statfs_magic_like_the_table(fstype, expected):
    assert hf.normalize_fstype(fstype) == expected


DETECT_VIRT = [
    # (rc, stdout, expected)
    (0, "lxc\n", "lxc"),
    (0, "docker\n", "docker"),
    (0, "kvm\n", "kvm"),
    (1, "none\n", None),
    (0, "lxc-libvirt", "lxc-libvirt"),
    (127, "", None),
    (1, "", None),
]


@pytest.mark.parametrize(("rc", "out", "expected"), DETECT_VIRT)
def test_parse_detect_virt(rc, out, expected):
    assert hf.parse_detect_virt(rc, out) == expected


def test_parse_environ_splits_on_nul_and_keeps_equals_in_values():
    data = b"PATH=/usr/bin:/bin\0container=lxc\0OPTS=a=b\0\0junk\0"
    assert hf.parse_environ(data) == {"PATH": "/usr/bin:/bin", "container": "lxc", "OPTS": "a=b"}


CLASSIFY = [
    # (detect container, detect vm, /run/systemd/container, PID 1 container=, /.dockerenv, type, technology)
    ("lxc", None, "lxc", "lxc", False, "container", "lxc"),
    ("lxc", "kvm", "lxc", "lxc", True, "container", "lxc"),  # the lab: LXC claimed, Docker underneath, in a VM
    (None, None, "lxc", None, False, "container", "lxc"),  # no systemd-detect-virt, systemd told PID 1
    (None, None, None, "lxc", False, "container", "lxc"),
    (None, None, None, None, True, "container", "docker"),
    (None, "kvm", None, None, False, "vm", "kvm"),
    (None, None, None, None, False, "none", "none"),
]


@pytest.mark.parametrize(("dc", "dv", "run", "env", "dockerenv", "kind", "tech"), CLASSIFY)
def test_classify_virtualization(dc, dv, run, env, dockerenv, kind, tech):
    result = hf.classify_virtualization(dc, dv, run, env, dockerenv)
    assert (result["type"], result["technology"]) == (kind, tech)
    assert result["sources"]["proc1_environ_container"] == env


XFS_INFO = """\
meta-data=/dev/sdb1              isize=512    agcount=4, agsize=655296 blks
         =                       sectsz=512   attr=2, projid32bit=1
data     =                       bsize=4096   blocks=2621184, imaxpct=25
naming   =version 2              bsize=4096   ascii-ci=0, ftype={ftype}
log      =internal log           bsize=4096   blocks=2560, version=2
"""


@pytest.mark.parametrize(("text", "expected"), [(XFS_INFO.format(ftype=1), 1), (XFS_INFO.format(ftype=0), 0),
                                                ("", None), ("naming =version 2 bsize=4096", None)])
def test_parse_xfs_info(text, expected):
    assert hf.parse_xfs_info(text) == expected


def test_driver_status_and_containerd_store():
    graph = {"DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]]}
    snap = {"DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
    assert hf.parse_driver_status(graph["DriverStatus"]) == {"Backing Filesystem": "extfs", "Supports d_type": "true"}
    assert hf.uses_containerd_store(graph) is False
    assert hf.uses_containerd_store(snap) is True
    assert hf.uses_containerd_store({"DriverStatus": None}) is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('version = 2\nroot = "/data/containerd"\n[plugins]\n', "/data/containerd"),
        ('version = 2\n[plugins]\n  root = "/not/top/level"\n', "/var/lib/containerd"),
        ("", "/var/lib/containerd"),
        (None, "/var/lib/containerd"),
    ],
)
def test_parse_containerd_root(text, expected):
    assert hf.parse_containerd_root(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"data-root": "/srv/docker"}', "/srv/docker"), ('{"graph": "/old"}', "/old"), ("{}", None), ("", None),
     ("{not json", None), ("[]", None), (None, None)],
)
def test_data_root_from_config(text, expected):
    assert hf.data_root_from_config(text) == expected


# ---- the module, run as Ansible runs it, on this machine -------------------------------------------------------


def test_module_reports_an_unreachable_daemon_without_failing(module_runner, tmp_path: Path):
    config = tmp_path / "daemon.json"
    config.write_text(json.dumps({"data-root": str(tmp_path / "docker")}))
    result = module_runner(
        "docker_host_info",
        {"docker_host": str(tmp_path / "no.sock"), "daemon_config": str(config), "assess_storage_driver": "vfs"},
        check_mode=True,
    )
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    assert result["docker"]["reachable"] is False and "no.sock" in result["docker"]["error"]
    # The data root from daemon.json, inspected through its nearest existing parent.
    assert result["data_root"]["path"] == str(tmp_path / "docker")
    assert result["data_root"]["exists"] is False
    assert result["data_root"]["filesystem"]
    assert result["data_root"]["total_bytes"] > 0
    assert result["kernel"]["release"] == os.uname().release
    rules = {item["rule"] for item in result["assessment"]["findings"]}
    assert {"vfs_copies_layers", "docker_unreachable"} <= rules
    assert result["assessment"]["verdict"] == "risky"


@pytest.mark.skipif(not os.path.exists("/var/run/docker.sock"), reason="no Docker engine on this machine")
def test_module_reads_the_real_engine(module_runner):
    result = module_runner("docker_host_info", {"assess_storage_driver": "zfs"})
    docker = result["docker"]
    assert docker["reachable"] is True, docker
    assert docker["storage_driver"] and docker["server_version"]
    assert isinstance(docker["images"], int) and isinstance(docker["containers"], int)
    assert result["data_root"]["path"] == docker["data_root"]
    assert docker["storage_driver"] in result["driver_dirs"]
    if result["data_root"]["filesystem"] != "zfs":
        assert result["assessment"]["verdict"] == "unsupported"


@pytest.mark.parametrize(
    ("driver", "allow_risky", "refused", "starts"),
    [
        ("overlay3", True, True, "Verdict unsupported: 'overlay3' is not a storage driver this table knows"),
        ("devicemapper", True, True, "Verdict unsupported: the devicemapper storage driver was removed"),
        ("vfs", False, True, "Verdict risky (docker_storage_driver_allow_risky: true accepts it): vfs has no"),
        ("vfs", True, False, None),
    ],
)
def test_module_decides_the_refusal(module_runner, tmp_path: Path, driver, allow_risky, refused, starts):
    result = module_runner(
        "docker_host_info",
        {"docker_host": str(tmp_path / "no.sock"), "daemon_config": str(tmp_path / "daemon.json"),
         "assess_storage_driver": driver, "allow_risky": allow_risky},
        check_mode=True,
    )
    assessment = result["assessment"]
    assert assessment["refused"] is refused, assessment
    if refused:
        assert assessment["refusal"][0].startswith(starts), assessment["refusal"]
    else:
        assert assessment["refusal"] == []
