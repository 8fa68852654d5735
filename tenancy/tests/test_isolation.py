"""Every API endpoint, walked with a token of another tenant: tenant A's objects are a 404, never anything else.

The endpoints come from the URL resolver (every pattern under /api/v1/, every
method its view or viewset answers), so a new endpoint is walked without
being listed here. Each one is one of:

* **tenant-owned** — its path names one of A's objects (`workflow_id`,
  `build_id`, `slug`, …; `PATH_VALUES` fills them from A's world). Called
  with B's engine token (and B's read token for reads; B's execution token
  where the metadata token authenticates), it must answer 404 `not_found`
  and change nothing. The same call with A's own token must not be a 404, so
  the 404 is the scope's, not a malformed URL's.
* **a create naming a tenant** (`CREATES`) — a body that names A's tenant:
  404 and nothing created.
* **not tenant-owned** (`NOT_TENANT_OWNED`) — listed with the reason.

And every read B may make (its own lists, its own objects' sub-lists) must
not contain any of A's objects. A new endpoint whose path parameter is not in
`PATH_VALUES`, or that has no path parameter and is not a list, fails the
test until it is classified.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
from dataclasses import dataclass, field

import pytest
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from rest_framework.test import APIClient

from builds.choices import ArtifactState
from builds.models import Artifact, Build, BuildAttempt, BuildLogChunk, Job
from builds.services import build_claim, build_trigger
from builds.tests.factories import make_drone, make_job
from bundles.models import Bundle
from conftest import make_bundle, token_client
from deployments.models import CatalogFetch, CatalogImport, DeploymentProfile, PackagePlatform, PackageRun, ProfileVersion
from deployments.services import catalog_import, profile_create
from deployments.tests.conftest import sample_files
from deployments.catalog import tree_from_files
from swarm.core.services import api_token_issue
from swarm.core.principals import system_principal
from tenancy.models import Tenant
from workflows.models import Execution, ExecutionEvent, Workflow, WorkflowActivation, WorkflowVersion
from workflows.services.canary import workflow_canary_start
from workflows.services.runtime_reports import runtime_token_issue
from workflows.tests.factories import make_tenant, make_version, make_workflow

pytestmark = pytest.mark.django_db

#: The bytes `PUT /bundles/<sha256>?tenant=…` uploads (the path names their digest).
UPLOAD_BYTES = make_bundle({"main.py": "print('intruder')\n"})
UPLOAD_SHA256 = hashlib.sha256(UPLOAD_BYTES).hexdigest()

API_PREFIX = "api/v1/"
AGENT = ("agent protocol: a drone token acts for its own drone, and drones belong to no tenant "
         "(another drone's build: builds/tests/test_agent_protocol.py)")
PAYLOADS = ("payloads, releases and rollouts go to the fleet, which belongs to no tenant: admin and unbound "
            "engine tokens write, a tenant-bound one gets 403 (drones/tests/test_payload_drift.py)")
FLEET = "the fleet belongs to no tenant: every admin, engine and read token reads it, only admin writes"
#: Endpoints (url name, or (url name, METHOD)) that belong to no tenant, and why.
NOT_TENANT_OWNED = {
    "build-request": AGENT,
    "execution-request": AGENT,
    "build-state": AGENT,
    ("build-log", "PATCH"): AGENT,
    ("build-artifacts", "POST"): AGENT,
    "build-artifact-content": AGENT,
    "build-artifact-commit": AGENT,
    "drone-register": "agent protocol: a join token buys a drone token",
    "drone-heartbeat": AGENT,
    "provision-bootstrap": "provisioning download, authorised by a join token (no tenant)",
    "provision-agent-wheel": "provisioning download, authorised by a join token (no tenant)",
    "provision-agent-package": "provisioning download, authorised by a join token (no tenant)",
    "build-webhook": "forge webhooks: authenticated by the payload's signature, no token; the job is found by "
                     "repository (builds/tests/test_webhooks.py)",
    "metadata": "the execution token is bound to one execution and the path names none "
                "(another execution: workflows/tests/test_executions_api.py)",
    "metadata-events": "the execution token is bound to one execution and the path names none",
    "bundle-download": "a signed, expiring link: whoever holds the signature may download, no token "
                       "(workflows/tests/test_bundle_upload_api.py)",
    "drone-list": FLEET, "drone-detail": FLEET, "drone-ping": FLEET, "drone-reset-escalation": FLEET,
    "drone-set-type": FLEET, "drone-pause": FLEET, "drone-resume": FLEET, "drone-drain": FLEET,
    "ping-list": FLEET, "ping-all": FLEET, "escalation-list": FLEET,
    "queue-list": "build queues are shared by every tenant",
    "payload-agent-report": AGENT, "payload-agent-pending": AGENT,
    "payload-type-list": PAYLOADS, "payload-type-detail": PAYLOADS, "payload-version-list": PAYLOADS,
    "payload-version-detail": PAYLOADS, "release-list": PAYLOADS, "release-detail": PAYLOADS,
    "release-manifest": PAYLOADS, "rollout-list": PAYLOADS, "rollout-detail": PAYLOADS, "rollout-abort": PAYLOADS,
    "rollout-events": PAYLOADS, "rollout-pause": PAYLOADS, "rollout-promote": PAYLOADS, "rollout-resume": PAYLOADS,
    "rollout-revert": PAYLOADS, "rollout-targets": PAYLOADS, "payload-drift-list": PAYLOADS,
    "payload-drift-reconcile": PAYLOADS,
    ("tenant-list", "POST"): "admin scope only (403 for every engine token); it creates a tenant and names none",
    "scenario-analysis": "the scenario is named within the snapshot of ?snapshot=, which is scoped: another "
                         "tenant's snapshot is a 404 (deployments/tests/test_api.py)",
    "schema-bundle-manifest": "the bundle-manifest JSON Schema ships with Swarm and is the same for everyone",
    "manifest-validate": "validates the manifest in the request body; reads and writes nothing stored",
}


@dataclass
class World:
    """One tenant with one of everything; every name carries the tenant's slug (the marker lists must not show)."""

    slug: str
    tenant: Tenant
    workflow: Workflow
    first: WorkflowVersion
    second: WorkflowVersion
    execution: Execution
    job: Job
    build: Build
    artifact: Artifact
    execution_token: str
    runtime_token: str
    catalog: object
    catalog_fetch: CatalogFetch
    profile: DeploymentProfile
    package: PackageRun
    markers: list[str] = field(default_factory=list)


