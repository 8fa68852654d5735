"""Event-loop fast paths for the hottest agent requests, with Django as the fallback.

A fleet of 15,000 drones heartbeating every 30 s is 500 requests per second
that each do one SQL statement. Through Django and DRF (URL resolution, nine
middleware, content negotiation, a thread hand-off) that request costs several
times the statement; answered straight on the event loop with an async
connection it costs about as much as the statement. This is the pattern of
GitLab's Workhorse in front of Rails: a thin layer answers the few hot,
simple requests and passes everything else on.

Routes are named, not written out again: a fast route names a URL pattern of
the one URL table (`swarm/urls.py` and the apps' `api/urls.py`), and a
request takes it when `django.urls.resolve(path).url_name` is that name and
the method matches, so a path Django does not serve (a trailing slash) is
never answered here either. The path's converted arguments (`build_id`)
reach the handler as `path_params`.

Before a handler runs, the request passes the checks Django would make
first: a Host that ALLOWED_HOSTS accepts and a whole body no larger than the
route's limit; anything else is Django's (it answers 400, or streams and
judges the body). A handler parses with the same parser as its view
(`builds/protocol.py`, `drones/protocol.py`) and:

* returns a `FastResponse`, which is sent;
* returns None, or raises, *before it has written anything* — Django's view
  then answers the request from scratch (a refusal, the precise 401/403/404,
  a content type that is not JSON: 415 or a form);
* once it may have written (it sets `request.written` before such a call),
  never hands over again: an `ApiError` is sent as its JSON error, anything
  else is a 500 (STYLE rule 13: a retry must never do the work twice). A
  call that raises `NothingWritten` certifies that the database kept none of
  its writes (the statement failed and rolled back), and Django may answer.

    FastRoute("drone-heartbeat", "drones.fastpath.heartbeat", method="POST", max_body=64 * 1024)
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module

from csp.utils import build_policy
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from django.urls import Resolver404, resolve
from prometheus_client import Counter
from rest_framework.exceptions import UnsupportedMediaType

from swarm.core.errors import ApiError, error_body
from swarm.core.inputs import json_loads

logger = logging.getLogger(__name__)

#: Requests on fast routes by how they were answered (`fast`, or `django` when handed to the view),
#: per server process; served on /metrics. django-prometheus counts only the ones Django answered.
FAST_ROUTE_REQUESTS = Counter("swarm_fast_route_requests", "Requests on event-loop fast routes, by answer.",
                              labelnames=["route", "answered_by"])

JSON_HEADERS = [(b"content-type", b"application/json"), (b"vary", b"Accept")]
#: Sent on answers made on the event loop when SWARM_FAST_PATH_HEADER is on (tests say which path answered).
ANSWERED_BY_HEADER = (b"swarm-answered-by", b"event-loop")
#: The paths whose resolution is remembered (a fleet's log routes differ by build id only).
RESOLVE_CACHE_SIZE = 8192


@lru_cache(maxsize=1)
def security_headers() -> tuple[tuple[bytes, bytes], ...]:
    """The headers Django's middleware adds to every response, from the same settings, for event-loop answers.

    SecurityMiddleware (nosniff, Referrer-Policy, Cross-Origin-Opener-Policy),
    XFrameOptionsMiddleware and django-csp's policy (without a nonce: a JSON
    answer runs no script). HSTS depends on the request: `hsts_header`.
    Computed once; a test that changes these settings clears it
    (`setting_changed` below).
    """
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        policy = policy if isinstance(policy, str) else ",".join(policy)
        headers.append((b"referrer-policy", policy.encode("latin-1")))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append((b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode("latin-1")))
    headers.append((b"x-frame-options", settings.X_FRAME_OPTIONS.upper().encode("latin-1")))
    if getattr(settings, "CONTENT_SECURITY_POLICY", None):
        headers.append((b"content-security-policy", build_policy().encode("latin-1")))
    return tuple(headers)


@lru_cache(maxsize=1)
def hsts_header() -> tuple[bytes, bytes] | None:
    """`Strict-Transport-Security` as SecurityMiddleware sends it on a secure request (None when HSTS is off)."""
    if not settings.SECURE_HSTS_SECONDS:
        return None
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return b"strict-transport-security", value.encode("latin-1")


@receiver(setting_changed)
def _headers_follow_settings(**kwargs) -> None:
    security_headers.cache_clear()
    hsts_header.cache_clear()


def request_is_secure(scope) -> bool:
    """Whether Django's `request.is_secure()` would say so: TLS to us, or the trusted proxy header says https."""
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        wanted = name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1")
        value = _header(scope, wanted)
        if value is not None:
            return value.decode("latin-1").split(",", 1)[0].strip() == secure_value
    return scope.get("scheme", "http") == "https"


class NothingWritten(Exception):  # noqa: N818 - a certificate, not a failure kind
    """Raised by a fast-path call whose writes the database did not keep: Django may still answer the request."""


class DeclineToDjango(Exception):  # noqa: N818
    """Raised (or None returned) by a handler before it writes: the view answers the request."""


