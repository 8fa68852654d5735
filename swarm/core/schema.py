"""OpenAPI descriptions of Swarm's authentication schemes (drf-spectacular extensions).

drf-spectacular cannot guess how a custom authentication class works; these
extensions name the bearer token and the admin-session scheme so the schema
documents both and generates without warnings.
"""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


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
