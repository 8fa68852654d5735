"""What drf-spectacular cannot see: Swarm's authentication schemes, and the errors every operation can answer.

drf-spectacular cannot guess how a custom authentication class works; these
extensions name the bearer token and the admin-session scheme so the schema
documents both and generates without warnings.

`SwarmAutoSchema` (the DEFAULT_SCHEMA_CLASS, for views and viewsets alike)
adds to each operation the errors that come from layers below its view, so
that no answer is undocumented: 400 everywhere (the strict input layer
refuses control characters in any path or query, swarm/core/inputs.py), 401
and 403 (authentication and scopes), 404 wherever the path has a parameter
(no such object, or a segment the route cannot match), and 415 wherever a
body goes through DRF's parsers or is refused outright (`takes_no_body`). It
also types path parameters by their pattern (swarm/core/viewsets.py: an id
is an integer, a slug or a name a string).
"""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import analyze_named_regex_pattern
from drf_spectacular.utils import OpenApiParameter
from rest_framework.settings import api_settings

#: Request media types DRF's parsers read (anything else is a 415 where they run).
PARSED_MEDIA_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded", "multipart/form-data"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SwarmAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, with the error answers of the layers below each view documented."""

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        # Not get_response_serializers(): `@extend_schema(responses=...)` replaces that one outright.
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        from swarm.core.api import ErrorSerializer

        error = self.resolve_serializer(ErrorSerializer, "response")
        for status in sorted(self._layer_error_statuses()):
            operation["responses"].setdefault(str(status), {
                "content": {"application/json": {"schema": error.ref}}, "description": ""})
        return operation

    def get_override_parameters(self):
        """Path parameters typed by their pattern: an id is an integer, a slug or a name a string."""
        from swarm.core.viewsets import PATH_PARAMETER_TYPES

        declared = list(super().get_override_parameters())
        named = {parameter.name for parameter in declared if isinstance(parameter, OpenApiParameter)}
        for name, pattern in analyze_named_regex_pattern(self.path_regex).items():
            if name == "pk" and api_settings.SCHEMA_COERCE_PATH_PK:
                name = "id"  # the path says {id} for a `pk` lookup, as spectacular writes it
            kind = PATH_PARAMETER_TYPES.get(pattern)
            if kind is not None and name not in named:
                declared.append(OpenApiParameter(name, kind, OpenApiParameter.PATH))
        return declared

    def _layer_error_statuses(self) -> set[int]:
        statuses = {400, 401, 403}
        if "{" in self.path:
            statuses.add(404)
        if self.method in WRITE_METHODS and self._body_type_is_checked():
            statuses.add(415)
        return statuses

    def _body_type_is_checked(self) -> bool:
        handlers = (getattr(self.view, self.method.lower(), None),
                    getattr(self.view, getattr(self.view, "action", None) or "", None))  # a viewset's action
        if any(getattr(handler, "takes_no_body", False) for handler in handlers):
            return True
        request = self.get_request_serializer()
        if request is None:
            return False
        if isinstance(request, dict):
            return set(request) <= PARSED_MEDIA_TYPES
        return True


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer swm_<prefix>_<secret>`."""

    target_class = "swarm.core.authentication.BearerTokenAuthentication"
    name = "bearerToken"
    priority = 1

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A Swarm API token (`manage.py issue_token` or the admin). Scopes: admin, engine, "
                           "read, drone, execution; tenant-bound tokens see only their tenant.",
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):
    """The admin site's session cookie: staff users act with admin scope."""

    target_class = "swarm.core.authentication.StaffSessionAuthentication"
    name = "adminSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid",
                "description": "A logged-in staff user of /admin/ (admin scope; CSRF token required for writes)."}
