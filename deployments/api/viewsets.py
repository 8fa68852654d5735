"""The deployment manager's API: catalogs, scenario analyses, profiles and their verbs, the manifest schema.

* `/catalogs[/<id>]` — `POST` a `.tar.gz` (multipart, streamed through the bundle store's upload
  handler and safety rules) → 201/200 with the snapshot, or `{git_url, ref}` (JSON) → 202 with the
  `/catalog-fetches/<id>` to poll (cloned on the worker).
* `/scenarios/<name>/analysis?snapshot=&tier=&swap=a=b` — the (cached) analysis; a cycle is a 422 naming it.
* `/profiles[/<id>]` with `versions`, `diff?from=&to=`, `swap`, `set`, `secrets-plan?tier=` and `manifest`.
* `/schemas/bundle-manifest-v0.1.json` and `/manifests/validate`.

Every call goes to one function of `deployments.services` / `deployments.selectors` (docs/deployments.md,
"What phase 2 adds"); a refusal of the domain core is answered with its structured details
(`DeploymentError.as_dict()`: the cycle, each infrastructure secret and its fixes, each schema error).
Catalogs, fetches and profiles are scoped by `TenantScopedViewSet.get_queryset()`.
"""
from __future__ import annotations

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from bundles.api.uploads import InspectedUploadMixin
from bundles.upload import BUNDLE_FIELD, ReceivedBundle
from deployments import selectors, services
from deployments.api import serializers as s
from deployments.errors import DeploymentError
from deployments.manifest import SCHEMA_NAME, canonical_sha256, manifest_schema, validate_manifest
from deployments.models import CatalogFetch, CatalogSnapshot, DeploymentProfile, PackageRun
from deployments import packaging
from deployments.tiers import parse_tier
from swarm.core.api import ScopedAPIView, error_responses, takes_no_body
from swarm.core.errors import ApiError
from swarm.core.inputs import StrictJSONParser
from swarm.core.principals import READ_SCOPES
from swarm.core.serializers import refuse_unknown_fields
from swarm.core.viewsets import NAME_PATTERN, SwarmViewSet, TenantScopedViewSet
from tenancy.models import Tenant
from tenancy.selectors import tenant_get


class DeploymentErrors:
    """Answer a refusal of the domain core with its structured details, not only `{error, detail, field}`."""

    def handle_exception(self, exc):
        if isinstance(exc, DeploymentError):
            return Response(exc.as_dict(), status=exc.status_code, headers=exc.headers)
        return super().handle_exception(exc)


def write_tenant(principal, slug: str | None, *, required: bool) -> Tenant | None:
    """The tenant a write belongs to: a bound token's own (naming another is a 404), else the one named."""
    if principal.is_tenant_bound:
        own = Tenant.objects.visible_to(principal).get()
        if slug and slug != own.slug:
            tenant_get(principal, slug)  # a 404 naming it, as for any tenant the token does not see
        return own
    if slug:
        return tenant_get(principal, slug)
    if required:
        raise ApiError("tenant: a token bound to no tenant names the tenant (its slug) the profile belongs to.",
                       code="missing_field", field="tenant")
    return None


def _strict_flag(value) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


