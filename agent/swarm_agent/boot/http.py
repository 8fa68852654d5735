"""Tiny JSON-over-HTTP calls for the boot script, on the standard library only.

The boot path avoids httpx (and the rest of the CLI) so a warm boot starts
in a few tens of milliseconds: it matters when the whole boot must come
close to `sha256sum` + `tar -xzf` (bench/boot.py).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import urllib.parse

USER_AGENT = "swarm-agent-boot"


class HttpFailure(Exception):
    """The request could not be made (connection refused, reset, timeout)."""


DEFAULT_PORTS = {"http": 80, "https": 443}
SOCKET_MAP_ENV = "SWARM_HTTP_UNIX_SOCKETS"


def unix_socket_map() -> dict[tuple[str, int], str]:
    """`SWARM_HTTP_UNIX_SOCKETS` ("host:port=/path,…"): endpoints reached through relay sockets.

    A network-isolated sandbox has no route out; the runtime binds one unix
    socket per allowed endpoint (control plane, bundle store) into it.
    """
    mapping = {}
    for entry in filter(None, os.environ.get(SOCKET_MAP_ENV, "").split(",")):
        endpoint, _, path = entry.partition("=")
        host, _, port = endpoint.rpartition(":")
        if host and port.isdigit() and path:
            mapping[(host, int(port))] = path
    return mapping


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a relay socket; the Host header stays the URL's (presigned URLs keep working)."""

    def __init__(self, socket_path: str, host: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class _UnixHTTPSConnection(_UnixHTTPConnection):
    """HTTPS over a relay socket: TLS runs end to end, the relay only sees ciphertext."""

    def connect(self) -> None:
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)


def connection_for(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the URL's endpoint (through its relay socket when mapped) and the request target."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in DEFAULT_PORTS:
        raise HttpFailure(f"unsupported URL scheme {parsed.scheme!r}")
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    socket_path = unix_socket_map().get((parsed.hostname, port))
    if socket_path is not None:
        connection_class = _UnixHTTPSConnection if parsed.scheme == "https" else _UnixHTTPConnection
        return connection_class(socket_path, parsed.hostname, port, timeout), target
    connection_class = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    return connection_class(parsed.hostname, port, timeout=timeout), target


def request_json(method: str, url: str, *, headers: dict | None = None, payload=None,
                 timeout: float = 30.0) -> tuple[int, str]:
    """Send one request (JSON body when `payload` is given); returns (status, response text)."""
    connection, target = connection_for(url, timeout)
    all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
    body = None
    if payload is not None:
        body = json.dumps(payload).encode()
        all_headers["Content-Type"] = "application/json"
    try:
        connection.request(method, target, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        raise HttpFailure(str(exc)) from exc
    finally:
        connection.close()
