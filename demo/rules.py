"""The demo's copy of the shipped alert rules: the same expressions, labels and annotations, with every `for:`
(minutes in production: no page for a blip) shortened so an incident pages within seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RULES = Path("extensions/prometheus/rules/postmortem_remediation.rules.yml")


def shorten_for(rules: dict[str, Any], duration: str, interval: str | None = None) -> dict[str, Any]:
    """A copy of a Prometheus rules document with each alerting rule's `for:` set to `duration` (rules without
    `for:` keep firing at once) and, when given, each group's evaluation `interval:` set to `interval`."""
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
        raise ValueError("not a Prometheus rules file: no list of groups")
    groups = []
    for group in rules["groups"]:
        group = dict(group)
        if interval is not None and "interval" in group:
            group["interval"] = interval
        group["rules"] = [dict(rule, **{"for": duration}) if "alert" in rule and "for" in rule else dict(rule)
                          for rule in group.get("rules", [])]
        groups.append(group)
    return {**rules, "groups": groups}


def alert_names(rules: dict[str, Any]) -> list[str]:
    return [rule["alert"] for group in rules.get("groups", []) for rule in group.get("rules", []) if "alert" in rule]


def write_demo_rules(repo: Path, out: Path, duration: str) -> list[str]:
    """Rewrite the shipped rules file into `out`; returns the alert names it holds."""
    source = repo / RULES
    data = yaml.safe_load(source.read_text())
    demo = shorten_for(data, duration)
    header = f"# Written by the demo from {RULES} with every `for:` set to {duration}. Do not edit.\n"
    out.write_text(header + yaml.safe_dump(demo, sort_keys=False, width=120))
    return alert_names(demo)
