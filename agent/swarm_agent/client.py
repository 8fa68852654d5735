"""A small HTTP client for the control plane API (bearer token, JSON errors)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import httpx

from swarm_agent import __version__

USER_AGENT = f"swarm-agent/{__version__}"


class ApiError(Exception):
    """The control plane refused a call; carries its JSON error."""

    def __init__(self, status: int, error: str, detail: str, field: str | None = None):
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.field = field


def raise_for_api_error(response: httpx.Response) -> None:
    """Turn a 4xx/5xx response into an `ApiError` with the server's error body."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    raise ApiError(
        response.status_code,
        body.get("error", "http_error"),
        body.get("detail", response.text[:300] or response.reason_phrase),
        body.get("field"),
    )


#: Items asked for per page when a client reads a whole list.
LIST_PAGE_LIMIT = 1000


def get_all(client: httpx.Client, path: str, params: dict | None = None) -> list:
    """Every item of a list endpoint, reading its pages (`{count, results}`) with limit/offset."""
    items: list = []
    while True:
        response = client.get(path, params={**(params or {}), "limit": LIST_PAGE_LIMIT, "offset": len(items)})
        raise_for_api_error(response)
        page = response.json()
        items.extend(page["results"])
        if not page["results"] or len(items) >= page["count"]:
            return items


@dataclass
class ApiConfig:
    """Where the control plane is and how to authenticate."""

    url: str
    token: str | None

    @classmethod
    def from_env(cls, url: str | None = None, token: str | None = None) -> "ApiConfig":
        """`SWARM_URL` and `SWARM_TOKEN`, unless given explicitly."""
        return cls(url=url_and_source(url)[0], token=token or os.environ.get("SWARM_TOKEN"))


#: Where `swarmctl` looks when neither `--url` nor `SWARM_URL` says (`make run`'s address).
DEFAULT_URL = "http://127.0.0.1:8000"


def url_and_source(explicit: str | None = None) -> tuple[str, str]:
    """The control plane URL and where it came from: `--url`, `SWARM_URL`, or the default."""
    if explicit:
        return explicit.rstrip("/"), "--url"
    if os.environ.get("SWARM_URL"):
        return os.environ["SWARM_URL"].rstrip("/"), "SWARM_URL"
    return DEFAULT_URL, "the default; set SWARM_URL or --url for another"


def connection_failure(error: httpx.TransportError, explicit_url: str | None = None) -> str:
    """The sentence for a control plane that could not be reached: which URL, from where, and why."""
    url, source = url_and_source(explicit_url)
    reason = str(error) or type(error).__name__
    hint = " Is it running (`make run`)?" if isinstance(error, httpx.ConnectError) else ""
    return f"cannot reach the control plane at {url} ({source}): {reason}.{hint}"


def api_client(config: ApiConfig, *, timeout: float = 60.0) -> httpx.Client:
    """An httpx client with the base URL, bearer token and user agent set."""
    headers = {"User-Agent": USER_AGENT}
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    return httpx.Client(base_url=f"{config.url}/api/v1", headers=headers, timeout=timeout)