def build_world(slug: str, drone) -> World:
    tenant = make_tenant(slug)
    workflow = make_workflow(tenant, f"{slug}-flow")
    first = make_version(workflow, "1.0.0", activate=True)
    second = make_version(workflow, "2.0.0", activate=True)
    execution = Execution.objects.create(tenant=tenant, workflow=workflow, version=second, runtime="process",
                                         timeout_sec=60, last_seq=1)
    ExecutionEvent.objects.create(execution=execution, seq=1, type="output", message=f"{slug} says hi")
    _, execution_token = api_token_issue(scope="execution", tenant=tenant, subject_type="execution",
                                         subject_id=str(execution.pk), name=f"{slug}-execution")
    runtime_token = runtime_token_issue(execution=execution)
    workflow_canary_start(principal=system_principal("isolation"), workflow=workflow, version=first, weight=10)
    job = make_job(name=f"{slug}-job", tenant=tenant, scm_url=f"https://git.example.com/{slug}/app.git")
    build = build_trigger(job=job, trigger="api")
    assert build_claim(drone=drone) is not None
    attempt = BuildAttempt.objects.get(build=build)
    BuildLogChunk.objects.create(attempt=attempt, offset=0, data=f"{slug} log\n".encode())
    BuildAttempt.objects.filter(pk=attempt.pk).update(log_size=len(slug) + 5)
    artifact = Artifact.objects.create(build=build, attempt=attempt, name=f"{slug}-artifact.txt",
                                       path=f"dist/{slug}-artifact.txt", size=1, sha256="a" * 64,
                                       storage_key=f"artifacts/{slug}", state=ArtifactState.STORED)
    # A catalog of its own (one more scenario than the sample: another tree hash) and a profile of it.
    files = {**sample_files(), f"scenarios/{slug}-extra/.vrooli/service.json":
             json.dumps({"service": {"name": f"{slug}-extra", "version": "1.0.0"}}).encode()}
    catalog = catalog_import(tree=tree_from_files(files), source="files", actor="isolation", tenant=tenant).snapshot
    catalog_fetch = CatalogFetch.objects.create(tenant=tenant, git_url=f"https://git.example.com/{slug}/catalog.git",
                                                ref="main", state="succeeded", snapshot=catalog)
    profile = profile_create(tenant=tenant, slug=f"{slug}-wheel", snapshot=catalog, scenario="picker-wheel",
                             tier="desktop", actor="isolation").profile
    package = PackageRun.objects.create(tenant=tenant, profile=profile, profile_version=profile.current_version,
                                        manifest_sha256="b" * 64, manifest_canonical="{}", register_as="workflow",
                                        register_name=f"{slug}-wheel", version_label="1.0.0",
                                        git_url=f"https://git.example.com/{slug}/app.git")
    PackagePlatform.objects.create(run=package, platform="linux-x64")
    markers = [slug, first.bundle.sha256, second.bundle.sha256, catalog.sha256]
    return World(slug=slug, tenant=tenant, workflow=workflow, first=first, second=second, execution=execution,
                 job=job, build=build, artifact=artifact, execution_token=execution_token,
                 runtime_token=runtime_token, catalog=catalog, catalog_fetch=catalog_fetch, profile=profile, package=package,
                 markers=markers)


