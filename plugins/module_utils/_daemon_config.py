# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# Rules for /etc/docker/daemon.json: merging, coercion dockerd insists on, validation, and which
# changes a SIGHUP reload applies versus which need a restart. Pure functions, no Ansible imports.

from __future__ import annotations

import copy
import json
import math
import shlex
from collections.abc import Iterable
from typing import Any, NoReturn

# Top-level keys dockerd accepts in daemon.json (Engine 20.10 to 28; the 20.10 ones checked against a real dockerd).
# dockerd refuses any other key ("the following directives don't match any configuration option"), so we refuse it
# first.
KNOWN_KEYS = frozenset(
    """
    allow-direct-routing allow-nondistributable-artifacts api-cors-header authorization-plugins bip bip6 bridge
    builder cdi-spec-dirs cgroup-parent cluster-advertise cluster-store cluster-store-opts containerd
    containerd-namespace containerd-plugins-namespace cpu-rt-period cpu-rt-runtime cri-containerd data-root debug
    default-address-pools default-cgroupns-mode default-gateway default-gateway-v6 default-ipc-mode
    default-network-opts default-runtime default-shm-size default-ulimits dns dns-opts dns-search exec-opts
    exec-root experimental features firewall-backend fixed-cidr fixed-cidr-v6 group host-gateway-ip host-gateway-ips
    hosts http-proxy https-proxy icc init init-path insecure-registries ip ip-forward ip-forward-no-drop ip-masq
    ip6tables iptables ipv6 labels live-restore log-driver log-format log-level log-opts max-concurrent-downloads
    max-concurrent-uploads max-download-attempts metrics-addr min-api-version mtu network-control-plane-mtu
    network-diagnostic-port no-new-privileges no-proxy node-generic-resources oom-score-adjust pidfile proxies
    raw-logs registry-mirrors rootless runtimes seccomp-profile selinux-enabled shutdown-timeout storage-driver
    storage-opts swarm-default-advertise-addr tls tlscacert tlscert tlskey tlsverify userland-proxy
    userland-proxy-path userns-remap
    """.split()
)

# Keys dockerd re-reads on SIGHUP ("Configuration reload behavior" in the dockerd reference).
# Everything else, the log driver and its options and the storage driver included, needs a restart.
RELOADABLE_KEYS = frozenset(
    """
    debug labels live-restore max-concurrent-downloads max-concurrent-uploads max-download-attempts
    default-runtime runtimes authorization-plugins allow-nondistributable-artifacts insecure-registries
    registry-mirrors shutdown-timeout features
    """.split()
)

# dockerd flags whose daemon.json key has another name; every other flag shares its name with its key. A setting
# given both as a flag in the unit's ExecStart and in the file stops dockerd ("specified both as a flag and in the
# configuration file"), except runtimes (--add-runtime), which dockerd merges.
FLAG_KEYS = {
    "H": "hosts", "host": "hosts", "D": "debug", "l": "log-level", "b": "bridge", "G": "group", "p": "pidfile",
    "s": "storage-driver", "label": "labels", "log-opt": "log-opts", "storage-opt": "storage-opts",
    "exec-opt": "exec-opts", "dns-opt": "dns-opts", "insecure-registry": "insecure-registries",
    "registry-mirror": "registry-mirrors", "default-ulimit": "default-ulimits",
    "authorization-plugin": "authorization-plugins", "default-address-pool": "default-address-pools",
    "node-generic-resource": "node-generic-resources", "cluster-store-opt": "cluster-store-opts",
    "default-network-opt": "default-network-opts", "cdi-spec-dir": "cdi-spec-dirs",
}

# Values dockerd parses as map[string]string: a number or a boolean there stops the daemon from starting.
STRING_MAP_KEYS = ("log-opts",)


class ConfigError(Exception):
    """The existing file or the requested change cannot be used; the message says which and why."""


def _not_json(constant: str) -> NoReturn:
    raise ValueError("%s is not a JSON value" % constant)


