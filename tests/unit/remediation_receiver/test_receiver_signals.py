"""The receiver stops on SIGTERM and SIGINT whenever they arrive (StopSignals), and `serve` runs its stop."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from receiver_helpers import write_config

REPO = Path(__file__).resolve().parents[3]

# The main thread waits with poll=0: it is back in its own code (and in any lock it takes) all the time, which is
# where a handler that takes a lock the main thread may hold deadlocked (the receiver's first handler: 69 of 100 such
# processes never ended on SIGTERM).
WAITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from remediation_receiver.service import StopSignals
    stop = StopSignals()
    print("ready", flush=True)
    print("received", stop.wait(poll=0), flush=True)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_any_moment_ends_the_wait(signum: signal.Signals) -> None:
    script = WAITER.format(repo=str(REPO))
    hung = 0
    for _ in range(12):
        process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        time.sleep(random.uniform(0, 0.02))
        process.send_signal(signum)
        try:
            out, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            hung += 1
            continue
        assert process.returncode == 0
        assert out.strip() == f"received {int(signum)}"
    assert hung == 0, f"{hung} of 12 waits never ended on {signum.name}"


def test_the_wait_ends_soon_after_the_signal_not_at_the_next_poll() -> None:
    script = WAITER.replace("poll=0", "poll=30").format(repo=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=20)
    assert out.strip() == f"received {int(signal.SIGTERM)}"
    assert time.monotonic() - sent < 5, "the wait lasted until its poll timeout: the wake-up did not end it"


def test_serve_stops_on_sigterm_and_says_so(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)  # port 0: any free port
    process = subprocess.Popen([sys.executable, "-m", "remediation_receiver", "serve", "--config", str(cfg.path)],
                               stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        lines.append(line)
        if "listening on" in line or not line:
            break
    assert "listening on" in lines[-1], "".join(lines)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "signal SIGTERM received" in rest and "stopping: no new deliveries" in rest, rest
