"""Commands on the lab hosts, through `docker exec` only (no network address is ever used)."""

from __future__ import annotations

import shlex
import subprocess


class HostError(RuntimeError):
    pass


def sh(host: str, script: str, *, check: bool = True, timeout: float = 300) -> str:
    """Run a bash script on a lab host; its stdout, or HostError with the host's own words."""
    proc = subprocess.run(["docker", "exec", "-i", host, "bash", "-euo", "pipefail", "-c", script],
                          capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise HostError(f"{host}: `{script.strip()[:120]}` exited {proc.returncode}: "
                        f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout


def write_file(host: str, path: str, content: str, mode: str = "0644") -> None:
    """Write a file on a lab host (through docker exec and stdin; atomic rename in the same directory)."""
    tmp = f"{path}.demo-tmp"
    subprocess.run(["docker", "exec", "-i", host, "bash", "-euo", "pipefail", "-c",
                    f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0] or '/')} && cat > {shlex.quote(tmp)} && "
                    f"chmod {mode} {shlex.quote(tmp)} && mv {shlex.quote(tmp)} {shlex.quote(path)}"],
                   input=content, text=True, check=True, capture_output=True)


def copy_to(host: str, source: str, dest: str) -> None:
    subprocess.run(["docker", "cp", source, f"{host}:{dest}"], check=True, capture_output=True)


def free_ratio(host: str, path: str = "/var/lib/docker") -> float:
    """Free share of the filesystem holding `path`, as df sees it on the host (independent of any metric)."""
    out = sh(host, f"df --output=avail,size -B1 {shlex.quote(path)} | tail -n 1").split()
    return int(out[0]) / int(out[1])


def unit_state(host: str, unit: str) -> tuple[str, str]:
    """(is-active, is-enabled) of a systemd unit on the host."""
    active = sh(host, f"systemctl is-active {shlex.quote(unit)} || true").strip()
    enabled = sh(host, f"systemctl is-enabled {shlex.quote(unit)} 2>/dev/null || true").strip()
    return active, enabled
