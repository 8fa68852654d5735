"""One shape for every list the API returns: a page `{count, next, previous, results}` (limit/offset).

`GET …?limit=N&offset=M`: `limit` defaults to 100 and is capped at 1,000;
`count` is the total, `next`/`previous` the neighbouring pages' URLs (null at
the ends). A `limit` or `offset` that is not a non-negative integer is a 400
naming it, never silently replaced.

Viewsets answer lists with `SwarmViewSet.page()` / `list_page()` and plain
views with `page_response()`; both bases (swarm/core/viewsets.py,
`ScopedAPIView`) name ListPage as their `pagination_class`, so the OpenAPI
schema (drf-spectacular) shows every `many=True` response as such a page,
with its `limit` and `offset`.
"""
from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

from swarm.core.errors import ApiError
from swarm.core.inputs import query_int

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class ListPage(LimitOffsetPagination):
    """DRF's limit/offset pagination with refusals for malformed parameters."""

    default_limit = DEFAULT_LIMIT
    max_limit = MAX_LIMIT

    def get_limit(self, request):
        limit = query_int(request, self.limit_query_param)
        if limit is None:
            return self.default_limit
        if limit == 0:
            raise ApiError("limit must be at least 1.", code="invalid", field="limit")
        return min(limit, self.max_limit)

    def get_offset(self, request):
        return query_int(request, self.offset_query_param, default=0)


def page_response(request, items, serializer_class, **serializer_kwargs) -> Response:
    """One page of `items` (a queryset or list), serialized with `serializer_class`."""
    paginator = ListPage()
    page = paginator.paginate_queryset(items, request)
    return paginator.get_paginated_response(serializer_class(page, many=True, **serializer_kwargs).data)
