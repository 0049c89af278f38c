#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_host_info
short_description: Facts a Docker storage-driver decision needs, and an assessment of a driver for this host
version_added: 0.1.0
description:
  - Reads, and never changes, what decides whether a Docker storage driver can work on a host, with the host's own
    Python and tools.
  - The virtualization or container type (LXC, Docker, a VM or none) from C(systemd-detect-virt),
    C(/run/systemd/container) and the environment of PID 1; the kernel release.
  - The Docker data root, the filesystem under it (ext4, xfs with its ftype, btrfs, zfs with the OpenZFS version,
    overlay, tmpfs) from C(/proc/mounts) and C(stat -f), with free and total bytes; the containerd root when Docker
    uses the containerd image store.
  - The Docker server version, the storage driver in use and how many images and containers it holds, from the
    Engine API over the Unix socket. A daemon that does not answer is reported, not a failure.
  - Whether C(/dev/fuse) and the C(fuse-overlayfs) program exist, and whether C(/dev/zfs) exists.
  - With O(assess_storage_driver), an assessment of that driver from the collection's compatibility table
    (supported, risky or unsupported, with the reasons), including the images and containers a switch would hide,
    and the decision, whether a switch must be refused and why (RV(assessment.refused), RV(assessment.refusal)).
author:
  - Postmortem Remediation Maintainers (@postmortem-remediation)
options:
  assess_storage_driver:
    description:
      - A storage driver to assess for this host, for example C(overlay2), C(vfs), C(fuse-overlayfs), C(zfs),
        C(btrfs). The result is returned in RV(assessment).
    type: str
  allow_risky:
    description:
      - With O(assess_storage_driver), let a C(risky) verdict go ahead instead of refusing it. An C(unsupported)
        verdict is refused whatever this says. The role passes C(docker_storage_driver_allow_risky).
    type: bool
    default: false
  accept_hidden_data:
    description:
      - With O(assess_storage_driver), let a switch go ahead although it hides the images and containers of the
        driver in use. The role passes C(docker_storage_driver_accept_hidden_data).
    type: bool
    default: false
  daemon_config:
    description: The daemon configuration file, read for C(data-root) when the daemon does not answer.
    type: path
    default: /etc/docker/daemon.json
  data_root:
    description: The Docker data root to inspect. By default the one the daemon reports, else C(data-root) from
      O(daemon_config), else C(/var/lib/docker).
    type: path
  timeout:
    default: 30
extends_documentation_fragment:
  - postmortem.remediation.attributes
  - postmortem.remediation.attributes.read_only
  - postmortem.remediation.attributes.actiongroup_docker
  - postmortem.remediation.docker_api
notes:
  - The assessment uses a table kept in the collection (C(plugins/module_utils/_storage_compat.py)); a verdict
    of C(supported) means no known problem matched, not a guarantee.
"""

EXAMPLES = r"""
- name: Read the storage facts of a Docker host
  postmortem.remediation.docker_host_info:
  register: host

- name: Ask whether fuse-overlayfs is safe here before switching to it
  postmortem.remediation.docker_host_info:
    assess_storage_driver: fuse-overlayfs
  register: host

- name: Refuse a known-broken combination, naming every reason and its table row
  ansible.builtin.fail:
    msg: "{{ host.assessment.refusal | join('. ') }}"
  when: host.assessment.refused
"""

RETURN = r"""
virtualization:
  description: What the host runs in.
  returned: always
  type: dict
  contains:
    type:
      description: C(container), C(vm) or C(none).
      type: str
    technology:
      description: The container or hypervisor, for example C(lxc), C(docker), C(kvm), or C(none).
      type: str
    container:
      description: The container technology, or null when not in a container.
      type: str
    vm:
      description: The hypervisor, or null when not in a VM.
      type: str
    sources:
      description: What each source said (systemd-detect-virt, /run/systemd/container, PID 1 environment, /.dockerenv).
      type: dict
  sample: {type: container, technology: lxc, container: lxc, vm: null}