def path_values(world: World) -> dict[str, list]:
    """What fills each path parameter with one of `world`'s objects (a job by id and by name)."""
    return {
        "slug": [world.tenant.slug], "workflow_slug": [world.workflow.slug], "workflow_id": [world.workflow.pk],
        "version_id": [world.first.pk], "execution_id": [world.execution.pk], "job_id": [world.job.pk, world.job.name],
        "name": [world.job.name], "build_id": [world.build.pk], "artifact_id": [world.artifact.pk],
        "sha256": [world.second.bundle.sha256],
        "catalog_id": [world.catalog.pk], "fetch_id": [world.catalog_fetch.pk], "profile_id": [world.profile.pk],
        "package_id": [world.package.pk],
        "upload_path": reverse("bundle-detail-upload", kwargs={"sha256": UPLOAD_SHA256})
        + f"?tenant={world.tenant.slug}&workflow=intruder&version=9.9.9",
    }


#: Bodies that would be accepted if the object were visible (so a 404 is the scope's, not validation's).
def request_body(name: str, method: str, world: World) -> dict:
    if (name, method) == ("tenant-workflow-list", "POST"):
        return {"data": {"slug": "intruder"}, "format": "json"}
    if (name, method) in (("job-detail", "PATCH"),):
        return {"data": {"description": "changed by another tenant"}, "format": "json"}
    if name.endswith("-trigger"):
        return {"data": {"branch": "main"}, "format": "json"}
    if (name, method) == ("workflow-executions", "POST"):
        return {"data": {"env": {}, "inputs": {}}, "format": "json"}
    if (name, method) == ("execution-events", "POST"):
        return {"data": {"events": [{"type": "output", "stream": "stdout", "message": "x"}]}, "format": "json"}
    if (name, method) == ("profile-swap", "POST"):
        return {"data": {"original": "postgres", "replacement": "sqlite"}, "format": "json"}
    if (name, method) == ("profile-set", "POST"):
        return {"data": {"tier": "server"}, "format": "json"}
    if (name, method) == ("profile-manifest", "POST"):
        return {}
    return {"data": {}, "format": "json"} if method in ("POST", "PUT", "PATCH") else {}


