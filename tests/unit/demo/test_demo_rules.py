"""The demo's copy of the shipped alert rules: only `for:` (and a group's evaluation interval) may differ."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from demo.rules import RULES, alert_names, shorten_for, write_demo_rules  # noqa: E402

DOC: dict[str, Any] = {"groups": [
    {"name": "a", "interval": "1m", "rules": [
        {"alert": "Slow", "expr": "x > 1", "for": "15m", "labels": {"severity": "critical"}},
        {"alert": "Instant", "expr": "y > 1"},
        {"record": "job:x:sum", "expr": "sum(x)"},
    ]},
    {"name": "b", "rules": [{"alert": "Other", "expr": "z == 0", "for": "2m", "annotations": {"summary": "s"}}]},
]}


@pytest.mark.parametrize(("group", "index", "expected_for"), [
    (0, 0, "10s"),      # an alert with for: gets the demo's
    (0, 1, None),       # an alert without for: fires at once, in production and in the demo
    (0, 2, None),       # a recording rule has no for:
    (1, 0, "10s"),
])
def test_shorten_for_changes_for_only(group: int, index: int, expected_for: str | None) -> None:
    before = copy.deepcopy(DOC)
    demo = shorten_for(DOC, "10s")
    rule, original = demo["groups"][group]["rules"][index], DOC["groups"][group]["rules"][index]
    assert rule.get("for") == expected_for
    assert {k: v for k, v in rule.items() if k != "for"} == {k: v for k, v in original.items() if k != "for"}
    assert before == DOC, "the document given must not be modified"


@pytest.mark.parametrize(("interval", "expected"), [(None, "1m"), ("2s", "2s")])
def test_group_interval(interval: str | None, expected: str) -> None:
    assert shorten_for(DOC, "10s", interval)["groups"][0]["interval"] == expected
    assert "interval" not in shorten_for(DOC, "10s", interval)["groups"][1]


@pytest.mark.parametrize("document", [None, [], {"rules": []}, {"groups": "x"}])
def test_not_a_rules_file(document: Any) -> None:
    with pytest.raises(ValueError, match="not a Prometheus rules file"):
        shorten_for(document, "10s")


def test_alert_names() -> None:
    assert alert_names(DOC) == ["Slow", "Instant", "Other"]


def test_shipped_rules_copy(tmp_path: Path) -> None:
    """The demo's copy of the shipped file: same alerts, same expressions, every `for:` the demo's."""
    if not (REPO / RULES).exists():
        pytest.fail(f"{RULES} is missing")
    shipped = yaml.safe_load((REPO / RULES).read_text())
    out = tmp_path / "rules.yml"
    names = write_demo_rules(REPO, out, "7s")
    demo = yaml.safe_load(out.read_text())
    assert names == alert_names(shipped) and names
    for group, original in zip(demo["groups"], shipped["groups"], strict=True):
        for rule, source in zip(group["rules"], original["rules"], strict=True):
            assert rule["expr"] == source["expr"]
            assert rule.get("labels") == source.get("labels")
            assert rule.get("for") == ("7s" if "for" in source else None)
