# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the postmortem.remediation collection: may change without notice.
#
# A small Docker Engine API client over the Unix socket, standard library only, so that modules run
# on managed hosts with nothing but the host's Python.

from __future__ import annotations

import json
import os
import socket
from typing import Any

from http.client import HTTPConnection
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = "/var/run/docker.sock"


class DockerAPIError(Exception):
    """The engine answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None, path: str | None = None) -> None:
        super(DockerAPIError, self).__init__(message)
        self.status = status
        self.path = path


class _UnixHTTPConnection(HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


def _encode_query(query: dict[str, Any] | None) -> str:
    if not query:
        return ""
    pairs = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "1" if value else "0"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, separators=(",", ":"))
        pairs.append((key, str(value)))
    return "?" + urlencode(pairs) if pairs else ""


def filters(**kwargs: Any) -> dict[str, list[str]]:
    """Build the engine's `filters` query value: each key maps to a list of strings."""
    result = {}
    for key, value in kwargs.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        result[key.replace("_not", "!")] = [str(v) for v in values]
    return result


def quote_id(object_id: object) -> str:
    return quote(str(object_id), safe="")


class DockerAPI:
    """Just enough of the Engine API for facts, reports and reclaim."""

    # Lets code that receives a client (the prune policy, copied beside the timer's script) catch its errors
    # without importing this module.
    error_class = DockerAPIError

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 60) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
                timeout: float | None = None) -> Any:
        conn = _UnixHTTPConnection(self.socket_path, timeout or self.timeout)
        url = path + _encode_query(query)
        headers = {"Host": "docker"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, url, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, socket.timeout) as exc:
            raise DockerAPIError(
                "cannot reach the Docker engine at %s (%s %s): %s" % (self.socket_path, method, path, exc),
                path=path,
            ) from exc
        finally:
            conn.close()
        data = _decode(raw)
        if response.status >= 400:
            message = data.get("message") if isinstance(data, dict) else raw.decode("utf-8", "replace")
            raise DockerAPIError(
                "Docker engine refused %s %s (HTTP %s): %s" % (method, path, response.status, message),
                status=response.status,
                path=path,
            )
        return data

    def get(self, path: str, query: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        return self.request("GET", path, query=query, timeout=timeout)

    def post(self, path: str, query: dict[str, Any] | None = None, body: Any = None,
             timeout: float | None = None) -> Any:
        return self.request("POST", path, query=query, body=body, timeout=timeout)

    def delete(self, path: str, query: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        return self.request("DELETE", path, query=query, timeout=timeout)

    # Convenience reads used by several modules.
    def ping(self) -> bool:
        """True when the engine answers at all."""
        try:
            self.request("GET", "/_ping", timeout=5)
        except DockerAPIError:
            return False
        return True

    def info(self) -> Any:
        return self.get("/info")

    def version(self) -> Any:
        return self.get("/version")

    def containers(self, all: bool = True, filters_: dict[str, list[str]] | None = None) -> Any:
        return self.get("/containers/json", {"all": all, "filters": filters_})

    def inspect_container(self, container_id: str) -> Any:
        return self.get("/containers/%s/json" % quote_id(container_id))

    def images(self, all: bool = False, filters_: dict[str, list[str]] | None = None) -> Any:
        return self.get("/images/json", {"all": all, "filters": filters_})

    def system_df(self, timeout: float | None = None) -> Any:
        return self.get("/system/df", timeout=timeout)


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        # Streaming endpoints answer with one JSON document per line.
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            return [json.loads(line) for line in lines]
        except ValueError:
            return text.strip()


# The options every module that talks to the Engine API takes, declared once (documented once in the doc fragment
# postmortem.remediation.docker_api). The names follow community.docker: docker_host, timeout.
DEFAULT_DOCKER_HOST = "unix://" + DEFAULT_SOCKET
DEFAULT_TIMEOUT = 60


def docker_api_argument_spec(timeout: int = DEFAULT_TIMEOUT) -> dict:
    """The Docker API options to merge into a module's argument_spec; ``timeout`` is the module's own default.

    ``docker_socket``, the collection's name before 1.0.0, stays an alias of ``docker_host``.
    """
    return dict(
        docker_host=dict(type="str", default=DEFAULT_DOCKER_HOST, aliases=["docker_socket"]),
        timeout=dict(type="int", default=timeout),
    )


def socket_path(docker_host: str) -> str:
    """The Unix socket path that ``docker_host`` names: C(unix:///path) or a plain absolute path.

    Raises ValueError for any other form (tcp://, ssh://, a relative path): the client speaks to a Unix socket only.
    """
    path = docker_host[len("unix://"):] if docker_host.startswith("unix://") else docker_host
    path = os.path.expanduser(os.path.expandvars(path))  # what the option's type, path, did before it took URLs
    if "://" in docker_host and not docker_host.startswith("unix://"):
        raise ValueError("docker_host '%s': only a Unix socket (unix:///path or /path) is supported" % docker_host)
    if not path.startswith("/"):
        raise ValueError("docker_host '%s' is not an absolute path (give unix:///path or /path)" % docker_host)
    return path


def docker_api_from_module(module: Any) -> DockerAPI:
    """The client for a module's ``docker_host`` and ``timeout``; a bad docker_host fails the module, named."""
    try:
        path = socket_path(module.params["docker_host"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    return DockerAPI(path, timeout=module.params["timeout"])