def parse_existing(text: str, path: str) -> dict[str, Any]:
    """Parse the current file; an empty file counts as no settings. Invalid JSON is an error, never overwritten.

    Python's json module reads NaN and Infinity, which JSON does not have (dockerd refuses them): they are refused.
    """
    if not text.strip():
        return {}
    try:
        data = json.loads(text, parse_constant=_not_json)
    except ValueError as exc:
        raise ConfigError(
            "%s is not valid JSON (%s); it was left untouched. Fix or remove it by hand, then run again." % (path, exc)
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            "%s holds a JSON %s, not an object; it was left untouched." % (path, type(data).__name__)
        )
    return data


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Return base with overlay merged in: nested dicts merged key by key, any other value replaced.

    A null (None) in overlay removes the key: ``log-opts: {compress: null}`` means "no compress option".
    """
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = drop_nulls(value)
    return result


def drop_nulls(value: Any) -> Any:
    """A copy of value without the keys whose value is null, at every depth of nested mappings."""
    if isinstance(value, dict):
        return dict((key, drop_nulls(item)) for key, item in value.items() if item is not None)
    return copy.deepcopy(value)


def remove_keys(config: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """Remove top-level keys, or nested ones named as a dotted path (``log-opts.max-size``)."""
    result = copy.deepcopy(config)
    for key in keys:
        parts = key.split(".") if key not in result else [key]
        node: Any = result
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return result


def _as_docker_string(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value  # a string stays; a float, list or mapping is left for validate() to refuse with its name


def coerce(config: dict[str, Any]) -> dict[str, Any]:
    """Turn values dockerd reads as strings into strings (log-opts max-file: 3 becomes "3").

    Only booleans and integers have one obvious string form. A float (3.0 or 3?), a list or a mapping has none:
    they are left as they are and validate() refuses them, instead of writing a Python repr such as "['a']".
    """
    result = copy.deepcopy(config)
    for key in STRING_MAP_KEYS:
        opts = result.get(key)
        if isinstance(opts, dict):
            result[key] = dict((name, _as_docker_string(value)) for name, value in opts.items())
    return result


def exec_start_command(show_value: str) -> str:
    """The command line in the ExecStart value systemctl show prints.

    It looks like "{ path=/usr/sbin/dockerd ; argv[]=/usr/sbin/dockerd -H fd:// ; ... }".
    """
    for part in show_value.split(";"):
        part = part.strip()
        if part.startswith("argv[]="):
            return part[len("argv[]="):]
    return show_value.strip()


def exec_start_argv(exec_start: str | None) -> list[str]:
    """A unit's ExecStart line as its arguments (split on whitespace when its quoting does not parse)."""
    try:
        return shlex.split(exec_start or "")
    except ValueError:
        return (exec_start or "").split()


def unit_host_flags(exec_start: str | None) -> list[str]:
    """The -H/--host flags in a docker unit's ExecStart line."""
    argv = exec_start_argv(exec_start)
    flags = []
    for index, arg in enumerate(argv):
        if arg in ("-H", "--host") and index + 1 < len(argv):
            flags.append(argv[index + 1])
        elif arg.startswith("--host=") or (arg.startswith("-H") and len(arg) > 2):
            flags.append(arg.split("=", 1)[-1] if "=" in arg else arg[2:])
    return flags


def unit_flag_keys(exec_start: str | None) -> dict[str, str]:
    """Map each daemon.json key that a flag in the unit's ExecStart already sets to that flag as written."""
    argv = exec_start_argv(exec_start)
    keys: dict[str, str] = {}
    for arg in argv[1:]:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
        elif arg.startswith("-") and len(arg) > 1:
            name = arg[1]
        else:
            continue  # a flag's value, or an unexpanded $DOCKER_OPTS that systemd fills in at start
        key = FLAG_KEYS.get(name, name)
        if key in KNOWN_KEYS and key != "runtimes":
            keys.setdefault(key, arg.split("=", 1)[0] if arg.startswith("--") else arg[:2])
    return keys