def creates_naming(world: World) -> dict[tuple[str, str], dict]:
    """Creates without a path parameter whose body names the tenant (`CREATES`)."""
    job = {"name": "intruder", "tenant": world.tenant.slug, "scm_url": "https://git.example.com/x.git",
           "build_config": {"steps": ["make"]}}
    upload = {"tenant": world.tenant.slug, "workflow": "intruder", "version": "9.9.9",
              "bundle": io.BytesIO(make_bundle())}
    upload["bundle"].name = "bundle.tar.gz"
    catalog = {"git_url": "https://git.example.com/intruder/catalog.git", "ref": "main", "tenant": world.tenant.slug}
    profile = {"slug": "intruder", "tenant": world.tenant.slug, "snapshot": world.catalog.sha256,
               "scenario": "picker-wheel", "tier": "desktop"}
    return {("job-list", "POST"): {"data": job, "format": "json"},
            ("bundle-upload", "POST"): {"data": upload, "format": "multipart"},
            ("catalog-list", "POST"): {"data": catalog, "format": "json"},
            ("profile-list", "POST"): {"data": profile, "format": "json"}}


@dataclass(frozen=True)
class Endpoint:
    name: str
    route: str
    method: str
    kwargs: tuple[str, ...]


def api_endpoints() -> list[Endpoint]:
    """Every (url name, method) under /api/v1/, from the URL resolver."""
    found = []

    def walk(patterns, prefix=""):
        for pattern in patterns:
            piece = str(pattern.pattern).removeprefix("^").removesuffix("$")
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + piece)
                continue
            assert isinstance(pattern, URLPattern)
            route = prefix + piece
            if not route.startswith(API_PREFIX):
                continue
            callback = pattern.callback
            if hasattr(callback, "actions"):  # a viewset route
                # DRF answers HEAD with the GET action (and adds it to `actions` on the first request): one handler.
                methods = [method for method, action in callback.actions.items()
                           if not (method == "head" and callback.actions.get("get") == action)]
            elif hasattr(callback, "view_class"):
                view = callback.view_class
                methods = [m for m in view.http_method_names if m != "options" and m in vars_of(view)]
            else:  # a function view
                methods = sorted(getattr(callback, "allowed_methods", None) or ["get"])
            for method in methods:
                found.append(Endpoint(pattern.name, route, method.upper(), tuple(pattern.pattern.regex.groupindex)))

    walk(get_resolver().url_patterns)
    return found


def vars_of(view) -> set[str]:
    """Attribute names a view class defines itself or inherits from the project's classes (not DRF's or Django's)."""
    names = set()
    for klass in view.__mro__:
        if klass.__module__.split(".")[0] in ("rest_framework", "django", "builtins"):
            continue
        names |= set(vars(klass))
    return names


def excluded(endpoint: Endpoint) -> str | None:
    return NOT_TENANT_OWNED.get((endpoint.name, endpoint.method)) or NOT_TENANT_OWNED.get(endpoint.name)


def paths_for(endpoint: Endpoint, values: dict[str, list]) -> list[str]:
    if (endpoint.name, endpoint.method) == ("bundle-detail-upload", "PUT"):
        return [values["upload_path"]]  # the path names the new bytes' digest; the query names the tenant
    choices = [values[name] for name in endpoint.kwargs]
    paths = []
    for combination in itertools.product(*choices):
        path = reverse(endpoint.name, kwargs=dict(zip(endpoint.kwargs, combination)))
        assert resolve(path).url_name == endpoint.name or endpoint.name == "bundle-detail", (endpoint, path)
        paths.append(path)
    return paths


