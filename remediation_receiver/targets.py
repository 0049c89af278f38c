"""Targets: one alert label -> exactly one verified inventory host, or a refusal that says why.

A run's `limit` is only ever a host name this module returned. An empty limit runs a play on every host and a
pattern (`all`, `*`, `web1,web2`, `web1:&db`, `~re`, `web[1:3]`) on many, so anything that is not a plain host
name is refused before the inventory is even consulted.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from dataclasses import dataclass, field

HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
PLAIN_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){HOST_LABEL}(?:\.{HOST_LABEL})*$")
RESERVED = ("all", "ungrouped")


class TargetError(Exception):
    """The alert does not name exactly one inventory host."""


class InventoryError(Exception):
    """The inventory itself cannot be read: an operator problem, escalated, never a silent refusal."""


@dataclass
class Inventory:
    """The part of an Ansible inventory that targeting needs: host names, their ansible_host, group names."""

    hosts: dict[str, str | None] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)
    source: str = ""

    def lookup(self, name: str) -> list[str]:
        wanted = name.casefold()
        found = [h for h in self.hosts if h.casefold() == wanted]
        found += [h for h, address in self.hosts.items()
                  if address and address.casefold() == wanted and h not in found]
        return found


def strip_port(value: str) -> str:
    """`host:port`, `[v6]:port`, `[v6]`, bare IPv6 or a host name -> the host part (IPv6-aware). Nothing is trimmed:
    a value with whitespace is not a host name, and check_plain refuses it."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise TargetError(f"{value!r}: unbalanced '[' in the address")
        host, rest = value[1:end], value[end + 1:]
        if rest and not re.fullmatch(r":\d{1,5}", rest):
            raise TargetError(f"{value!r}: expected [address]:port")
        return host
    if value.count(":") > 1:
        return value  # an unbracketed IPv6 address carries no port
    host, sep, port = value.partition(":")
    if sep and not port.isdigit():
        raise TargetError(f"{value!r}: expected host:port with a numeric port")
    return host


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def check_plain(host: str) -> None:
    """Refuse anything Ansible could read as more than one host."""
    if not host:
        raise TargetError("the target label is empty")
    if host.casefold() in RESERVED:
        raise TargetError(f"{host!r} is an Ansible group pattern, not a host")
    if is_ip(host):
        return
    if not PLAIN_HOSTNAME.match(host):
        raise TargetError(f"{host!r} is not a plain host name (patterns, lists, ranges and wildcards are refused)")


def load_inventory(path: str) -> Inventory:
    """Parse the inventory with Ansible's own inventory manager (INI, YAML, directories, scripts)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    if not os.path.exists(path):
        raise InventoryError(f"inventory {path} does not exist")
    # Ansible only warns about an inventory it cannot parse and goes on with an empty one: refuse that instead.
    if not InventoryManager(loader=DataLoader(), sources=[path], parse=False).parse_source(path):
        raise InventoryError(f"inventory {path} could not be parsed by any inventory plugin")
    manager = InventoryManager(loader=DataLoader(), sources=[path])
    inventory = Inventory(source=path)
    for name, host in manager.hosts.items():
        address = host.vars.get("ansible_host")
        inventory.hosts[name] = str(address) if address else None
    inventory.groups = set(manager.groups)
    return inventory


class InventoryCache:
    """Reload the inventory when its file changes; resolution always sees a consistent copy."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._inventory: Inventory | None = None

    def get(self) -> Inventory:
        with self._lock:
            stamp = os.stat(self.path).st_mtime if os.path.exists(self.path) else None
            if self._inventory is None or stamp != self._stamp:
                self._inventory = load_inventory(self.path)
                self._stamp = stamp
            return self._inventory


def resolve(labels: dict[str, str], label: str, inventory: Inventory) -> str:
    """The one inventory host named by `labels[label]`, or TargetError with the reason."""
    raw = labels.get(label)
    if not raw:
        raise TargetError(f"the alert has no {label!r} label: refusing to guess a target")
    if raw != raw.strip():
        # Trimming would run on a host the label does not exactly name.
        raise TargetError(f"{raw!r} has leading or trailing whitespace: refusing a value that is not exactly a host")
    host = strip_port(raw)
    check_plain(host)
    found = inventory.lookup(host)
    if not found:
        if host.casefold() in ("localhost", "127.0.0.1", "::1"):
            raise TargetError(f"{host!r} is not in the inventory (the implicit localhost is never a target)")
        raise TargetError(f"no inventory host matches {host!r}")
    if len(found) > 1:
        raise TargetError(f"{host!r} matches several inventory hosts: {', '.join(sorted(found))}")
    name = found[0]
    if ":" in name or not (PLAIN_HOSTNAME.match(name) or is_ip(name)):
        raise TargetError(f"inventory host {name!r} cannot be used as a limit safely (not a plain name)")
    if name in inventory.groups:
        raise TargetError(f"inventory host {name!r} is also a group name: the limit would be ambiguous")
    return name