class CatalogViewSet(DeploymentErrors, InspectedUploadMixin, TenantScopedViewSet):
    """`/catalogs`: import (upload or git) and list snapshots; `/catalogs/<id>`: a snapshot, its entries and problems."""

    queryset = CatalogSnapshot.objects.select_related("bundle")
    serializer_class = s.CatalogSnapshotSerializer
    lookup_url_kwarg = "catalog_id"
    not_found_detail = "No catalog snapshot {catalog_id}."
    upload_handler = None

    def _is_upload(self, request) -> bool:
        return self.action == "create" and request.content_type.startswith("multipart/form-data")

    def initial(self, request, *args, **kwargs):
        if self._is_upload(request):
            # Installed before authentication, as on POST /bundles: the parser streams into the blob store.
            self.upload_handler = self.install_upload_handler(
                request, declared_sha256=request.query_params.get("sha256"))
        super().initial(request, *args, **kwargs)
        if self.upload_handler is not None:
            self.take_inspection_slot(request, self.upload_handler)

    def get_parsers(self):
        if getattr(self, "action", None) == "create" or self.request is None:
            return [MultiPartParser(), StrictJSONParser()]
        return super().get_parsers()

    @extend_schema(responses={200: s.CatalogSnapshotSerializer(many=True), **error_responses(400)},
                   summary="List catalog snapshots")
    def list(self, request):
        """`GET /catalogs`: the snapshots the caller's tenant imported (every one for an unbound token)."""
        return self.list_page()

    @extend_schema(responses={200: s.CatalogDetailSerializer, **error_responses(404)},
                   summary="Show a catalog snapshot, its entries and the problems of its files")
    def retrieve(self, request, catalog_id: str):
        """`GET /catalogs/<id>`."""
        snapshot = self.get_object()
        context = {"entries": selectors.snapshot_entries(snapshot=snapshot)}
        return Response(s.CatalogDetailSerializer(snapshot, context=context).data)

    @extend_schema(
        request={"multipart/form-data": s.CatalogUploadFormSerializer, "application/json": s.CatalogGitSerializer},
        responses={201: s.CatalogImportSerializer, 200: s.CatalogImportSerializer,
                   202: s.CatalogFetchAcceptedSerializer, **error_responses(400, 404, 413, 415)},
        summary="Import a catalog: a .tar.gz upload, or a git URL and ref cloned on the worker",
        description="Multipart with the tree as `bundle` (.tar.gz; the bundle store's safety rules refuse the whole "
                    "archive on a hostile member): 201 with a new snapshot, 200 when the tree already is one "
                    "(`created: false`); files with problems are reported per file (path, JSON pointer, message) "
                    "and become invalid entries. JSON `{git_url, ref}`: 202 with the fetch to poll.")
    def create(self, request):
        """`POST /catalogs`."""
        if not self._is_upload(request):
            body = s.CatalogGitSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            data = body.validated_data
            fetch = services.catalog_fetch_request(
                git_url=data["git_url"], ref=data["ref"], strict=data["strict"], actor=self.principal,
                tenant=write_tenant(self.principal, data.get("tenant"), required=False))
            url = reverse("catalog-fetch-detail", kwargs={"fetch_id": fetch.pk})
            return Response({"fetch_id": fetch.pk, "status": fetch.state, "url": url}, status=202,
                            headers={"Location": url})
        try:
            refuse_unknown_fields(request.data, s.CatalogUploadFormSerializer())
            received = request.FILES.get(BUNDLE_FIELD)
            if not isinstance(received, ReceivedBundle):
                raise ApiError("Attach the catalog .tar.gz as the 'bundle' file field (or send JSON {git_url, ref}).",
                               code="missing_field", field=BUNDLE_FIELD)
            tenant = write_tenant(self.principal, request.data.get("tenant"), required=False)
            self.upload_handler.received = None  # ownership passes to the service
            result = services.catalog_import_upload(
                received=received, actor=self.principal, tenant=tenant, strict=_strict_flag(request.data.get("strict")),
                declared_sha256=(request.data.get("sha256") or "").lower() or None)
        finally:
            self.upload_handler.discard()
        body = {"snapshot": result.snapshot, "created": result.created, "problems": result.problems}
        return Response(s.CatalogImportSerializer(body).data, status=201 if result.created else 200)


class CatalogFetchViewSet(TenantScopedViewSet):
    """`/catalog-fetches[/<id>]`: git imports and where each stands."""

    queryset = CatalogFetch.objects.select_related("tenant", "snapshot__bundle")
    serializer_class = s.CatalogFetchSerializer
    lookup_url_kwarg = "fetch_id"
    not_found_detail = "No catalog fetch {fetch_id}."

    @extend_schema(responses={200: s.CatalogFetchSerializer(many=True), **error_responses(400)},
                   summary="List git catalog imports")
    def list(self, request):
        """`GET /catalog-fetches`."""
        return self.list_page()

    @extend_schema(responses={200: s.CatalogFetchSerializer, **error_responses(404)},
                   summary="Show a git catalog import")
    def retrieve(self, request, fetch_id: str):
        """`GET /catalog-fetches/<id>`: queued, running, succeeded (its snapshot) or failed (the reason)."""
        return Response(s.CatalogFetchSerializer(self.get_object()).data)


class AnalysisQuerySerializer(s.serializers.Serializer):
    snapshot = s.serializers.RegexField(s.SHA256_PATTERN, help_text="The catalog snapshot's sha256.")
    tier = s.serializers.CharField(required=False, max_length=32)
    swap = s.serializers.ListField(child=s.serializers.RegexField(r"^[^=]{1,100}=[^=]{1,100}$"), required=False,
                                   help_text="original=replacement, repeated")


