# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# The one-line lists the roles and playbooks print of the objects a module returned ("web (running, json-file,
# 1.00 MB); db (...)"), so that task files call a tested function instead of building text with a Jinja loop.

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.plugins.filter.mathstuff import human_readable


def describe_objects(items: Iterable[Mapping[str, Any]] | None, fields: Iterable[str] = (), separator: str = "; ",
                     empty: str = "", sizes: Iterable[str] = (),
                     size_format: Callable[[Any], str] = human_readable) -> str:
    """``name (field, field, ...)`` for each item, joined by ``separator``; ``empty`` when there is none.

    The fields are read in the order given; those named in ``sizes`` are byte counts shown with ``size_format``
    (Ansible's human_readable, as the task files printed them). Without fields an item is its name alone.
    """
    fields, sizes = list(fields), set(sizes)
    described = []
    for item in items or []:
        if not isinstance(item, Mapping) or "name" not in item:
            raise AnsibleFilterError("describe_objects: %r has no name" % (item,))
        try:
            values = [size_format(item[f]) if f in sizes else str(item[f]) for f in fields]
        except KeyError as exc:
            raise AnsibleFilterError("describe_objects: %s has no %s" % (item["name"], exc)) from exc
        described.append("%s (%s)" % (item["name"], ", ".join(values)) if values else str(item["name"]))
    return separator.join(described) if described else empty


class FilterModule:
    def filters(self) -> dict[str, Callable[..., str]]:
        return {"describe_objects": describe_objects}
