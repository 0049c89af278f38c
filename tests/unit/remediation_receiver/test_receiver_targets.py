"""Targets: a label names exactly one inventory host, or the alert is refused with the reason."""

from __future__ import annotations

import pytest

from remediation_receiver.config import Config
from remediation_receiver.targets import TargetError, check_plain, load_inventory, resolve, strip_port


@pytest.mark.parametrize(("value", "host"), [
    ("web1", "web1"),
    ("web1:9100", "web1"),
    ("web1.example.org:9323", "web1.example.org"),
    ("192.0.2.10:9100", "192.0.2.10"),
    ("[2001:db8::7]:9100", "2001:db8::7"),
    ("[2001:db8::7]", "2001:db8::7"),
    ("2001:db8::7", "2001:db8::7"),
    ("::1", "::1"),
])
def test_strip_port_keeps_the_host_part(value: str, host: str) -> None:
    assert strip_port(value) == host


@pytest.mark.parametrize("value", ["web1:http", "[2001:db8::7", "[2001:db8::7]9100", "[::1]:port", "[::1]:9100 ",
                                   "web1: 9100"])
def test_strip_port_refuses_what_is_not_host_and_port(value: str) -> None:
    with pytest.raises(TargetError):
        strip_port(value)


@pytest.mark.parametrize("host", ["web1", "web-1", "web_1", "web1.example.org", "192.0.2.10", "2001:db8::7", "a"])
def test_plain_host_names_pass(host: str) -> None:
    check_plain(host)


@pytest.mark.parametrize(("host", "why"), [
    ("all", "group pattern"),
    ("ALL", "group pattern"),
    ("ungrouped", "group pattern"),
    ("*", "not a plain host name"),
    ("web*", "not a plain host name"),
    ("web1,web2", "not a plain host name"),
    ("web1:&db", "not a plain host name"),
    ("web1:!db", "not a plain host name"),
    ("~web.*", "not a plain host name"),
    ("web[1:3]", "not a plain host name"),
    ("!web1", "not a plain host name"),
    ("web1 web2", "not a plain host name"),
    ("-web1", "not a plain host name"),
    ("@hosts.txt", "not a plain host name"),
    ("", "empty"),
])
def test_pattern_like_values_are_refused(host: str, why: str) -> None:
    with pytest.raises(TargetError, match=why):
        check_plain(host)


@pytest.mark.parametrize(("labels", "label", "host"), [
    ({"instance": "web1:9100"}, "instance", "web1"),
    ({"instance": "WEB1:9100"}, "instance", "web1"),
    ({"instance": "192.0.2.10:9100"}, "instance", "web1"),
    ({"instance": "[2001:db8::7]:9100"}, "instance", "v6host"),
    ({"host": "db1"}, "host", "db1"),
    ({"instance": "ctl1"}, "instance", "ctl1"),
])
def test_resolve_finds_exactly_one_host(cfg: Config, labels: dict[str, str], label: str, host: str) -> None:
    assert resolve(labels, label, load_inventory(cfg.inventory)) == host


@pytest.mark.parametrize(("labels", "why"), [
    ({}, "has no 'instance' label"),
    ({"instance": ""}, "has no 'instance' label"),
    ({"instance": " "}, "leading or trailing whitespace"),
    ({"instance": " web1"}, "leading or trailing whitespace"),
    ({"instance": "web1\n"}, "leading or trailing whitespace"),
    ({"instance": "web1\t:9100"}, "not a plain host name"),
    ({"instance": "web1:9100 "}, "leading or trailing whitespace"),
    ({"instance": "\u00a0web1"}, "leading or trailing whitespace"),
    ({"instance": "192.0.2.10 "}, "leading or trailing whitespace"),
    ({"instance": "all"}, "group pattern"),
    ({"instance": "*"}, "not a plain host name"),
    ({"instance": "web1,web2"}, "not a plain host name"),
    ({"instance": "web1:&db"}, "host:port"),
    ({"instance": "web1,web2:9100"}, "not a plain host name"),
    ({"instance": "localhost"}, "implicit localhost is never a target"),
    ({"instance": "localhost:9100"}, "implicit localhost is never a target"),
    ({"instance": "127.0.0.1:9100"}, "implicit localhost is never a target"),
    ({"instance": "web9"}, "no inventory host matches"),
    ({"instance": "shared.example:9100"}, "several inventory hosts: web-dup-a, web-dup-b"),
    ({"instance": "web"}, "also a group name|no inventory host"),
])
def test_resolve_refuses_with_a_reason(cfg: Config, labels: dict[str, str], why: str) -> None:
    with pytest.raises(TargetError, match=why):
        resolve(labels, "instance", load_inventory(cfg.inventory))
