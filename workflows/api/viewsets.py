"""Workflow registry and executions API: resources on the router, verbs as actions.

* `/tenants/<slug>/workflows[/<workflow_slug>]` — a tenant's workflows (`TenantWorkflowViewSet`).
* `/workflows/<id>` with `versions`, `active`, `versions/<version_id>/activate`,
  `rollback` and `executions` (`WorkflowViewSet`).
* `/executions/<id>` with `cancel` (`ExecutionViewSet`).

Every queryset is scoped by `TenantScopedViewSet.get_queryset()`: another
tenant's workflow, version or execution is a 404. Bundle uploads, the event
report of the boot script and the metadata service stay plain views
(workflows/api/views.py, execution_views.py).
"""
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from swarm.core.api import error_responses, takes_no_body
from swarm.core.viewsets import ID_PATTERN, SLUG_PATTERN, TenantScopedViewSet
from tenancy.api.viewsets import TenantNestedViewSet
from workflows import execution_selectors, selectors, services
from workflows.api.execution_serializers import ExecutionSerializer, ExecutionSpawnSerializer
from workflows.api.serializers import (
    ActiveVersionSerializer,
    WorkflowCreateSerializer,
    WorkflowSerializer,
    WorkflowVersionSerializer,
)

@extend_schema_view(list=extend_schema(responses={200: WorkflowSerializer(many=True), **error_responses(400, 404)},
                                       summary="List a tenant's workflows",
                                       description="`GET /api/v1/tenants/<slug>/workflows`: a tenant's workflows."))
class TenantWorkflowViewSet(TenantNestedViewSet):
    """A tenant's workflows: `/tenants/<slug>/workflows` and `/tenants/<slug>/workflows/<workflow_slug>`."""

    queryset = selectors.workflow_rows()
    serializer_class = WorkflowSerializer
    lookup_field = "slug"
    lookup_url_kwarg = "workflow_slug"
    lookup_value_regex = SLUG_PATTERN
    not_found_detail = "No workflow {slug}/{workflow_slug}."

    @extend_schema(request=WorkflowCreateSerializer,
                   responses={201: WorkflowSerializer, **error_responses(400, 404, 409)}, summary="Create a workflow")
    def create(self, request, slug: str):
        """`POST /api/v1/tenants/<slug>/workflows`: a new workflow of the tenant."""
        tenant = self.url_tenant()
        serializer = WorkflowCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        workflow = services.workflow_create(principal=self.principal, tenant=tenant, **serializer.validated_data)
        return Response(WorkflowSerializer(workflow).data, status=201)

    @extend_schema(responses={200: WorkflowSerializer, **error_responses(404)},
                   summary="Describe a workflow by tenant and workflow slug")
    def retrieve(self, request, slug: str, workflow_slug: str):
        """`GET /api/v1/tenants/<slug>/workflows/<workflow_slug>`: a workflow by its slugs (what swarmctl resolves)."""
        return Response(WorkflowSerializer(self.get_object()).data)