kernel:
  description: The running kernel.
  returned: always
  type: dict
  sample: {release: 6.1.0-18-amd64, version: [6, 1, 0]}
data_root:
  description: The Docker data root and the filesystem that carries it.
  returned: always
  type: dict
  contains:
    path:
      description: The data root.
      type: str
    exists:
      description: Whether the directory exists.
      type: bool
    filesystem:
      description: Filesystem type (ext4, xfs, btrfs, zfs, overlay, tmpfs, ...), null when it cannot be read.
      type: str
    statfs_type:
      description: What C(stat -f -c %T) says (statfs magic name; ext4 shows as C(ext2/ext3)).
      type: str
    mount_point:
      description: The mount that holds the data root.
      type: str
    device:
      description: The source of that mount (a device or a ZFS dataset).
      type: str
    xfs_ftype:
      description: The xfs ftype (1 means d_type support), null when not xfs or unknown.
      type: int
    zfs_version:
      description: The OpenZFS version from /sys/module/zfs/version when the data root is on ZFS.
      type: str
    free_bytes:
      description: Bytes available to unprivileged users.
      type: int
    total_bytes:
      description: Size of the filesystem.
      type: int
  sample: {path: /var/lib/docker, filesystem: ext4, mount_point: /var/lib/docker, free_bytes: 9000000000}
driver_dirs:
  description: Storage-driver directories present under the data root (data of drivers used now or before).
  returned: always
  type: list
  elements: str
  sample: [overlay2, vfs]
containerd:
  description: The containerd image store, when Docker uses it.
  returned: always
  type: dict
  sample: {image_store: false, root: null}
docker:
  description: What the Docker daemon reports.
  returned: always
  type: dict
  contains:
    reachable:
      description: Whether the Engine API answered.
      type: bool
    error:
      description: Why it did not answer.
      type: str
    server_version:
      description: Docker Engine version.
      type: str
    storage_driver:
      description: The storage driver in use.
      type: str
    driver_status:
      description: The driver's status pairs (backing filesystem, d_type support, ...).
      type: dict
    images:
      description: Images the current driver holds.
      type: int
    containers:
      description: Containers the current driver holds.
      type: int
    containers_running:
      description: Running containers.
      type: int
    containerd_image_store:
      description: Whether Docker uses the containerd image store (snapshotters) instead of graph drivers.
      type: bool
  sample: {reachable: true, server_version: 20.10.24, storage_driver: overlay2, images: 3, containers: 1}
fuse:
  description: FUSE support.
  returned: always
  type: dict
  sample: {dev_fuse: false, fuse_overlayfs: /usr/bin/fuse-overlayfs}
zfs:
  description: ZFS support on the host.
  returned: always
  type: dict
  sample: {version: null, dev_zfs: false}
assessment:
  description: The verdict of the compatibility table for O(assess_storage_driver) on this host.
  returned: when O(assess_storage_driver) is set
  type: dict
  contains:
    driver:
      description: The driver assessed.
      type: str
    current_driver:
      description: The driver in use now.
      type: str
    change:
      description: Whether using the driver is a change from the current one.
      type: bool
    verdict:
      description: C(supported), C(risky) or C(unsupported); the most severe verdict of the rows that apply.
      type: str
    reasons:
      description: Why, one sentence per row that applies, plus what a switch would hide.
      type: list
      elements: str
    findings:
      description: The table rows that apply, each with C(rule), C(verdict) and C(reason).
      type: list
      elements: dict
    hides_data:
      description: The driver whose images and containers a switch would hide, with the counts and their path.
      type: dict
    refused:
      description: Whether a switch to the driver must be refused (unsupported; risky without O(allow_risky);
        hiding data without O(accept_hidden_data)).
      type: bool
    refusal:
      description: Why, one sentence per cause, each reason followed by its table row in brackets; empty when
        RV(assessment.refused) is false.
      type: list
      elements: str
  sample:
    driver: fuse-overlayfs
    current_driver: vfs
    change: true
    verdict: unsupported
    reasons: [fuse-overlayfs inside an LXC container on ZFS is the combination of the storage-driver incident]
    hides_data: {driver: vfs, images: 12, containers: 4, path: /var/lib/docker/vfs}
    refused: true
    refusal: ["Verdict unsupported: fuse-overlayfs inside an LXC container on ZFS ... [fuse_overlayfs_lxc_zfs]"]
