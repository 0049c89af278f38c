# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# Every run of a guarded module leaves its outcome in metrics_file: ok, refused or failed, with its time. A run
# that only wrote metrics when it reached a verdict left the alerts blind to every failure (bad parameters, a lock
# held too long, rsync failing mid-way, a permission error, SIGTERM): the "refused" alerts never fired and only a
# staleness alert could, hours later. GuardedModule is the AnsibleModule of safe_sync and guarded_cleanup: its
# fail_json records a failure unless the run already recorded its outcome (a refusal that fails the task stays a
# refusal), and run() turns an unexpected exception or SIGTERM into such a failure. SIGKILL leaves nothing: the
# previous run's file stays, and only its age tells (pmr_guard_last_run_timestamp_seconds).

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.postmortem.remediation.plugins.module_utils._deletion_guard import Verdict, printable_data
from ansible_collections.postmortem.remediation.plugins.module_utils._textfile_metrics import (
    parse_max_age,
    write_guard_metrics,
)


class Terminated(BaseException):
    """The module received SIGTERM (a systemd stop, a timeout of whoever runs it); not an Exception, so that no
    ``except Exception`` on the way (run_command's) turns it into a vaguer message."""


class GuardedModule(AnsibleModule):
    """An AnsibleModule whose every ending writes the guard's metrics (``write_guard_metrics``) once."""

    def __init__(self, guard: str, **kwargs: Any) -> None:
        # Set before AnsibleModule.__init__: it calls fail_json itself for parameters that do not validate.
        self.pmr_guard = guard
        self.pmr_guard_verdict: Verdict | None = None
        self.pmr_guard_result: dict[str, Any] = {}
        self.pmr_guard_metrics_written = False
        super().__init__(**kwargs)
        try:  # refused in check mode too, before any work: a typo must not silently disable the staleness alert
            parse_max_age(self.params.get("metrics_max_age"))
        except ValueError as exc:
            self.fail_json(msg="invalid option: %s" % exc)

    def attach(self, verdict: Verdict, result: dict[str, Any]) -> None:
        """The run's verdict and result, which a failure's metrics report (what was planned and done so far)."""
        self.pmr_guard_verdict, self.pmr_guard_result = verdict, result

    def fail_json(self, msg: str, **kwargs: Any) -> NoReturn:
        if not self.pmr_guard_metrics_written:
            result = dict(self.pmr_guard_result, **kwargs)
            write_guard_metrics(self, self.pmr_guard, self.pmr_guard_verdict, result, failed=True)
            if "metrics_error" in result:
                kwargs["metrics_error"] = result["metrics_error"]
        super().fail_json(msg, **kwargs)

    def run_command(self, args: Any, *posargs: Any, **kwargs: Any) -> tuple[int, str, str]:
        """AnsibleModule.run_command, except that the command does not outlive the module: when SIGTERM (or any
        exception) ends the wait, the command is stopped before the exception goes on. Without this an rsync whose
        module was terminated went on transferring and deleting, and a hanging reference command ran to its timeout,
        after the run had been recorded as failed."""
        started: list[subprocess.Popen[Any]] = []
        callback = kwargs.pop("before_communicate_callback", None)

        def remember(process: subprocess.Popen[Any]) -> None:
            started.append(process)
            if callback is not None:
                callback(process)

        kwargs["before_communicate_callback"] = remember
        try:
            return super().run_command(args, *posargs, **kwargs)
        except BaseException:
            for process in started:
                _stop(process)
            raise

    def run(self, what: str, body: Callable[[], object]) -> NoReturn:
        """Run ``body`` (which ends with exit_json or fail_json); an exception or SIGTERM fails ``what``, recorded."""
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            body()
        except Terminated:
            self.fail_json(msg="%s: terminated by SIGTERM before it ended; what it did so far is in the result"
                               % what, **printable_data(self.pmr_guard_result))
        except Exception as exc:
            # fail_json keeps the pending exception's traceback (shown as ansible-core's settings say)
            self.fail_json(msg="%s failed: %s: %s" % (what, type(exc).__name__, exc),
                           **printable_data(self.pmr_guard_result))
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.fail_json(msg="%s ended without a result" % what, **printable_data(self.pmr_guard_result))


def _stop(process: subprocess.Popen[Any], grace: float = 5) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (rsync and timeout(1) end their own children on SIGTERM)."""
    if process.poll() is not None:
        return
    try:
        process.terminate()
        process.wait(grace)
    except (subprocess.TimeoutExpired, Terminated):
        process.kill()
        process.wait()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated("signal %d" % signum)