def call(client: APIClient, method: str, path: str, **body):
    if method == "PUT" and path.startswith("/api/v1/bundles/"):
        body = {"data": UPLOAD_BYTES, "content_type": "application/gzip"}
    response = getattr(client, method.lower())(path, **body)
    if getattr(response, "streaming", False):
        response.content_bytes = b"".join(response.streaming_content)
    else:
        response.content_bytes = response.content
    return response


def snapshot(world: World) -> tuple:
    """Row counts of every tenant-owned model and the state of A's objects that a write would change."""
    counts = tuple(model.objects.count() for model in (Tenant, Workflow, WorkflowVersion, WorkflowActivation,
                                                       Execution, ExecutionEvent, Job, Build, BuildAttempt, Artifact,
                                                       Bundle, CatalogImport, CatalogFetch, DeploymentProfile,
                                                       ProfileVersion))
    job = Job.objects.get(pk=world.job.pk)
    build = Build.objects.get(pk=world.build.pk)
    execution = Execution.objects.get(pk=world.execution.pk)
    active = WorkflowVersion.objects.filter(workflow=world.workflow, is_active=True).values_list("pk", flat=True)
    return counts, (job.description, job.updated_at), (build.state, build.cancel_requested_at), \
        (execution.status, execution.last_seq), tuple(active)


def shows(response, world: World) -> list[str]:
    """Which of `world`'s markers a response body shows."""
    text = response.content_bytes.decode(errors="replace")
    return [marker for marker in world.markers if marker in text]


class Clients:
    """Tokens of one tenant: engine and read (Authorization), its execution's metadata and runtime tokens."""

    def __init__(self, world: World):
        self.engine = token_client("engine", world.tenant)
        self.read = token_client("read", world.tenant)
        self.metadata = APIClient(HTTP_X_SWARM_METADATA_TOKEN=world.execution_token)
        self.runtime = APIClient(HTTP_X_SWARM_RUNTIME_TOKEN=world.runtime_token)

    def for_call(self, endpoint: Endpoint) -> list[APIClient]:
        if (endpoint.name, endpoint.method) == ("execution-events", "POST"):
            return [self.metadata]
        if (endpoint.name, endpoint.method) == ("execution-runtime-events", "POST"):
            return [self.runtime]
        return [self.engine, self.read] if endpoint.method in ("GET", "HEAD") else [self.engine]


@pytest.fixture
def worlds():
    drone, _ = make_drone("isolation-drone", capacity=2)
    return build_world("acme", drone), build_world("globex", drone)