class ScenarioViewSet(DeploymentErrors, SwarmViewSet):
    """`/scenarios/<name>/analysis`: a scenario of a snapshot the caller sees, analysed (cached)."""

    lookup_field = "scenario"
    lookup_value_regex = NAME_PATTERN

    @extend_schema(
        parameters=[OpenApiParameter("snapshot", str, required=True, description="The catalog snapshot's sha256."),
                    OpenApiParameter("tier", str, description="Narrow `fitness` to one tier (any accepted spelling)."),
                    OpenApiParameter("swap", str, many=True, description="original=replacement (repeatable)")],
        responses={200: s.AnalysisSerializer, 422: s.CycleErrorSerializer, **error_responses(400, 404)},
        summary="Analyse a scenario: DAG, requirements, fitness per tier, swap suggestions",
        description="422 `dependency_cycle` names the cycle's members in order (`cycle`); 404 for a snapshot the "
                    "caller does not see or a scenario it does not hold; 400 `unknown_tier`, `invalid_swap`.")
    @action(detail=True, methods=["get"])
    def analysis(self, request, scenario: str):
        """`GET /scenarios/<name>/analysis?snapshot=&tier=&swap=original=replacement`."""
        query = AnalysisQuerySerializer(data={**request.query_params.dict(), "swap": request.query_params.getlist("swap")})
        query.is_valid(raise_exception=True)
        data = query.validated_data
        snapshot = selectors.snapshot_get(sha256=data["snapshot"], principal=self.principal)
        swaps = dict(pair.split("=", 1) for pair in data.get("swap", []))
        analysis = selectors.scenario_analysis(snapshot=snapshot, scenario=scenario, swaps=swaps)
        if data.get("tier"):
            tier = parse_tier(data["tier"])
            analysis = {**analysis, "tier": tier, "fitness": {tier: analysis["fitness"][tier]}}
        return Response(s.AnalysisSerializer(analysis).data)


