"""Event-loop fast paths for the hottest agent requests, with Django as the fallback.

A fleet of 15,000 drones heartbeating every 30 s is 500 requests per second
that each do one SQL statement. Through Django and DRF (URL resolution, nine
middleware, content negotiation, a thread hand-off) that request costs several
times the statement; answered straight on the event loop with an async
connection it costs about as much as the statement. This is the pattern of
GitLab's Workhorse in front of Rails: a thin layer answers the few hot,
simple requests and passes everything else on.

A fast route handler gets the request with its body already read and either
returns a `FastResponse`, or None to let Django answer. It answers only the
plain success case; anything it is not sure about (a malformed body, an
unknown token, a case a hook must see, a database error) goes to the
Django view, which re-checks everything and gives the usual JSON error. So
the two can never disagree on a refusal: only Django refuses.

    FastRoute("POST", r"^/api/v1/drones/heartbeat/?$", "drones.fastpath.heartbeat", max_body=64 * 1024)
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from importlib import import_module

from prometheus_client import Counter

from swarm.core.errors import ApiError
from swarm.core.inputs import json_loads

logger = logging.getLogger(__name__)

#: Requests on fast routes by how they were answered (`fast`, or `django` when handed to the view),
#: per server process; served on /metrics. django-prometheus counts only the ones Django answered.
FAST_ROUTE_REQUESTS = Counter("swarm_fast_route_requests", "Requests on event-loop fast routes, by answer.",
                              labelnames=["route", "answered_by"])

JSON_HEADERS = [(b"content-type", b"application/json"), (b"vary", b"Accept"),
                (b"x-content-type-options", b"nosniff")]


@dataclass
class FastRequest:
    """What a fast handler sees: method, path, lower-cased headers and the whole body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: The named groups of the route's path pattern (e.g. `build_id`).
    path_params: dict[str, str] = field(default_factory=dict)

    def json(self):
        """The body as JSON, or None when the strict input layer refuses it (the view then says why)."""
        try:
            return json_loads(self.body)
        except ApiError:
            return None

    def bearer_token(self) -> str | None:
        keyword, _, token = self.headers.get("authorization", "").partition(" ")
        token = token.strip()
        return token if keyword.lower() == "bearer" and token else None


@dataclass
class FastResponse:
    """A JSON answer (no body when `body` is None, e.g. a 204)."""

    body: dict | None
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send) -> None:
        if self.body is None:
            # An empty body says so: without a length uvicorn would answer a 202 in chunked encoding.
            length = [] if self.status in (204, 304) else [(b"content-length", b"0")]
            await send({"type": "http.response.start", "status": self.status, "headers": [*length, *self.headers]})
            await send({"type": "http.response.body", "body": b""})
            return
        content = json.dumps(self.body, separators=(",", ":")).encode()
        headers = [*JSON_HEADERS, (b"content-length", str(len(content)).encode()), *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class FastRoute:
    """A (method, path pattern) answered by `handler` (dotted path, imported on first use)."""

    def __init__(self, method: str, pattern: str, handler: str, *, max_body: int = 64 * 1024):
        self.method = method.upper()
        self.pattern = re.compile(pattern)
        self.handler_path = handler
        self.max_body = max_body
        self._handler = None

    def matches(self, scope) -> bool:
        return scope["method"] == self.method and self.pattern.match(scope["path"]) is not None

    @property
    def handler(self):
        if self._handler is None:
            module, _, name = self.handler_path.rpartition(".")
            self._handler = getattr(import_module(module), name)
        return self._handler


def _declared_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def replay(body: bytes, receive):
    """An ASGI `receive` that yields the already-read body first, then defers to the real one."""
    replayed = False

    async def receive_again():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


class FastRoutes:
    """The fast routes in front of an ASGI `http` app (the Django app is `fallback`)."""

    def __init__(self, routes: list[FastRoute], fallback):
        self.routes = routes
        self.fallback = fallback

    def route_for(self, scope) -> FastRoute | None:
        if scope["type"] != "http":
            return None
        for route in self.routes:
            if route.matches(scope):
                return route
        return None

    async def __call__(self, scope, receive, send):
        route = self.route_for(scope)
        if route is None:
            return await self.fallback(scope, receive, send)
        length = _declared_length(scope)
        if length is None or length > route.max_body:
            return await self.fallback(scope, receive, send)  # chunked or large: Django streams and judges it
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        request = FastRequest(
            method=scope["method"], path=scope["path"], body=body,
            headers={name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]},
            path_params=route.pattern.match(scope["path"]).groupdict(),
        )
        try:
            response = await route.handler(request)
        except Exception as error:  # noqa: BLE001 - Django answers (and logs) whatever went wrong here
            logger.warning("fast route %s failed (%s: %s); Django answers", route.handler_path,
                           type(error).__name__, error)
            response = None
        if response is None:
            FAST_ROUTE_REQUESTS.labels(route.handler_path, "django").inc()
            return await self.fallback(scope, replay(body, receive), send)
        FAST_ROUTE_REQUESTS.labels(route.handler_path, "fast").inc()
        await response.send(send)