def test_every_endpoint_answers_another_tenant_404_and_lists_never_show_its_objects(worlds):
    own, other = worlds
    own_clients, other_clients = Clients(own), Clients(other)
    own_values, other_values = path_values(own), path_values(other)
    creates = creates_naming(own)
    failures, checked, unclassified = [], set(), []
    endpoints = api_endpoints()
    assert len({endpoint.name for endpoint in endpoints}) >= 45, endpoints

    for endpoint in endpoints:
        key = (endpoint.name, endpoint.method)
        if excluded(endpoint):
            continue
        if endpoint.kwargs:
            unknown = [name for name in endpoint.kwargs if name not in own_values]
            if unknown:
                unclassified.append(f"{endpoint.method} {endpoint.route}: path parameter(s) {unknown} not in "
                                    "path_values() and the endpoint is not in NOT_TENANT_OWNED")
                continue
            for path in paths_for(endpoint, own_values):
                for client in other_clients.for_call(endpoint):
                    before = snapshot(own)
                    response = call(client, endpoint.method, path, **request_body(*key, world=own))
                    if response.status_code != 404 or (
                            endpoint.method != "HEAD" and json.loads(response.content_bytes)["error"] != "not_found"):
                        failures.append(f"{endpoint.method} {path} (another tenant): {response.status_code} "
                                        f"{response.content_bytes[:200]!r}")
                    if snapshot(own) != before:
                        failures.append(f"{endpoint.method} {path} (another tenant) changed tenant A's rows")
                with transaction.atomic():  # A's own token: the path names a real object (then roll back)
                    client = own_clients.for_call(endpoint)[0]
                    response = call(client, endpoint.method, path, **request_body(*key, world=own))
                    transaction.set_rollback(True)
                if response.status_code == 404 or response.status_code >= 500:
                    failures.append(f"{endpoint.method} {path} (own tenant): {response.status_code} "
                                    f"{response.content_bytes[:200]!r} — the walk's URL names no object")
            if endpoint.method == "GET":  # the other tenant reading its own: nothing of A's in it
                for path in paths_for(endpoint, other_values):
                    response = call(other_clients.engine, "GET", path)
                    if response.status_code >= 400 or shows(response, own):
                        failures.append(f"GET {path} (own objects of B): {response.status_code}, shows "
                                        f"{shows(response, own)}")
            checked.add(key)
        elif key in creates:
            before = snapshot(own)
            response = call(other_clients.engine, endpoint.method, reverse(endpoint.name), **creates[key])
            if response.status_code != 404:
                failures.append(f"{endpoint.method} {endpoint.route} naming tenant A: {response.status_code} "
                                f"{response.content_bytes[:200]!r}")
            if snapshot(own) != before:
                failures.append(f"{endpoint.method} {endpoint.route} naming tenant A created something")
            checked.add(key)
        elif endpoint.method == "GET":  # a list
            for client in (other_clients.engine, other_clients.read):
                response = call(client, "GET", reverse(endpoint.name))
                body = json.loads(response.content_bytes)
                if response.status_code != 200 or "results" not in body or shows(response, own):
                    failures.append(f"GET {endpoint.route} (list, another tenant): {response.status_code}, "
                                    f"shows {shows(response, own)}")
                other_markers = [m for m in other.markers if m in response.content_bytes.decode()]
                if endpoint.name != "tenant-list" and not other_markers and body.get("count"):
                    failures.append(f"GET {endpoint.route}: lists rows but none of the caller's own")
            checked.add(key)
        else:
            unclassified.append(f"{endpoint.method} {endpoint.route}: no path parameter, not a list, not a create "
                                "in CREATES: classify it (CREATES or NOT_TENANT_OWNED)")

    assert not unclassified, "\n".join(unclassified)
    assert not failures, "\n".join(failures)
    names = {endpoint.name for endpoint in endpoints}
    stale = [entry for entry in NOT_TENANT_OWNED if (entry[0] if isinstance(entry, tuple) else entry) not in names]
    assert not stale, f"NOT_TENANT_OWNED names endpoints that no longer exist: {stale}"
    # The walk reached the resources this test exists for.
    assert {("workflow-detail", "GET"), ("workflow-rollback", "POST"), ("workflow-version-activate", "POST"),
            ("workflow-executions", "POST"), ("execution-cancel", "POST"), ("execution-events", "POST"),
            ("job-detail", "PATCH"), ("job-detail", "DELETE"), ("job-trigger", "POST"),
            ("tenant-job-trigger", "POST"), ("build-cancel", "POST"), ("build-retry", "POST"),
            ("build-log", "GET"), ("build-artifact-download", "GET"), ("bundle-detail-upload", "HEAD"),
            ("bundle-detail-upload", "PUT"), ("tenant-workflow-list", "POST"), ("job-list", "GET"),
            ("build-list", "GET"), ("tenant-list", "GET"), ("job-list", "POST"), ("bundle-upload", "POST"),
            ("catalog-list", "POST"), ("catalog-detail", "GET"), ("catalog-fetch-detail", "GET"),
            ("profile-list", "POST"), ("profile-detail", "GET"), ("profile-swap", "POST"), ("profile-set", "POST"),
            ("profile-manifest", "POST"), ("profile-diff", "GET"), ("profile-secrets-plan", "GET"),
            ("profile-versions", "GET")} <= checked
