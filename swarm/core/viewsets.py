"""The API's base viewsets: resources on routers, the tenant scope applied once, one page shape, one error shape.

Each app registers its resources on a `rest_framework.routers.SimpleRouter(
trailing_slash=False)` in its `api/urls.py`; verbs are `@action`s. Views
derive from one of:

* `SwarmViewSet` — the caller's `principal`, lists answered a page at a time
  (`swarm.core.pagination.ListPage`), FilterSets (django-filter) for query
  parameters, integer ids in the path that are ASCII digits and fit a bigint,
  a JSON 404 naming the missing object, and the error shape documented on
  every operation (`swarm.core.schema.SwarmAutoSchema`, the default schema). For resources that belong to no tenant
  (the fleet, queues).
* `TenantScopedViewSet` — the same, whose `get_queryset()` applies the tenant
  scope (`queryset.visible_to(self.principal)`, tenancy.scope) to every read
  and every write: another tenant's object is a 404 because it is not in
  the queryset, never because a view remembered to check.

Path parameter patterns (`lookup_value_regex`, `@action(url_path=...)`):
none can match `/`, a NUL or another control character
(`swarm.core.inputs.StrictRequestMiddleware` also refuses those up front).
"""
from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.metadata import SimpleMetadata
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from swarm.core.errors import NotFound
from swarm.core.pagination import ListPage
from swarm.core.permissions import request_principal
from swarm.core.principals import Principal

#: An integer id in a path: ASCII digits only, at most 18 of them, so it always fits a bigint.
ID_PATTERN = r"[0-9]{1,18}"
#: A slug (tenant, workflow), as Django's `slug` path converter.
SLUG_PATTERN = r"[-a-zA-Z0-9_]+"
#: A free-form name (drones, jobs by name or id): anything but `/` and control characters.
NAME_PATTERN = r"[^/\x00-\x1f\x7f]+"
#: How the schema types a path parameter of each pattern (a regex alone would make every id a string).
PATH_PARAMETER_TYPES = {ID_PATTERN: int, SLUG_PATTERN: str, NAME_PATTERN: str}


class ViewMetadata(SimpleMetadata):
    """`OPTIONS` answers name, description, renders and parses, as the API's views always did (no form fields)."""

    def determine_actions(self, request, view):
        return {}


class SwarmViewSet(GenericViewSet):
    """Base of every API resource; see the module docstring."""

    pagination_class = ListPage
    filter_backends = [DjangoFilterBackend]
    lookup_value_regex = ID_PATTERN
    #: The detail of the 404 for a lookup that finds nothing, formatted with the URL's keyword arguments.
    not_found_detail = "No such object."
    metadata_class = ViewMetadata

    @property
    def principal(self) -> Principal | None:
        """The authenticated caller (token or admin-site user)."""
        return request_principal(self.request)

    def get_object(self):
        """The object the URL names, from `get_queryset()` (list filters do not apply), else a JSON 404."""
        lookup_url_kwarg = self.lookup_url_kwarg or self.lookup_field
        found = self.get_queryset().filter(**{self.lookup_field: self.kwargs[lookup_url_kwarg]}).first()
        if found is None:
            raise NotFound(self.not_found_detail.format(**self.kwargs))
        self.check_object_permissions(self.request, found)
        return found

    def page(self, items, serializer_class=None) -> Response:
        """One page `{count, next, previous, results}` of `items` (a queryset or a list)."""
        serializer_class = serializer_class or self.get_serializer_class()
        page = self.paginate_queryset(items)
        return self.get_paginated_response(
            serializer_class(page, many=True, context=self.get_serializer_context()).data)

    def list_page(self) -> Response:
        """The list action's answer: `get_queryset()`, filtered by the FilterSet, one page of it."""
        return self.page(self.filter_queryset(self.get_queryset()))


class TenantScopedViewSet(SwarmViewSet):
    """A resource that belongs to a tenant: `get_queryset()` is scoped to what the caller may see."""

    def get_queryset(self):
        return super().get_queryset().visible_to(self.principal)
