"""Rules: which configured rules an alert matches (a jmespath condition) and the variables it carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jmespath.exceptions

from .config import Rule


@dataclass
class Match:
    rule: Rule
    vars: dict[str, Any]


class RuleError(Exception):
    """A rule could not be evaluated on this alert (recorded as the decision's reason)."""


def is_true(value: Any) -> bool:
    """jmespath truthiness: false, null, empty string/list/object are false."""
    return value not in (None, False, "", [], {})


def matches(rule: Rule, alert: dict[str, Any]) -> bool:
    try:
        return is_true(rule.compiled_when.search(alert))
    except jmespath.exceptions.JMESPathError as exc:
        raise RuleError(f"rule {rule.name}: condition failed on this alert: {exc}") from exc


def extract_vars(rule: Rule, alert: dict[str, Any]) -> dict[str, Any]:
    """The rule's variables, taken from the alert by jmespath. Values are data: never templated or parsed.

    An expression that finds nothing (null: the label is absent) passes no variable at all, so the playbook's own
    default applies: an extra var set to null would defeat `| default(...)` and override the playbook's defaults.
    """
    out: dict[str, Any] = {}
    for name, expression in rule.compiled_vars.items():
        try:
            value = expression.search(alert)
        except jmespath.exceptions.JMESPathError as exc:
            raise RuleError(f"rule {rule.name}: variable {name} failed on this alert: {exc}") from exc
        if value is not None:
            out[name] = value
    return out


def match_rules(rules: list[Rule], alert: dict[str, Any]) -> tuple[list[Match], list[str]]:
    """Every rule whose condition holds, with its variables; plus the errors of rules that could not be evaluated."""
    found: list[Match] = []
    errors: list[str] = []
    for rule in rules:
        try:
            if matches(rule, alert):
                found.append(Match(rule=rule, vars=extract_vars(rule, alert)))
        except RuleError as exc:
            errors.append(str(exc))
    return found, errors
