# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# What may be reclaimed on a Docker host, in which order, and how: the one copy of the rules shared by the
# docker_reclaim module (emergency, until a free-space target is met) and the docker_prune_timer role's
# script (scheduled hygiene). This file is their one name for the rules; each concern lives in its own file:
#   _prune_units.py      sizes, targets, durations, timestamps, times of day and windows
#   _prune_rules.py      the keep rules and the plan of each tier
#   _prune_reclaimer.py  the engine state and the executor (log truncation included)
#   _prune_metrics.py    the timer's node_exporter textfile metrics
#   _files.py            the lock (one reclaim at a time on a host) and the atomic write
# The role copies these files and _docker_api.py beside its script (roles/docker_prune_timer/vars/main.yml), so
# they import each other relatively in the collection and by their bare names there; the engine client is passed in.
#
# Standard library only: it runs on managed hosts.

from __future__ import annotations

try:
    from . import _prune_units
    from . import _prune_rules
    from . import _prune_reclaimer
    from . import _prune_metrics
    from . import _files
except ImportError:  # copied beside the prune timer's script (roles/docker_prune_timer): a flat directory, no package
    import _prune_units  # type: ignore[no-redef]
    import _prune_rules  # type: ignore[no-redef]
    import _prune_reclaimer  # type: ignore[no-redef]
    import _prune_metrics  # type: ignore[no-redef]
    import _files  # type: ignore[no-redef]

# The names docker_reclaim, the timer's script, the human_bytes filter and the tests use.
PolicyError = _prune_units.PolicyError
active_window = _prune_units.active_window
human_bytes = _prune_units.human_bytes
parse_clock = _prune_units.parse_clock
parse_duration = _prune_units.parse_duration
parse_size = _prune_units.parse_size
parse_target = _prune_units.parse_target
parse_timestamp = _prune_units.parse_timestamp
target_bytes = _prune_units.target_bytes
COMPOSE_PROJECT_LABEL = _prune_rules.COMPOSE_PROJECT_LABEL
DEFAULT_KEEP_LABEL = _prune_rules.DEFAULT_KEEP_LABEL
DEFAULT_LOCK_FILE = _prune_rules.DEFAULT_LOCK_FILE
DEFAULT_TIERS = _prune_rules.DEFAULT_TIERS
STOPPED_STATES = _prune_rules.STOPPED_STATES
TIERS = _prune_rules.TIERS
ancestors = _prune_rules.ancestors
container_keep_reason = _prune_rules.container_keep_reason
container_name = _prune_rules.container_name
image_ancestry = _prune_rules.image_ancestry
image_label = _prune_rules.image_label
is_dangling = _prune_rules.is_dangling
is_kept = _prune_rules.is_kept
largest_protected = _prune_rules.largest_protected
matches_container = _prune_rules.matches_container
plan_build_cache = _prune_rules.plan_build_cache
plan_container_logs = _prune_rules.plan_container_logs
plan_images = _prune_rules.plan_images
plan_stopped_containers = _prune_rules.plan_stopped_containers
plan_volumes = _prune_rules.plan_volumes
protected_images = _prune_rules.protected_images
select_tiers = _prune_rules.select_tiers
unique_size = _prune_rules.unique_size
EngineState = _prune_reclaimer.EngineState
Reclaimer = _prune_reclaimer.Reclaimer
filesystem_usage = _prune_reclaimer.filesystem_usage
truncate_keep_tail = _prune_reclaimer.truncate_keep_tail
METRIC_PREFIX = _prune_metrics.METRIC_PREFIX
render_metrics = _prune_metrics.render_metrics
acquire_lock = _files.acquire_lock
write_atomically = _files.write_atomically
