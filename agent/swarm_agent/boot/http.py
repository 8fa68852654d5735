"""Tiny JSON-over-HTTP calls for the boot script, on the standard library only.

The boot path avoids httpx (and the rest of the CLI) so a warm boot starts
in a few tens of milliseconds: it matters when the whole boot must come
close to `sha256sum` + `tar -xzf` (bench/boot.py).
"""
from __future__ import annotations

import http.client
import json
import urllib.parse

USER_AGENT = "swarm-agent-boot"


class HttpFailure(Exception):
    """The request could not be made (connection refused, reset, timeout)."""


def request_json(method: str, url: str, *, headers: dict | None = None, payload=None,
                 timeout: float = 30.0) -> tuple[int, str]:
    """Send one request (JSON body when `payload` is given); returns (status, response text)."""
    parsed = urllib.parse.urlsplit(url)
    connection_class = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parsed.hostname, parsed.port, timeout=timeout)
    target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
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