class WorkflowViewSet(TenantScopedViewSet):
    """`/workflows/<id>`: a workflow, its versions, what to boot, activation, rollback and executions."""

    queryset = selectors.workflow_rows()
    serializer_class = WorkflowSerializer
    lookup_url_kwarg = "workflow_id"
    not_found_detail = "No workflow {workflow_id}."

    @extend_schema(responses={200: WorkflowSerializer, **error_responses(404)}, summary="Describe a workflow")
    def retrieve(self, request, workflow_id: str):
        """`GET /api/v1/workflows/<id>`."""
        return Response(WorkflowSerializer(self.get_object()).data)

    @extend_schema(responses={200: WorkflowVersionSerializer(many=True), **error_responses(400, 404)},
                   summary="List a workflow's versions, newest first")
    @action(detail=True, methods=["get"])
    def versions(self, request, workflow_id: str):
        """`GET /api/v1/workflows/<id>/versions`: the version history."""
        return self.page(selectors.version_list(self.get_object()), WorkflowVersionSerializer)

    @extend_schema(responses={200: ActiveVersionSerializer, **error_responses(404)},
                   summary="What to boot: the active version's URL, hash and limits",
                   description="404 `no_active_version` when no version of the workflow is active.")
    @action(detail=True, methods=["get"])
    def active(self, request, workflow_id: str):
        return Response(ActiveVersionSerializer(selectors.active_version_describe(self.get_object())).data)

    @extend_schema(request=None, responses={200: WorkflowVersionSerializer, **error_responses(404)},
                   parameters=[OpenApiParameter("version_id", int, OpenApiParameter.PATH)],
                   summary="Activate a version (the previously active one is deactivated)")
    @action(detail=True, methods=["post"], url_path=rf"versions/(?P<version_id>{ID_PATTERN})/activate",
            url_name="version-activate")
    @takes_no_body
    def activate(self, request, workflow_id: str, version_id: str):
        """`POST /api/v1/workflows/<id>/versions/<version_id>/activate`."""
        workflow = self.get_object()
        version = selectors.version_get(workflow, int(version_id))
        version = services.workflow_version_activate(workflow=workflow, version=version, actor=self.principal)
        return Response(WorkflowVersionSerializer(version).data)

    @extend_schema(request=None, responses={200: WorkflowVersionSerializer, **error_responses(404, 409)},
                   summary="Re-activate the previously active version",
                   description="409 `no_previous_version` when there is nothing to roll back to. Rolling back "
                               "twice returns to the version rolled away from.")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def rollback(self, request, workflow_id: str):
        version = services.workflow_rollback(workflow=self.get_object(), actor=self.principal)
        return Response(WorkflowVersionSerializer(version).data)

    @extend_schema(responses={200: ExecutionSerializer(many=True), **error_responses(400, 404)},
                   summary="List a workflow's executions (newest first)")
    @action(detail=True, methods=["get"])
    def executions(self, request, workflow_id: str):
        """`GET /api/v1/workflows/<id>/executions`: that workflow's executions."""
        workflow = self.get_object()
        executions = execution_selectors.execution_queryset(self.principal).filter(workflow=workflow)
        return self.page(executions, ExecutionSerializer)

    @extend_schema(request=ExecutionSpawnSerializer,
                   responses={202: ExecutionSerializer, **error_responses(400, 404, 409, 422)},
                   summary="Spawn an execution of the active version")
    @executions.mapping.post
    def spawn(self, request, workflow_id: str):
        """`POST /api/v1/workflows/<id>/executions`: spawn the active version → 202 with the execution."""
        workflow = self.get_object()
        serializer = ExecutionSpawnSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        execution = services.execution_spawn(
            principal=self.principal, workflow=workflow, env=serializer.validated_data["env"],
            inputs=serializer.validated_data["inputs"], runtime=serializer.validated_data.get("runtime"),
            labels=serializer.validated_data.get("labels"),
        )
        execution = execution_selectors.execution_get(self.principal, execution.pk)
        body = ExecutionSerializer(execution, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class ExecutionViewSet(TenantScopedViewSet):
    """`/executions/<id>` and its `cancel`; the event tail shares its URL with the boot script's report (a view)."""

    queryset = execution_selectors.execution_rows()
    serializer_class = ExecutionSerializer
    lookup_url_kwarg = "execution_id"
    not_found_detail = "No execution {execution_id}."

    @extend_schema(responses={200: ExecutionSerializer, **error_responses(404)}, summary="Describe an execution")
    def retrieve(self, request, execution_id: str):
        """`GET /api/v1/executions/<id>`."""
        return Response(ExecutionSerializer(self.get_object(), context={"request": request}).data)

    @extend_schema(request=None, responses={202: ExecutionSerializer, **error_responses(404, 409)},
                   summary="Cancel an execution (kills its whole process group)")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def cancel(self, request, execution_id: str):
        """`POST /api/v1/executions/<id>/cancel` → 202 with the execution."""
        execution = services.execution_cancel(principal=self.principal, execution=self.get_object())
        execution = self.get_queryset().get(pk=execution.pk)
        return Response(ExecutionSerializer(execution, context={"request": request}).data,
                        status=status.HTTP_202_ACCEPTED)
