"""Builds API for users: jobs, builds, artifacts' downloads and queues, as viewsets on the router.

* `/jobs[/<id or name>]` with `trigger` (`JobViewSet`). A name is unique
  within its tenant; for a caller that sees several tenants (an admin) a name
  two tenants use is a 400 `ambiguous` naming each job's unambiguous URL:
* `/tenants/<slug>/jobs[/<name>]` with `trigger` (`TenantJobViewSet`).
* `/builds[/<id>]` with `cancel`, `retry` and `artifacts/<artifact_id>/download`
  (`BuildViewSet`; `?job=&state=&drone=` through `builds.api.filters.BuildFilter`).
* `/queues` (`QueueViewSet`: the build queues belong to no tenant).

Jobs, builds and artifacts are scoped by `TenantScopedViewSet.get_queryset()`.
The agent protocol (claims, state, log appends, artifact uploads) and the
forge webhooks stay plain views in builds/api/views.py; so do
`/builds/<id>/log` and `/builds/<id>/artifacts`, whose URLs the agent shares.
"""
from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.http import FileResponse, HttpResponseRedirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework.decorators import action
from rest_framework.response import Response

from builds import selectors, services
from builds.api.filters import BuildFilter
from builds.api.serializers import (
    BuildDetailSerializer,
    BuildSerializer,
    JobSerializer,
    JobUpdateSerializer,
    JobWriteSerializer,
    QueueSerializer,
    TriggerSerializer,
)
from builds.choices import BuildState, TriggerKind
from builds.models import Queue
from swarm.core.api import error_responses, takes_no_body
from swarm.core.errors import ApiError, NotFound
from swarm.core.viewsets import ID_PATTERN, NAME_PATTERN, SLUG_PATTERN, SwarmViewSet, TenantScopedViewSet
from tenancy.api.viewsets import TenantNestedViewSet
from tenancy.models import Tenant
from tenancy.selectors import tenant_get


def _tenant_for_write(principal, slug: str | None) -> Tenant | None:
    """The tenant a new job belongs to: a bound principal's own; for an unbound one the named tenant, or none."""
    if principal.is_tenant_bound:
        own = Tenant.objects.visible_to(principal).get()
        if slug and slug != own.slug:
            raise NotFound(f"No tenant {slug!r}.")
        return own
    return tenant_get(principal, slug) if slug else None


def _queue_by_name(name: str | None) -> Queue | None:
    if not name:
        return None
    queue = Queue.objects.filter(name=name).first()
    if queue is None:
        raise ApiError(f"queue: no queue named {name!r}", code="invalid", field="queue")
    return queue


class JobTriggerActions:
    """The `trigger` verb of a job, however the URL names the job."""

    @extend_schema(request=TriggerSerializer, responses={201: BuildSerializer, **error_responses(400, 404, 409)},
                   summary="Trigger a build of a job")
    @action(detail=True, methods=["post"])
    def trigger(self, request, **kwargs):
        """`POST …/trigger {branch, commit_sha, params}` → 201 with the queued build.

        The job is `/jobs/<id or name>` or `/tenants/<slug>/jobs/<name>`.
        """
        job = self.get_object()
        body = TriggerSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        build = services.build_trigger(
            job=job, trigger=TriggerKind.API, triggered_by=str(self.principal), branch=data.get("branch", ""),
            commit_sha=data.get("commit_sha") or data.get("sha") or "", params=data.get("params"),
        )
        return Response(BuildSerializer(build).data, status=201)


class JobViewSet(JobTriggerActions, TenantScopedViewSet):
    """`/jobs`: list, create; `/jobs/<id or name>`: describe, change, delete, trigger."""

    queryset = selectors.job_rows()
    serializer_class = JobSerializer
    lookup_url_kwarg = "job_id"
    lookup_value_regex = NAME_PATTERN

    def get_object(self):
        return selectors.job_resolve(self.get_queryset(), self.kwargs["job_id"])

    @extend_schema(responses={200: JobSerializer(many=True), **error_responses(400)}, summary="List jobs")
    def list(self, request):
        """`GET /jobs`: the jobs the caller sees."""
        return self.list_page()

    @extend_schema(request=JobWriteSerializer, responses={201: JobSerializer, **error_responses(400, 404, 409)},
                   summary="Create a job")
    def create(self, request):
        """`POST /jobs`: a new job (in the caller's tenant, or the one an unbound token names)."""
        body = JobWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        with transaction.atomic():
            job = services.job_create(
                name=data["name"], scm_url=data["scm_url"], build_config=data["build_config"],
                tenant=_tenant_for_write(self.principal, data.get("tenant")), queue=_queue_by_name(data.get("queue")),
                default_branch=data.get("default_branch", ""), branch_filter=data.get("branch_filter", ""),
                description=data.get("description", ""), scm_credential=data.get("scm_credential", ""),
                secrets=data.get("secrets"), webhook_secret=data.get("webhook_secret", ""), build_tags=data.get("build_tags", False),
                enabled=data.get("enabled", True), actor=self.principal,
            )
        return Response(JobSerializer(job).data, status=201)

    @extend_schema(responses={200: JobSerializer, **error_responses(400, 404)}, summary="Describe a job",
                   description="By id, or by name; 400 `ambiguous` when the caller sees several jobs of that name "
                               "(in several tenants): the detail names `/tenants/<slug>/jobs/<name>` for each.")
    def retrieve(self, request, job_id: str):
        """`GET /jobs/<id or name>`."""
        return Response(JobSerializer(self.get_object()).data)

    @extend_schema(request=JobUpdateSerializer(partial=True),
                   responses={200: JobSerializer, **error_responses(400, 404)}, summary="Change a job")
    def partial_update(self, request, job_id: str):
        """`PATCH /jobs/<id or name>`."""
        job = self.get_object()
        body = JobUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        changes = dict(body.validated_data)
        if "queue" in changes:
            changes["queue"] = _queue_by_name(changes["queue"])
        with transaction.atomic():
            job = services.job_update(job=job, actor=self.principal, **changes)
        return Response(JobSerializer(job).data)

    @extend_schema(responses={204: None, **error_responses(404, 409)}, summary="Delete a job")
    @takes_no_body
    def destroy(self, request, job_id: str):
        """`DELETE /jobs/<id or name>`."""
        services.job_delete(job=self.get_object(), actor=self.principal)
        return Response(status=204)


