"""Everything the demo is configured by, read once from the environment (`make demo` passes it through)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The virtual environment the demo runs in (make venv: .venv); lab hosts get it read-only for their jobs.
VENV = Path(sys.prefix).resolve()


def checkout_prefix(environ: dict[str, str] | None = None) -> str:
    """This checkout's LAB_PREFIX (tests/lab/prefix.sh): the given one (validated), else pmr-<6 hex digits of the
    checkout's path>, the same prefix `make` computes, so `python -m demo` run by hand finds what `make demo` made."""
    env = dict(os.environ if environ is None else environ)
    given = {"LAB_PREFIX": env["LAB_PREFIX"]} if env.get("LAB_PREFIX") else {}
    return subprocess.run(["bash", str(REPO / "tests" / "lab" / "prefix.sh")], capture_output=True, text=True,
                          check=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **given}).stdout.strip()


def demo_prefix(environ: dict[str, str] | None = None) -> str:
    """The demo's host prefix, LAB_PREFIX-demo: its hosts LAB_PREFIX-demo-1..3 are not `make lab-up`'s LAB_PREFIX-N."""
    return f"{checkout_prefix(environ)}-demo"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Ports:
    prometheus: int
    alertmanager: int
    receiver: int
    sink: int

    @classmethod
    def pick(cls, base: int | None) -> Ports:
        """Consecutive ports from `base`, or ports the kernel picks when no base is given."""
        if base is not None:
            return cls(base, base + 1, base + 2, base + 3)
        return cls(free_port(), free_port(), free_port(), free_port())


@dataclass(frozen=True)
class Settings:
    prefix: str = field(default_factory=demo_prefix)
    state: Path = field(default_factory=lambda: REPO / "build" / "demo" / demo_prefix())
    port_base: int | None = None
    # Every `for:` of the shipped rules becomes this in the demo's copy (the shipped values are minutes).
    alert_for: str = "10s"
    scrape_interval: str = "5s"
    evaluation_interval: str = "2s"
    signals_interval: str = "3s"
    data_root_size: str = "1G"
    keep: bool = True
    incidents: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        prefix = demo_prefix(env)
        base = env.get("DEMO_PORT_BASE")
        return cls(
            prefix=prefix,
            state=Path(env.get("DEMO_STATE") or REPO / "build" / "demo" / prefix),
            port_base=int(base) if base else None,
            alert_for=env.get("DEMO_FOR") or "10s",
            scrape_interval=env.get("DEMO_SCRAPE_INTERVAL") or "5s",
            signals_interval=env.get("DEMO_SIGNALS_INTERVAL") or "3s",
            data_root_size=env.get("DEMO_DATA_ROOT_SIZE") or "1G",
            keep=env.get("DEMO_KEEP", "1") not in ("0", "false", "no"),
            incidents=tuple(i for i in (env.get("DEMO_INCIDENTS") or "").replace(",", " ").split() if i),
        )

    def host(self, index: int) -> str:
        return f"{self.prefix}-{index}"

    @property
    def inventory(self) -> Path:
        return self.state / "inventory.ini"