def validate(config: dict[str, Any], allow_unknown_keys: bool = False, exec_start: str | None = None) -> list[str]:
    """Return the reasons dockerd would refuse this configuration (an empty list when none)."""
    problems = []
    unknown = sorted(key for key in config if key not in KNOWN_KEYS)
    if unknown and not allow_unknown_keys:
        problems.append(
            "unknown top-level key(s) %s: dockerd refuses to start with them "
            "(set allow_unknown_keys=true if your dockerd is newer than this list)" % ", ".join(unknown)
        )
    for key in STRING_MAP_KEYS:
        if key in config and not isinstance(config[key], dict):
            kind = type(config[key]).__name__
            problems.append("%s must be a mapping of option names to values, not %s" % (key, kind))
        elif key in config:
            for name, value in sorted(config[key].items()):
                if not isinstance(value, str):
                    problems.append(
                        "%s.%s is %s %s (%s): dockerd reads only strings there; write it as a string (a size such "
                        "as \"10m\", a count such as \"3\"), or null to remove the option"
                        % (key, name, _article(value), _json_type(value), json.dumps(value)[:60])
                    )
    if "hosts" in config:
        flags = unit_host_flags(exec_start)
        if flags:
            problems.append(
                "'hosts' is set in daemon.json while the docker unit already passes %s in ExecStart: dockerd refuses "
                "to start when hosts are given both as a flag and in the file. Remove the flag with a systemd drop-in "
                "(ExecStart= then ExecStart=/usr/sbin/dockerd) first, or leave 'hosts' out of daemon.json "
                "(drop it from settings, or remove_keys: [hosts] when the file already has it)"
                % " ".join("-H " + flag for flag in flags)
            )
    flag_keys = unit_flag_keys(exec_start)
    doubled = sorted(key for key in config if key in flag_keys and key != "hosts")  # hosts has its own advice above
    if doubled:
        problems.append(
            "%s set in daemon.json while the docker unit already passes %s in ExecStart: dockerd refuses to start when "
            "a setting is given both as a flag and in the file. Move the flag out of ExecStart with a systemd drop-in "
            "first, or leave the key out of daemon.json (drop it from settings, or remove_keys when the file already "
            "has it)" % (", ".join("'%s'" % key for key in doubled), ", ".join(flag_keys[key] for key in doubled))
        )
    not_finite = sorted(_non_finite_numbers(config))
    if not_finite:
        problems.append("%s: NaN and Infinity are not JSON values" % ", ".join(not_finite))
    if "data-root" in config and not str(config["data-root"]).startswith("/"):
        problems.append("data-root must be an absolute path, got %r" % config["data-root"])
    return problems


def _non_finite_numbers(value: Any, where: str = "") -> list[str]:
    """Dotted paths of the NaN or infinite numbers in value (a YAML .nan would otherwise reach json.dumps)."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return [where or "<value>"]
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_non_finite_numbers(item, "%s.%s" % (where, key) if where else str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found.extend(_non_finite_numbers(item, "%s[%d]" % (where, index)))
    return found


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return "number with a fraction"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _article(value: Any) -> str:
    return "an" if _json_type(value)[0] in "aeiou" else "a"


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Top-level keys whose value differs between the two configurations, sorted."""
    keys = set(before) | set(after)
    return sorted(key for key in keys if before.get(key, _MISSING) != after.get(key, _MISSING))


def needs_restart(keys: Iterable[str]) -> bool:
    """True when any changed key is one dockerd only reads at start."""
    return any(key not in RELOADABLE_KEYS for key in keys)


def change_summary(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """What writing desired over current changes, and whether dockerd needs a restart or a reload for it."""
    keys = changed_keys(current, desired)
    restart = needs_restart(keys)
    return dict(changed_keys=keys, restart_needed=bool(keys) and restart, reload_enough=bool(keys) and not restart,
                config=desired)


def render(config: dict[str, Any]) -> str:
    """The file text: stable key order, two-space indent, trailing newline, no timestamps."""
    return json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def plan(current: dict[str, Any], settings: dict[str, Any], remove: Iterable[str] = (), exclusive: bool = False,
         ) -> dict[str, Any]:
    """The configuration that should be on disk, from what is there and what was asked."""
    desired = drop_nulls(settings) if exclusive else deep_merge(current, settings)
    desired = remove_keys(desired, remove)
    return coerce(desired)