"""

import os
import platform
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.postmortem.remediation.plugins.module_utils._docker_api import (
    DockerAPIError,
    docker_api_argument_spec,
    docker_api_from_module,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._host_parsers import (
    DEFAULT_DATA_ROOT,
    classify_virtualization,
    data_root_from_config,
    mount_for,
    normalize_fstype,
    parse_containerd_root,
    parse_detect_virt,
    parse_driver_status,
    parse_environ,
    parse_mounts,
    parse_xfs_info,
    uses_containerd_store,
)
from ansible_collections.postmortem.remediation.plugins.module_utils._storage_compat import (
    KNOWN_DRIVERS,
    REMOVED_DRIVERS,
    assess,
    version_tuple,
)


# ---- the host -------------------------------------------------------------------------------------------------

def read_text(path: str, binary: bool = False) -> Any:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (IOError, OSError):
        return None
    return data if binary else data.decode("utf-8", "replace")


class HostFacts:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params

    def run(self, args: list[str]) -> tuple[int, str, str]:
        rc, out, err = self.module.run_command(args, environ_update={"LANG": "C", "LC_ALL": "C"})
        return rc, out, err

    def virtualization(self) -> dict[str, Any]:
        detect = self.module.get_bin_path("systemd-detect-virt")
        detect_container = detect_vm = None
        if detect:
            detect_container = parse_detect_virt(*self.run([detect, "--container"])[:2])
            detect_vm = parse_detect_virt(*self.run([detect, "--vm"])[:2])
        run_container = (read_text("/run/systemd/container") or "").strip() or None
        environ = parse_environ(read_text("/proc/1/environ", binary=True) or b"")
        return classify_virtualization(
            detect_container, detect_vm, run_container, environ.get("container") or None, os.path.exists("/.dockerenv")
        )

    def kernel(self) -> dict[str, Any]:
        release = platform.release()
        version = version_tuple(release)
        return dict(release=release, version=list(version) if version else None)

    def filesystem(self, path: str) -> dict[str, Any]:
        """Filesystem facts of the mount that holds path (the nearest existing parent when path is missing)."""
        probe = path
        while probe and not os.path.exists(probe):
            probe = os.path.dirname(probe.rstrip("/")) or "/"
        real = os.path.realpath(probe or "/")
        mount = mount_for(real, parse_mounts(read_text("/proc/self/mounts") or read_text("/proc/mounts") or ""))
        statfs_type = None
        stat = self.module.get_bin_path("stat")
        if stat:
            rc, out, _err = self.run([stat, "-f", "-c", "%T", real])
            statfs_type = out.strip() if rc == 0 and out.strip() else None
        fstype = normalize_fstype(mount["fstype"] if mount else statfs_type)
        facts = dict(
            path=path,
            exists=os.path.isdir(path),
            filesystem=fstype,
            statfs_type=statfs_type,
            mount_point=mount["mount_point"] if mount else None,
            device=mount["device"] if mount else None,
            mount_options=mount["options"] if mount else [],
            xfs_ftype=None,
            zfs_version=None,
            free_bytes=None,
            total_bytes=None,
        )
        try:
            vfs = os.statvfs(real)
            facts["free_bytes"] = vfs.f_bavail * vfs.f_frsize
            facts["total_bytes"] = vfs.f_blocks * vfs.f_frsize
        except OSError:
            pass
        if fstype == "xfs":
            xfs_info = self.module.get_bin_path("xfs_info")
            if xfs_info and mount:
                rc, out, _err = self.run([xfs_info, mount["mount_point"]])
                facts["xfs_ftype"] = parse_xfs_info(out) if rc == 0 else None
        if fstype == "zfs":
            facts["zfs_version"] = self.zfs()["version"]
        return facts

    def zfs(self) -> dict[str, Any]:
        version = (read_text("/sys/module/zfs/version") or "").strip() or None
        return dict(version=version, dev_zfs=os.path.exists("/dev/zfs"))

    def fuse(self) -> dict[str, Any]:
        return dict(
            dev_fuse=os.path.exists("/dev/fuse"),
            fuse_overlayfs=self.module.get_bin_path("fuse-overlayfs"),
        )

    def docker(self) -> dict[str, Any]:
        api = docker_api_from_module(self.module)
        facts: dict[str, Any] = dict(
            reachable=False, error=None, server_version=None, api_version=None, storage_driver=None,
            driver_status={}, images=None, containers=None, containers_running=None,
            data_root=None, containerd_image_store=False)
        try:
            info = api.info()
            version = api.version()
        except DockerAPIError as exc:
            facts["error"] = to_native(exc)
            return facts
        facts.update(
            reachable=True,
            server_version=version.get("Version") or info.get("ServerVersion"),
            api_version=version.get("ApiVersion"),
            storage_driver=info.get("Driver"),
            driver_status=parse_driver_status(info.get("DriverStatus")),
            images=info.get("Images"),
            containers=info.get("Containers"),
            containers_running=info.get("ContainersRunning"),
            data_root=info.get("DockerRootDir"),
            containerd_image_store=uses_containerd_store(info),
        )
        return facts

    def gather(self) -> dict[str, Any]:
        docker = self.docker()
        data_root_path = (
            self.params["data_root"]
            or docker["data_root"]
            or data_root_from_config(read_text(self.params["daemon_config"]))
            or DEFAULT_DATA_ROOT
        )
        data_root = self.filesystem(data_root_path)
        # Docker's own view of d_type settles xfs ftype when xfs_info is not installed.
        if data_root["filesystem"] == "xfs" and data_root["xfs_ftype"] is None:
            d_type = docker["driver_status"].get("Supports d_type")
            if d_type in ("true", "false"):
                data_root["xfs_ftype"] = 1 if d_type == "true" else 0
        containerd = dict(image_store=docker["containerd_image_store"], root=None)
        if docker["containerd_image_store"]:
            root = parse_containerd_root(read_text("/etc/containerd/config.toml"))
            containerd.update(self.filesystem(root))
            containerd["root"] = root
            containerd["image_store"] = True
        driver_dirs = []
        if os.path.isdir(data_root_path):
            names = set(KNOWN_DRIVERS) | set(REMOVED_DRIVERS)
            driver_dirs = sorted(name for name in os.listdir(data_root_path) if name in names)
        facts = dict(
            virtualization=self.virtualization(),
            kernel=self.kernel(),
            data_root=data_root,
            driver_dirs=driver_dirs,
            containerd=containerd,
            docker=docker,
            fuse=self.fuse(),
            zfs=self.zfs(),
        )
        if self.params["assess_storage_driver"]:
            facts["assessment"] = assess(
                self.params["assess_storage_driver"], facts,
                allow_risky=self.params["allow_risky"], accept_hidden_data=self.params["accept_hidden_data"],
            )
        return facts


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            assess_storage_driver=dict(type="str"),
            allow_risky=dict(type="bool", default=False),
            accept_hidden_data=dict(type="bool", default=False),
            daemon_config=dict(type="path", default="/etc/docker/daemon.json"),
            data_root=dict(type="path"),
            **docker_api_argument_spec(timeout=30)
        ),
        supports_check_mode=True,
    )
    module.exit_json(changed=False, **HostFacts(module).gather())


if __name__ == "__main__":
    main()
