# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# The units of the prune rules: sizes, free-space targets, durations, Docker's timestamps, times of day and the
# windows they make. Part of the rules in _prune_policy.py; copied beside the prune timer's script with them.
# Standard library only: it runs on managed hosts.

from __future__ import annotations

import calendar
import re
import time
from typing import Any

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "p": 1024 ** 5}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_TIMESTAMP_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")


class PolicyError(ValueError):
    """An option value that cannot be understood."""

    # Set by Reclaimer.run on the error it raises again: the tier that failed and the reports of the tiers before it.
    tier: str
    reports: list[dict]


# ---------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------
def parse_size(value: object) -> int:
    """'500M', '2G', '1.5GiB', '1024', 1024 -> bytes. Units are binary (1K = 1024), like Docker's."""
    if isinstance(value, bool):
        raise PolicyError("size %r: expected a number of bytes or a size like 500M or 2G" % (value,))
    if isinstance(value, int):
        if value < 0:
            raise PolicyError("size %r: must not be negative" % (value,))
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise PolicyError("size %r: expected a number of bytes or a size like 500M, 2G, 1.5GiB" % (value,))
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


def parse_target(value: object) -> tuple[str, float]:
    """'15%' -> ('percent', 15.0); '2G' -> ('bytes', 2147483648)."""
    match = _PERCENT_RE.match(str(value))
    if match:
        percent = float(match.group(1))
        if not 0 < percent < 100:
            raise PolicyError("target %r: a percentage must be above 0 and below 100" % (value,))
        return ("percent", percent)
    size = parse_size(value)
    if size <= 0:
        raise PolicyError("target %r: must be more than 0 bytes" % (value,))
    return ("bytes", size)


def target_bytes(target: tuple[str, float], total_bytes: int) -> int:
    """The free-space target in bytes for a filesystem of total_bytes."""
    kind, amount = target
    if kind == "percent":
        return int(total_bytes * amount / 100.0)
    return int(amount)


def parse_duration(value: object) -> int:
    """'30s', '10m', '24h', '7d', '2w', '1h30m', 90 -> seconds. 0 and '0s' mean no minimum age."""
    if isinstance(value, bool):
        raise PolicyError("duration %r: expected seconds or a duration like 30s, 10m, 24h, 7d" % (value,))
    if isinstance(value, (int, float)):
        if value < 0:
            raise PolicyError("duration %r: must not be negative" % (value,))
        return int(value)
    text = str(value).strip().lower()
    if re.match(r"^\d+$", text):
        return int(text)
    if not text or _DURATION_PART_RE.sub("", text) != "":
        raise PolicyError("duration %r: expected seconds or a duration like 30s, 10m, 24h, 7d, 1h30m" % (value,))
    return int(sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(text)))


def parse_timestamp(value: object) -> float | None:
    """Docker's RFC 3339 timestamps (nanoseconds, Z or offset) or Unix seconds -> Unix seconds (float).

    Docker's zero time (0001-01-01T00:00:00Z) and anything unreadable give None.
    """
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value > 0 else None
    match = _TIMESTAMP_RE.match(str(value).strip())
    if not match:
        return None
    base, fraction, zone = match.groups()
    if base.startswith("0001-"):
        return None
    seconds: float = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    if fraction:
        seconds += float("0" + fraction[:10])
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return float(seconds)


def parse_clock(value: object) -> int:
    """'01:30' -> minutes after midnight."""
    match = re.match(r"^\s*(\d{1,2}):(\d{2})\s*$", str(value))
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise PolicyError("time of day %r: expected HH:MM (00:00 to 23:59)" % (value,))
    return int(match.group(1)) * 60 + int(match.group(2))


def active_window(windows: list[dict[str, Any]] | None, minute_of_day: int) -> dict[str, Any] | None:
    """The first window (dict with start, end and optional name) that contains minute_of_day, else None.

    A window whose end is before its start spans midnight; start is inside, end is outside.
    """
    for window in windows or []:
        start = parse_clock(window["start"])
        end = parse_clock(window["end"])
        if start == end:
            continue
        spans_midnight = end < start
        if (start <= minute_of_day < end) or (spans_midnight and (minute_of_day >= start or minute_of_day < end)):
            return window
    return None


def human_bytes(size: float) -> str:
    size = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024.0
    return "%.1f TiB" % size  # pragma: no cover
