"""lab.sh's options used by `make demo`: ports published on 127.0.0.1 only, a data root on a loop filesystem of its
own that `down` removes with the host, extra mounts (on the real engine)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LAB = REPO / "tests" / "lab" / "lab.sh"
# This checkout's LAB_PREFIX (tests/lab/prefix.sh): another checkout running this test at once has other names.
PREFIX = subprocess.run(["bash", str(LAB.parent / "prefix.sh")], capture_output=True, text=True,
                        check=True).stdout.strip() + "-lab-options"
HOST = f"{PREFIX}-1"


def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **env})


def test_published_port_loop_data_root_and_mount(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("mounted\n")
    loop = Path(run("bash", str(LAB.parent / "loopfs.sh"), "path", HOST).stdout.strip())
    run("bash", str(LAB), "down", PREFIX)
    try:
        up = run("bash", str(LAB), "up", "1", PREFIX, LAB_INVENTORY=str(tmp_path / "inventory.ini"),
                 LAB_PUBLISH="9100", LAB_DATA_ROOT_SIZE="300M", LAB_MOUNTS=f"{tmp_path}:/mnt/demo:ro")
        assert up.returncode == 0, up.stderr
        ports = run("docker", "port", HOST, "9100/tcp").stdout.split()
        assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports
        mount = run("docker", "exec", HOST, "findmnt", "-n", "-o", "FSTYPE,SOURCE", "/var/lib/docker").stdout.split()
        assert mount[0] == "ext4" and mount[1].startswith("/dev/loop"), mount
        assert run("mountpoint", "-q", str(loop)).returncode == 0
        assert run("docker", "exec", HOST, "cat", "/mnt/demo/marker").stdout == "mounted\n"
    finally:
        down = run("bash", str(LAB), "down", PREFIX)
    assert run("docker", "inspect", HOST).returncode != 0, down.stderr
    assert not loop.exists(), f"{loop} left behind: {down.stderr}"
    assert not list(loop.parent.glob(f"{HOST}.img"))