@dataclass
class FastRequest:
    """What a fast handler sees: method, path, lower-cased headers, the whole body and the path's arguments."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: The converted arguments of the URL pattern (e.g. `build_id`).
    path_params: dict = field(default_factory=dict)
    #: Set by the handler before a call that may write: from then on the request never goes to Django.
    written: bool = False

    def json(self):
        """The body as JSON (None when empty); DeclineToDjango when it is not JSON (the view gives 415 or reads a form)."""
        if not self.body:
            return None
        media_type = self.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise DeclineToDjango(f"content type {media_type or 'none'}")
        return json_loads(self.body)

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

    @classmethod
    def error(cls, error: ApiError) -> FastResponse:
        """The JSON error of an ApiError, as the DRF exception handler renders it."""
        headers = [(name.lower().encode("latin-1"), str(value).encode("latin-1"))
                   for name, value in error.headers.items()]
        return cls(error_body(error.code, error.detail, error.field), status=error.status_code, headers=headers)

    async def send(self, send, *, secure: bool = False) -> None:
        """Send the answer with the headers Django's middleware would add (HSTS on a `secure` request)."""
        extra = [*security_headers()]
        hsts = hsts_header() if secure else None
        if hsts is not None:
            extra.append(hsts)
        if settings.SWARM_FAST_PATH_HEADER:
            extra.append(ANSWERED_BY_HEADER)
        if self.body is None:
            # An empty body says so: without a length uvicorn would answer a 202 in chunked encoding.
            length = [] if self.status in (204, 304) else [(b"content-length", b"0")]
            await send({"type": "http.response.start", "status": self.status,
                        "headers": [*length, *self.headers, *extra]})
            await send({"type": "http.response.body", "body": b""})
            return
        content = json.dumps(self.body, separators=(",", ":")).encode()
        headers = [*JSON_HEADERS, (b"content-length", str(len(content)).encode()), *self.headers, *extra]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class FastRoute:
    """The URL pattern named `url_name`, for `method`, answered by `handler` (dotted path, imported on first use)."""

    def __init__(self, url_name: str, handler: str, *, method: str, max_body: int = 64 * 1024):
        self.url_name = url_name
        self.method = method.upper()
        self.handler_path = handler
        self.max_body = max_body
        self._handler = None

    @property
    def handler(self):
        if self._handler is None:
            module, _, name = self.handler_path.rpartition(".")
            self._handler = getattr(import_module(module), name)
        return self._handler


@lru_cache(maxsize=RESOLVE_CACHE_SIZE)
def _resolved(path: str) -> tuple[str | None, tuple]:
    """(url name, sorted kwargs) of a path in the one URL table; (None, ()) when Django serves no such path."""
    try:
        match = resolve(path)
    except Resolver404:
        return None, ()
    return match.url_name, tuple(sorted(match.kwargs.items()))


def _header(scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return value
    return None


def _declared_length(scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def host_allowed(scope) -> bool:
    """Whether Django's `request.get_host()` would accept the request's Host (else it answers 400)."""
    raw = None
    if settings.USE_X_FORWARDED_HOST:
        raw = _header(scope, b"x-forwarded-host")
    raw = raw or _header(scope, b"host")
    if raw is None:
        return False  # Django falls back to SERVER_NAME; let it judge
    domain, _ = split_domain_port(raw.decode("latin-1"))
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


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
        self.routes = {(route.url_name, route.method): route for route in routes}
        self.methods = {route.method for route in routes}
        self.fallback = fallback

    def route_for(self, scope) -> tuple[FastRoute, dict] | None:
        if scope["type"] != "http" or scope["method"] not in self.methods or not scope["path"].startswith("/api/"):
            return None
        url_name, kwargs = _resolved(scope["path"])
        route = self.routes.get((url_name, scope["method"])) if url_name else None
        return (route, dict(kwargs)) if route is not None else None

    async def __call__(self, scope, receive, send):
        found = self.route_for(scope)
        if found is None:
            return await self.fallback(scope, receive, send)
        route, path_params = found
        length = _declared_length(scope)
        secure = request_is_secure(scope)
        if (length is None or length > route.max_body or not host_allowed(scope)
                or (settings.SECURE_SSL_REDIRECT and not secure)):
            # Chunked or large (Django streams and judges it), a Host Django refuses with its 400, or plain
            # HTTP that SecurityMiddleware redirects to HTTPS.
            return await self.fallback(scope, receive, send)
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
            method=scope["method"], path=scope["path"], body=body, path_params=path_params,
            headers={name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]},
        )
        response = await self._answer(route, request)
        if response is None:
            FAST_ROUTE_REQUESTS.labels(route.handler_path, "django").inc()
            return await self.fallback(scope, replay(body, receive), send)
        FAST_ROUTE_REQUESTS.labels(route.handler_path, "fast").inc()
        await response.send(send, secure=secure)

    @staticmethod
    async def _answer(route: FastRoute, request: FastRequest) -> FastResponse | None:
        """The handler's answer; None when Django must answer (only ever before a write)."""
        try:
            response = await route.handler(request)
        except (DeclineToDjango, ApiError, UnsupportedMediaType, NothingWritten) as declined:
            if not request.written or isinstance(declined, NothingWritten):
                return None  # Django's view answers from scratch, with the same parser
            if isinstance(declined, ApiError):
                return FastResponse.error(declined)
            logger.error("fast route %s declined after writing (%s); answering 500", route.handler_path, declined)
            return _server_error()
        except Exception as error:  # noqa: BLE001 - logged; Django answers only when nothing was written
            if not request.written:
                logger.warning("fast route %s failed before writing (%s: %s); Django answers", route.handler_path,
                               type(error).__name__, error)
                return None
            logger.exception("fast route %s failed after writing; answering 500", route.handler_path)
            return _server_error()
        if response is None and request.written:
            logger.error("fast route %s gave no answer after writing; answering 500", route.handler_path)
            return _server_error()
        return response


def _server_error() -> FastResponse:
    return FastResponse(error_body("server_error", "The server failed after it began the work; the error was "
                                                   "logged."), status=500)