class ProfileViewSet(DeploymentErrors, TenantScopedViewSet):
    """`/profiles[/<id>]` and their verbs; every change is a new immutable version."""

    queryset = DeploymentProfile.objects.select_related("tenant", "current_version__snapshot")
    serializer_class = s.ProfileSerializer
    lookup_url_kwarg = "profile_id"
    not_found_detail = "No deployment profile {profile_id}."

    @extend_schema(responses={200: s.ProfileSerializer(many=True), **error_responses(400)},
                   summary="List deployment profiles")
    def list(self, request):
        """`GET /profiles`."""
        return self.list_page()

    @extend_schema(request=s.ProfileCreateSerializer,
                   responses={201: s.ProfileSerializer, **error_responses(400, 404, 409)},
                   summary="Create a deployment profile (its version 1)",
                   description="400 `unknown_tier`, `invalid_swap` (a swap to a resource the snapshot does not "
                               "have), `invalid_profile` (the pointer of the bad field); 404 a snapshot or "
                               "scenario the caller does not see; 409 `profile_exists`.")
    def create(self, request):
        """`POST /profiles`."""
        body = s.ProfileCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        tenant = write_tenant(self.principal, data.get("tenant"), required=True)
        snapshot = selectors.snapshot_get(sha256=data["snapshot"], principal=self.principal)
        version = services.profile_create(
            tenant=tenant, slug=data["slug"], name=data["name"], snapshot=snapshot, scenario=data["scenario"],
            tier=data["tier"], swaps=data["swaps"], secrets=data["secrets"], settings=data["settings"],
            note=data["note"], actor=self.principal)
        return Response(s.ProfileSerializer(version.profile).data, status=201)

    @extend_schema(responses={200: s.ProfileSerializer, **error_responses(404)}, summary="Show a deployment profile")
    def retrieve(self, request, profile_id: str):
        """`GET /profiles/<id>` with its current version."""
        return Response(s.ProfileSerializer(self.get_object()).data)

    @extend_schema(responses={200: s.ProfileVersionSerializer(many=True), **error_responses(400, 404)},
                   summary="List a profile's versions, newest first")
    @action(detail=True, methods=["get"])
    def versions(self, request, profile_id: str):
        """`GET /profiles/<id>/versions`."""
        return self.page(selectors.profile_versions(profile=self.get_object()), s.ProfileVersionSerializer)

    @extend_schema(parameters=[OpenApiParameter("from", int, description="The older version (default: to − 1)"),
                               OpenApiParameter("to", int, description="The newer version (default: the current)")],
                   responses={200: s.ProfileDiffSerializer, **error_responses(400, 404)},
                   summary="Diff two versions of a profile")
    @action(detail=True, methods=["get"])
    def diff(self, request, profile_id: str):
        """`GET /profiles/<id>/diff?from=&to=`: `[{pointer, op, old, new}]` with who made `to` and when."""
        profile = self.get_object()
        query = s.VersionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        newer = selectors.profile_version_get(profile=profile, number=query.validated_data.get("to"))
        older = selectors.profile_version_get(profile=profile,
                                              number=query.validated_data.get("from", max(newer.number - 1, 1)))
        return Response(s.ProfileDiffSerializer(selectors.profile_version_diff(older=older, newer=newer)).data)

    def _changed(self, change) -> Response:
        body = {"version": change.version, "created": change.created, "changes": change.changes}
        return Response(s.ProfileChangeSerializer(body).data, status=201 if change.created else 200)

    @extend_schema(request=s.ProfileSwapSerializer,
                   responses={201: s.ProfileChangeSerializer, 200: s.ProfileChangeSerializer,
                              **error_responses(400, 404)},
                   summary="Swap a dependency (a new version; null replacement removes the swap)",
                   description="201 with the new version; 200 when nothing changed. 400 `invalid_swap`: a "
                               "replacement the snapshot does not have, a dependency the scenario does not use.")
    @action(detail=True, methods=["post"])
    def swap(self, request, profile_id: str):
        """`POST /profiles/<id>/swap {original, replacement}`."""
        profile = self.get_object()
        body = s.ProfileSwapSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data["replacement"] is None:
            change = services.profile_unswap(profile=profile, original=data["original"], note=data["note"],
                                             actor=self.principal)
        else:
            change = services.profile_swap(profile=profile, original=data["original"],
                                           replacement=data["replacement"], note=data["note"], actor=self.principal)
        return self._changed(change)

    @extend_schema(request=s.ProfileSetSerializer,
                   responses={201: s.ProfileChangeSerializer, 200: s.ProfileChangeSerializer,
                              **error_responses(400, 404)},
                   summary="Change a profile's tier, scenario, snapshot, secrets decisions or settings (a new version)")
    @action(detail=True, methods=["post"], url_path="set", url_name="set")
    def set_fields(self, request, profile_id: str):
        """`POST /profiles/<id>/set {tier?, scenario?, snapshot?, secrets?, secret_decisions?, settings?, note?}`."""
        profile = self.get_object()
        body = s.ProfileSetSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        note = data.pop("note")
        decisions = data.pop("secret_decisions", None)
        if not data and not decisions:
            raise ApiError("Name at least one of tier, scenario, snapshot, secrets, secret_decisions, settings.",
                           code="missing_field", field="tier")
        if decisions and "secrets" in data:
            raise ApiError("secrets replaces every decision and secret_decisions merges some: send one of them.",
                           code="invalid", field="secret_decisions")
        if "snapshot" in data:
            data["snapshot"] = selectors.snapshot_get(sha256=data["snapshot"], principal=self.principal)
        if decisions:
            if data:
                raise ApiError("secret_decisions is a change of its own: send the other fields in another call.",
                               code="invalid", field="secret_decisions")
            change = services.profile_decide_secrets(profile=profile, decisions=decisions, note=note,
                                                     actor=self.principal)
        else:
            change = services.profile_update(profile=profile, note=note, actor=self.principal, **data)
        return self._changed(change)

    @extend_schema(parameters=[OpenApiParameter("tier", str, description="Another tier than the profile's")],
                   responses={200: s.SecretsPlanSerializer, **error_responses(400, 404)},
                   summary="The secrets plan of the profile's current version")
    @action(detail=True, methods=["get"], url_path="secrets-plan", url_name="secrets-plan")
    def secrets_plan(self, request, profile_id: str):
        """`GET /profiles/<id>/secrets-plan?tier=`: the bundle-safe secrets, the excluded ones and why."""
        version = selectors.profile_version_get(profile=self.get_object())
        plan = selectors.profile_secrets_plan(version=version, tier=request.query_params.get("tier") or None)
        return Response(s.SecretsPlanSerializer(plan).data)

    @extend_schema(request=None, responses={200: s.ManifestSerializer, 422: s.AssemblyErrorSerializer,
                                            **error_responses(400, 404)},
                   summary="Assemble bundle.json from the profile's current version",
                   description="422 `not_deployable` (with the swaps that would make it deployable), "
                               "`infrastructure_secret` (each secret, where it was found and the swap that removes "
                               "it), `invalid_manifest` (each violation's JSON pointer).")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def manifest(self, request, profile_id: str):
        """`POST /profiles/<id>/manifest`: the manifest, its canonical export and the export's sha256."""
        version = selectors.profile_version_get(profile=self.get_object())
        assembled = selectors.profile_manifest(version=version)
        return Response(s.ManifestSerializer({
            "profile": version.profile_id, "version": version.number, "sha256": assembled.sha256,
            "size_bytes": len(assembled.canonical), "canonical": assembled.canonical.decode("ascii"),
            "manifest": assembled.document}).data)


    @extend_schema(request=s.PackageRequestSerializer,
                   responses={202: s.PackageAcceptedSerializer, 422: s.AssemblyErrorSerializer,
                              **error_responses(400, 404)},
                   summary="Package the profile's current version on the fleet (202 with the run to poll)",
                   description="Procures the manifest's assets, runs one CI build per platform on drones whose "
                               "labels match, packs a reproducible tarball per platform and registers each as a "
                               "workflow or payload version `<version>+<platform>`. 422 when the manifest cannot "
                               "be assembled or a platform cannot be built from it.")
    @action(detail=True, methods=["post"])
    def package(self, request, profile_id: str):
        """`POST /profiles/<id>/package {platforms, register_as, git_url, ref?, name?, version?, labels?}`."""
        profile = self.get_object()
        body = s.PackageRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        run = packaging.package_request(profile=profile, platforms=data["platforms"],
                                        register_as=data["register_as"], git_url=data["git_url"], ref=data.get("ref", ""),
                                        name=data.get("name", ""), version=data["version"], labels=data["labels"],
                                        actor=self.principal)
        url = reverse("package-detail", kwargs={"package_id": run.pk})
        return Response(s.PackageAcceptedSerializer({
            "package_id": run.pk, "status": run.state, "url": url,
            "logs_url": reverse("package-logs", kwargs={"package_id": run.pk})}).data, status=202)


