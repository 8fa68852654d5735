"""The strict input layer: JSON bodies, integers and text from the request, checked once, the same way everywhere.

Every API view (through `StrictJSONParser`, `StrictRequestMiddleware` and
the helpers below) and every event-loop fast path (through `json_loads`)
reads its input here, so a malformed request is a 4xx JSON error naming
what is wrong, never a 500 from deep inside (a `RecursionError`, PostgreSQL
refusing a NUL, `int()` choking on `²`):

* JSON is UTF-8, nests at most SWARM_JSON_MAX_DEPTH levels, has no NaN or
  Infinity, and none of its strings (keys included) holds a NUL or a lone
  surrogate — PostgreSQL can store neither, and no client means to send
  them. The error's `field` is the JSON path of the offending value
  (`metrics.cpu`, `events[3].message`).
* Integers are ASCII digits only (`str.isdigit()` also accepts `²` and `٣`),
  range-checked (64-bit by default, as the database stores them).
* Text from the path and the query string holds no NUL or other control
  character (`StrictRequestMiddleware`).

    value = json_loads(body)                                   # or raises ApiError
    offset = query_int(request, "offset", default=0)
    attempt = header_int(request, "Build-Attempt", minimum=1, maximum=MAX_INT32)
"""
from __future__ import annotations

import json
import re

from django.conf import settings
from django.http import JsonResponse
from rest_framework.parsers import JSONParser

from swarm.core.errors import ApiError, error_body

#: The largest values the database's integer columns hold.
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1

_INTEGER = re.compile(r"-?[0-9]+", re.ASCII)
#: The longest integer text worth parsing: 19 digits is already past 2^63.
_MAX_INTEGER_DIGITS = 20
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def max_json_depth() -> int:
    """How deep JSON may nest (SWARM_JSON_MAX_DEPTH)."""
    return int(getattr(settings, "SWARM_JSON_MAX_DEPTH", 64))


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _child_path(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored (a NUL, a lone surrogate), or None when it can."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    if _SURROGATE.search(value):
        return "contains a lone UTF-16 surrogate, which is not text"
    return None


def check_text(value: str, *, field: str) -> str:
    """`value` when it can be stored as text; else a 400 naming `field`."""
    problem = text_problem(value)
    if problem:
        raise ApiError(f"{field}: {problem}.", code="invalid_text", field=field)
    return value


def check_json_value(value, *, max_depth: int | None = None, path: str = ""):
    """Walk a decoded JSON value: raise a 400 for nesting past the limit or text that cannot be stored.

    Iterative, so a hostile document cannot exhaust the stack here either.
    Returns `value` unchanged.
    """
    limit = max_json_depth() if max_depth is None else max_depth
    pending = [(value, path, 1)]
    while pending:
        item, item_path, depth = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise ApiError(f"{item_path or 'body'}: {problem}.", code="invalid_text", field=item_path or None)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            raise ApiError(f"{item_path or 'body'}: JSON nests deeper than {limit} levels.", code="too_deep",
                           field=item_path or None)
        if isinstance(item, dict):
            for key, child in item.items():
                problem = text_problem(key)
                if problem:
                    # The answer names the key, and a lone surrogate cannot be written out as UTF-8:
                    # it is shown escaped (`k\\ud800`).
                    shown = _child_path(item_path, key.encode("utf-8", "backslashreplace").decode("utf-8"))
                    raise ApiError(f"{shown}: the key {problem}.", code="invalid_text", field=shown)
                child_path = _child_path(item_path, key)
                pending.append((child, child_path, depth + 1))
        else:
            pending.extend((child, _child_path(item_path, index), depth + 1) for index, child in enumerate(item))
    return value


def json_loads(data: bytes | str, *, max_depth: int | None = None, path: str = ""):
    """Decode a JSON request body strictly; raises ApiError (400) naming what is wrong.

    `path` names where the JSON sits when it is one field of a larger request
    (a form field holding JSON): the errors' `field` then starts with it.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ApiError(f"The body is not UTF-8 (byte {error.start}).", code="parse_error") from None
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise ApiError(f"{path or 'The JSON body'}: nests deeper than {max_depth or max_json_depth()} levels.",
                       code="too_deep", field=path or None) from None
    except ValueError as error:
        raise ApiError(f"The body is not valid JSON: {error}.", code="parse_error") from None
    return check_json_value(value, max_depth=max_depth, path=path)


class StrictJSONParser(JSONParser):
    """DRF's JSON parser on `json_loads`: deep, NUL-carrying or surrogate-carrying bodies are a 400."""

    def parse(self, stream, media_type=None, parser_context=None):
        return json_loads(stream.read() if stream is not None else b"")


def parse_int(raw, *, field: str, minimum: int | None = 0, maximum: int = MAX_INT64) -> int:
    """An integer from request text: ASCII digits (and a sign when `minimum` allows), within range, or a 400."""
    text = raw
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ApiError(f"{field} must be an integer.", code="invalid", field=field)
    if isinstance(text, str):
        if len(text) > _MAX_INTEGER_DIGITS or not _INTEGER.fullmatch(text):
            expected = "a non-negative integer" if minimum is not None and minimum >= 0 else "an integer"
            raise ApiError(f"{field} must be {expected} written in ASCII digits, not {text[:24]!r}.",
                           code="invalid", field=field)
        value = int(text)
    else:
        value = text
    if minimum is not None and value < minimum:
        raise ApiError(f"{field} must be at least {minimum}.", code="invalid", field=field)
    if value > maximum:
        raise ApiError(f"{field} must be at most {maximum}.", code="invalid", field=field)
    return value


def query_int(request, name: str, *, default: int | None = None, minimum: int | None = 0,
              maximum: int = MAX_INT64) -> int | None:
    """An integer query parameter (`default` when absent or empty)."""
    raw = request.query_params.get(name) if hasattr(request, "query_params") else request.GET.get(name)
    if raw is None or raw == "":
        return default
    return parse_int(raw, field=name, minimum=minimum, maximum=maximum)


def header_int(request, name: str, *, default: int | None = None, minimum: int | None = 0,
               maximum: int = MAX_INT64) -> int | None:
    """An integer request header (`default` when absent or empty)."""
    raw = request.headers.get(name)
    if raw is None or raw.strip() == "":
        return default
    # Whitespace around a header value is not part of it (RFC 9110 §5.5).
    return parse_int(raw.strip(), field=name, minimum=minimum, maximum=maximum)


def _control_problem(value: str) -> str | None:
    if _CONTROL.search(value):
        return "contains a control character (NUL, newline, escape, …)"
    return text_problem(value)


class StrictRequestMiddleware:
    """Refuse API requests whose path or query string carries a NUL or another control character.

    Such text reaches the database as a filter value (`?drone=%00`,
    `/jobs/a%00b`), where PostgreSQL refuses it with an error the view never
    expected. Refused up front with a 400 naming the parameter, before any
    view runs.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/"):
            refusal = self._refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)

    @staticmethod
    def _refusal(request) -> JsonResponse | None:
        problem = _control_problem(request.path)
        if problem:
            return JsonResponse(error_body("invalid_path", f"The request path {problem}.", "path"), status=400)
        for name, values in request.GET.lists():
            for text in (name, *values):
                problem = _control_problem(text)
                if problem:
                    field = name if _control_problem(name) is None else "query"
                    return JsonResponse(error_body("invalid", f"Query parameter {field!r} {problem}.", field),
                                        status=400)
        return None