@extend_schema_view(list=extend_schema(responses={200: JobSerializer(many=True), **error_responses(400, 404)},
                                       summary="List a tenant's jobs",
                                       description="`GET /tenants/<slug>/jobs`: a tenant's jobs."))
class TenantJobViewSet(JobTriggerActions, TenantNestedViewSet):
    """`/tenants/<slug>/jobs[/<name>]`: a tenant's jobs, each named without ambiguity, and their trigger."""

    queryset = selectors.job_rows()
    serializer_class = JobSerializer
    lookup_field = "name"
    lookup_url_kwarg = "name"
    lookup_value_regex = SLUG_PATTERN
    not_found_detail = "No job {slug}/{name}."

    @extend_schema(responses={200: JobSerializer, **error_responses(404)},
                   summary="Describe a job by tenant and name")
    def retrieve(self, request, slug: str, name: str):
        """`GET /tenants/<slug>/jobs/<name>`: a job by tenant and name, never ambiguous."""
        return Response(JobSerializer(self.get_object()).data)


class BuildViewSet(TenantScopedViewSet):
    """`/builds[?job=&state=&drone=]`, `/builds/<id>` with its attempts, and its verbs."""

    queryset = selectors.build_rows()
    serializer_class = BuildSerializer
    filterset_class = BuildFilter
    lookup_url_kwarg = "build_id"
    not_found_detail = "No build {build_id}."

    @extend_schema(responses={200: BuildSerializer(many=True), **error_responses(400)}, summary="List builds")
    def list(self, request):
        """`GET /builds?job=&state=&drone=`."""
        return self.list_page()

    @extend_schema(responses={200: BuildDetailSerializer, **error_responses(404)}, summary="Describe a build")
    def retrieve(self, request, build_id: str):
        """`GET /builds/<id>` with its attempts."""
        return Response(BuildDetailSerializer(self.get_object()).data)

    @extend_schema(request=None, responses={200: BuildSerializer, 202: BuildSerializer, **error_responses(404, 409)},
                   summary="Cancel a build",
                   description="202 while the drone stops it (`canceling`), 200 when it was still pending.")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def cancel(self, request, build_id: str):
        """`POST /builds/<id>/cancel` → 202 (the drone stops it) or 200 when it was still pending."""
        build = services.build_cancel(build=self.get_object(), actor=self.principal)
        return Response(BuildSerializer(build).data, status=202 if build.state == BuildState.CANCELING else 200)

    @extend_schema(request=None, responses={201: BuildSerializer, **error_responses(404, 409)},
                   summary="Retry a build")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def retry(self, request, build_id: str):
        """`POST /builds/<id>/retry` → 201 with the new build."""
        build = services.build_retry(build=self.get_object(), actor=self.principal)
        return Response(BuildSerializer(build).data, status=201)

    @extend_schema(parameters=[OpenApiParameter("artifact_id", int, OpenApiParameter.PATH)],
                   responses={200: OpenApiTypes.BINARY, 302: OpenApiResponse(description="Presigned S3 URL"),
                              **error_responses(404)}, summary="Download an artifact")
    @action(detail=True, methods=["get"], url_path=rf"artifacts/(?P<artifact_id>{ID_PATTERN})/download",
            url_name="artifact-download")
    def artifact_download(self, request, build_id: str, artifact_id: str):
        """`GET /builds/<id>/artifacts/<aid>/download`: a redirect to S3, or the bytes."""
        from bundles.blobstore import BlobStore

        build = self.get_object()
        artifact = selectors.build_artifacts(build).filter(pk=int(artifact_id)).first()
        if artifact is None:
            raise NotFound(f"Build {build.pk} has no artifact {artifact_id}.")
        store = BlobStore()
        if store.is_s3:
            url = store.s3_client().generate_presigned_url(
                "get_object", Params={"Bucket": store.storage.bucket_name, "Key": artifact.storage_key,
                                      "ResponseContentDisposition": f'attachment; filename="{artifact.name}"'},
                ExpiresIn=settings.SWARM_DOWNLOAD_URL_TTL)
            return HttpResponseRedirect(url)
        response = FileResponse(store.open(artifact.storage_key), as_attachment=True, filename=artifact.name)
        response["X-Artifact-Sha256"] = artifact.sha256
        return response


class QueueViewSet(SwarmViewSet):
    """`GET /queues`: the build queues (shared by every tenant)."""

    queryset = Queue.objects.all()
    serializer_class = QueueSerializer

    @extend_schema(responses={200: QueueSerializer(many=True), **error_responses(400)}, summary="List build queues")
    def list(self, request):
        """`GET /queues`."""
        return self.list_page()