class PackageViewSet(DeploymentErrors, TenantScopedViewSet):
    """`/packages[/<id>]`: package runs, per platform; `logs` and `cancel`."""

    queryset = PackageRun.objects.select_related("profile_version").prefetch_related("platforms__bundle")
    serializer_class = s.PackageRunSerializer
    lookup_url_kwarg = "package_id"
    not_found_detail = "No package run {package_id}."

    @extend_schema(responses={200: s.PackageRunSerializer(many=True), **error_responses(400)},
                   summary="List package runs")
    def list(self, request):
        """`GET /packages`."""
        return self.list_page()

    @extend_schema(responses={200: s.PackageRunSerializer, **error_responses(404)}, summary="Show a package run")
    def retrieve(self, request, package_id: str):
        """`GET /packages/<id>`: per-platform state, build ids, artifact sha256s, bundle sha256, reason."""
        return Response(s.PackageRunSerializer(self.get_object()).data)

    @extend_schema(responses={200: s.PackageLogSerializer, **error_responses(404)},
                   summary="A package run's log and the log URLs of its builds")
    @action(detail=True, methods=["get"])
    def logs(self, request, package_id: str):
        """`GET /packages/<id>/logs`."""
        run = self.get_object()
        build_logs = {row.platform: reverse("build-log", kwargs={"build_id": row.build_id})
                      for row in run.platforms.all() if row.build_id}
        return Response(s.PackageLogSerializer({"id": run.pk, "state": run.state, "log": run.log,
                                                "build_logs": build_logs}).data)

    @extend_schema(request=None, responses={202: s.PackageRunSerializer, **error_responses(404, 409)},
                   summary="Cancel a package run and its builds")
    @action(detail=True, methods=["post"])
    @takes_no_body
    def cancel(self, request, package_id: str):
        """`POST /packages/<id>/cancel`."""
        run = packaging.package_cancel(run=self.get_object(), actor=self.principal)
        return Response(s.PackageRunSerializer(PackageRun.objects.get(pk=run.pk)).data, status=202)


class BundleManifestSchemaView(ScopedAPIView):
    """`GET /schemas/bundle-manifest-v0.1.json`: the JSON Schema every assembled manifest is validated with."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **error_responses()},
                   summary=f"The {SCHEMA_NAME} JSON Schema (Draft 2020-12)")
    def get(self, request):
        return Response(manifest_schema())


class ManifestValidateView(DeploymentErrors, ScopedAPIView):
    """`POST /manifests/validate {manifest}`: every violation with its JSON pointer (reads and writes nothing)."""

    write_scopes = READ_SCOPES

    @extend_schema(request=s.ManifestValidateSerializer,
                   responses={200: s.ManifestValidationSerializer, **error_responses(400)},
                   summary="Validate a bundle.json against the bundle-manifest schema")
    def post(self, request):
        body = s.ManifestValidateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        document = body.validated_data["manifest"]
        errors = validate_manifest(document)
        sha256 = None if errors else canonical_sha256(document)
        return Response(s.ManifestValidationSerializer({"valid": not errors, "errors": errors, "sha256": sha256}).data)
