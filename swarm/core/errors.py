"""One JSON error shape for the whole API: `{"error", "detail", "field"}`.

Services raise `ApiError` subclasses (or Django's ValidationError); the DRF
exception handler and the plain-Django 404/500 handlers all render through
`error_body()`, so a client never has to parse HTML or guess a shape.
"""
import logging

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from swarm.core.secret_box import SecretUndecryptable

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal with a machine-readable code, a human sentence and the field at fault."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, field: str | None = None, status_code: int | None = None,
                 headers: dict | None = None, extra: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code
        self.field = field
        self.headers = headers or {}
        # Machine-readable facts beside the sentence (a quota's name, value and usage), added to the body.
        self.extra = extra or {}


class NotFound(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApiError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "too_large"


def error_body(code: str, detail: str, field: str | None = None) -> dict:
    """The JSON body of every API error."""
    body = {"error": code, "detail": detail}
    if field:
        body["field"] = field
    return body


def _first_validation_error(detail, path: str = ""):
    """Flatten DRF's nested validation errors to (field, message, code) of the first one."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):  # a ListField's or DictField's child, by index
                return _first_validation_error(value, f"{path}[{key}]")
            field = key if key != "non_field_errors" else ""
            return _first_validation_error(value, f"{path}.{field}".strip(".") if field else path)
    if isinstance(detail, list) and detail:
        if any(isinstance(item, dict) for item in detail):
            # A nested `many=True` serializer: one dict per item, empty for the items that were fine.
            for index, item in enumerate(detail):
                if item:
                    return _first_validation_error(item, f"{path}[{index}]")
        return _first_validation_error(detail[0], path)
    code = getattr(detail, "code", "invalid")
    return path or None, str(detail), code


def json_exception_handler(exc, context):
    """DRF exception handler rendering every error as `{error, detail, field}`."""
    if isinstance(exc, ApiError):
        return Response({**exc.extra, **error_body(exc.code, exc.detail, exc.field)}, status=exc.status_code,
                        headers=exc.headers)
    if isinstance(exc, SecretUndecryptable):
        # The server's keys are at fault, not the request; the message names a row and field, never a value.
        logger.error("%s", exc)
        return Response(error_body("secret_undecryptable", str(exc)), status=500)
    if isinstance(exc, DjangoValidationError):
        field = next(iter(exc.message_dict), None) if hasattr(exc, "error_dict") else None
        message = exc.messages[0] if exc.messages else "Invalid input."
        return Response(error_body("invalid", message, field), status=400)
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "No such object."), status=404)
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        field, message, code = _first_validation_error(exc.detail)
        # DRF's CharField refuses NUL and lone surrogates with codes of its own; the strict input layer's
        # name for that rule is `invalid_text` (swarm/core/inputs.py), whichever layer caught it.
        code = {"required": "missing_field", "null_characters_not_allowed": "invalid_text",
                "surrogate_characters_not_allowed": "invalid_text"}.get(code, code)
        if field:
            message = f"{field}: {message}"
        return Response(error_body(code, message, field), status=400)
    if isinstance(exc, exceptions.APIException):
        codes = {
            exceptions.NotAuthenticated: "not_authenticated",
            exceptions.AuthenticationFailed: "authentication_failed",
            exceptions.PermissionDenied: "permission_denied",
            exceptions.NotFound: "not_found",
            exceptions.MethodNotAllowed: "method_not_allowed",
            exceptions.UnsupportedMediaType: "unsupported_media_type",
            exceptions.ParseError: "parse_error",
            exceptions.Throttled: "throttled",
            exceptions.NotAcceptable: "not_acceptable",
        }
        code = codes.get(type(exc), getattr(exc, "default_code", "error"))
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return Response(error_body(code, str(detail)), status=exc.status_code, headers=headers)
    return None


def api_not_found(request, exception=None):
    """handler404: JSON for API paths, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", f"No API endpoint at {request.path}."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def api_server_error(request):
    """handler500: JSON for API paths, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("server_error", "The server failed; the error was logged."), status=500)
    from django.views.defaults import server_error

    return server_error(request)
