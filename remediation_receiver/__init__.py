"""Alertmanager webhook receiver that runs remediation playbooks through ansible-runner."""

from __future__ import annotations

__version__ = "0.1.0"
