"""Small JSON-over-HTTP clients for what the demo watches: Prometheus and Alertmanager on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts, as /api/v1/alerts lists them."""
        return list(get_json(f"{self.base}/api/v1/alerts")["data"]["alerts"])

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = get_json(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        return list(data["data"]["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step})
        return list(get_json(f"{self.base}/api/v1/query_range?{query}")["data"]["result"])

    def targets_up(self) -> dict[str, int]:
        return {r["metric"].get("instance", "?"): int(float(r["value"][1])) for r in self.query('up{job="node"}')}
