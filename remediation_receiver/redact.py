"""Redaction of secrets from everything the receiver stores (journal events, runner artifacts)."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

MASK = "********"
# key=value / "key": "value" pairs whose key says secret.
DEFAULT_PATTERNS = (
    r"(?i)((?:password|passwd|passphrase|secret|token|api[_-]?key|authorization|private[_-]?key)[\"']?\s*[:=]\s*"
    r"[\"']?)(?:bearer\s+)?([^\s\"',}]+)",
)
SECRET_NAME = re.compile(r"(?i)(password|passwd|passphrase|secret|token|api[_-]?key|credential|private)")


class Redactor:
    def __init__(self, secrets: list[str] | None = None, patterns: list[str] | None = None) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = sorted({s for s in (secrets or []) if s and len(s) >= 4}, key=len, reverse=True)
        self.patterns = [re.compile(p) for p in (*DEFAULT_PATTERNS, *(patterns or []))]

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, MASK)
        for pattern in self.patterns:
            replacement: Any = (lambda m: m.group(1) + MASK) if pattern.groups >= 2 else MASK
            value = pattern.sub(replacement, value)
        return value

    def data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: (MASK if isinstance(k, str) and SECRET_NAME.search(k) and isinstance(v, str) and v
                        else self.data(v)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


def secret_env_values(env: dict[str, str]) -> list[str]:
    """Values of environment variables whose name says they are secret."""
    return [v for k, v in env.items() if SECRET_NAME.search(k) and v]


def redact_url(url: str) -> str:
    """The URL without its password (userinfo or `password=` parameter): what logs, errors and `check` print. A URL
    without a password is returned as it is."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "postgresql://[unparsable URL]"
    if not url_has_password(url):
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = "&".join("password=***" if item.split("=", 1)[0].lower() == "password" else item
                     for item in parts.query.split("&")) if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_has_password(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return True  # cannot tell: never print it
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    return ":" in userinfo or any(item.split("=", 1)[0].lower() == "password" for item in parts.query.split("&"))
