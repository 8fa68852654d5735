"""The workflow registry: workflows, their immutable versions (registered from uploaded bundles), activation, rollback.

Exactly one version of a workflow is active; every activation and rollback
is a `WorkflowActivation` row and an audit record, taken under the
workflow's row lock.
"""
from __future__ import annotations

from dataclasses import dataclass

import semver
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from bundles.models import Bundle
from bundles.services import bundle_check_received, bundle_referenced
from bundles.upload import ReceivedBundle
from swarm.core.errors import ApiError, Conflict, NotFound
from swarm.core.inputs import check_json_value, json_loads
from swarm.core.principals import Principal
from swarm.core.services import audit_record
from workflows.choices import Runtime
from tenancy import quotas
from tenancy.models import Tenant
from tenancy.quotas import tenant_lock_for_quota, tenant_quota_check
from workflows.models import Workflow, WorkflowActivation, WorkflowVersion

#: What may change on a workflow: its tenant and slug are fixed (its versions belong to them).
WORKFLOW_EDITABLE_FIELDS = frozenset(
    {"name", "description", "runtime", "entrypoint", "memory_mb", "timeout_sec", "execution_runtime", "drone_labels"})


def _check_runtime(runtime: str) -> None:
    if runtime not in Runtime.values:
        raise ApiError(f"runtime must be one of {', '.join(Runtime.values)}.", code="invalid", field="runtime")


def workflow_create(
    *,
    principal: Principal,
    tenant: Tenant,
    slug: str,
    name: str = "",
    description: str = "",
    runtime: str = Runtime.PYTHON311,
    entrypoint: str = "main.py",
    memory_mb: int = 512,
    timeout_sec: int = 900,
) -> Workflow:
    """Create a workflow in a tenant the principal may write to."""
    if not principal.sees_tenant(tenant.pk):
        raise NotFound(f"No tenant {tenant.slug!r}.", field="tenant")
    _check_runtime(runtime)
    try:
        with transaction.atomic():
            workflow = Workflow.objects.create(
                tenant=tenant, slug=slug, name=name or slug, description=description, runtime=runtime,
                entrypoint=entrypoint, memory_mb=memory_mb, timeout_sec=timeout_sec,
            )
    except IntegrityError:
        raise Conflict(
            f"Workflow {tenant.slug}/{slug} already exists.", code="workflow_exists", field="slug"
        ) from None
    audit_record(actor=principal, action="workflow.create", obj=workflow, tenant_id=tenant.pk)
    return workflow


def workflow_update(*, principal: Principal, workflow: Workflow, **changes) -> Workflow:
    """Change a workflow's name, description or runtime fields (WORKFLOW_EDITABLE_FIELDS); none changes nothing."""
    if not principal.sees_tenant(workflow.tenant_id):
        raise NotFound(f"No workflow {workflow.pk}.")
    fixed = sorted(set(changes) - WORKFLOW_EDITABLE_FIELDS)
    if fixed:
        raise ApiError(f"{fixed[0]} of a workflow cannot be changed.", code="invalid", field=fixed[0])
    if "runtime" in changes:
        _check_runtime(changes["runtime"])
    if "drone_labels" in changes:
        labels = changes["drone_labels"]
        if not isinstance(labels, list) or not all(isinstance(label, str) and 0 < len(label) <= 100
                                                   for label in labels):
            raise ApiError("drone_labels must be a list of non-empty strings (at most 100 characters each).",
                           code="invalid", field="drone_labels")
        changes["drone_labels"] = sorted(set(labels))
    if not changes:
        return workflow
    for name, value in changes.items():
        setattr(workflow, name, value)
    workflow.save(update_fields=sorted(changes))
    audit_record(actor=principal, action="workflow.update", obj=workflow, tenant_id=workflow.tenant_id,
                 detail={"fields": sorted(changes)})
    return workflow


def parse_semver(*, version: str) -> str:
    """Validate a semantic version label (`1.2.3`, `1.2.3-rc.1+build`)."""
    label = (version or "").strip()
    if label.startswith("v"):
        label = label[1:]
    try:
        semver.Version.parse(label)
    except (ValueError, TypeError):
        raise ApiError(
            f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH).", code="invalid_version",
            field="version",
        ) from None
    return label


def parse_metadata(*, raw) -> dict:
    """Metadata is a JSON object (given as a string in multipart forms), read by the strict JSON layer."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, str):
        try:
            raw = json_loads(raw, path="metadata")
        except ApiError as error:
            if error.code != "parse_error":
                raise  # too deep, or text no column can store: named by its path (metadata.commit)
            raise ApiError(f"metadata is not valid JSON: {error.detail}", code="invalid_metadata",
                           field="metadata") from None
    else:
        check_json_value(raw, path="metadata")
    if not isinstance(raw, dict):
        raise ApiError("metadata must be a JSON object.", code="invalid_metadata", field="metadata")
    return raw


@dataclass(frozen=True)
class RegisteredVersion:
    """The outcome of a bundle upload: the version and whether it already existed."""

    version: WorkflowVersion
    deduplicated: bool


def _resolve_workflow_for_upload(*, principal: Principal, tenant_slug: str, workflow_slug: str,
                                 workflow_defaults: dict, create_tenant: bool) -> Workflow:
    """The target workflow, created on first push; its tenant only when asked (`create_tenant`).

    A typo in a tenant slug must not become a new tenant: without
    `create_tenant` a tenant that does not exist is a 404 for every scope.
    Only a token bound to no tenant may create one; for a bound token any
    other tenant stays a 404 (it cannot tell "missing" from "not yours").
    """
    tenant = Tenant.objects.visible_to(principal).filter(slug=tenant_slug).first()
    if tenant is None:
        if principal.is_tenant_bound or not create_tenant:
            hint = "" if principal.is_tenant_bound else (
                " Check the slug, or ask for it to be created (`create_tenant=true`; "
                "`swarmctl bundle push --create-tenant`).")
            raise NotFound(f"No tenant {tenant_slug!r}.{hint}", field="tenant")
        tenant, _ = Tenant.objects.get_or_create(slug=tenant_slug, defaults={"name": tenant_slug})
    workflow = Workflow.objects.filter(tenant=tenant, slug=workflow_slug).first()
    if workflow is None:
        try:
            workflow = workflow_create(principal=principal, tenant=tenant, slug=workflow_slug, **workflow_defaults)
        except Conflict:  # created concurrently by another push
            workflow = Workflow.objects.get(tenant=tenant, slug=workflow_slug)
    return workflow


def workflow_version_register(
    *,
    principal: Principal,
    tenant_slug: str,
    workflow_slug: str,
    version: str,
    received: ReceivedBundle,
    declared_sha256: str | None = None,
    metadata=None,
    activate: bool | None = None,
    workflow_defaults: dict | None = None,
    create_tenant: bool = False,
) -> RegisteredVersion:
    """Register an uploaded bundle as a new immutable version of a workflow.

    The same bytes under the same label again → the existing version
    (deduplicated: a retried push is harmless). The same bytes under another
    label → 409 `same_bytes`, naming the version they already are (a version
    is its bytes: asking for 9.9.9 must not silently answer with 1.1.0). A
    label already used with other bytes → 409. A tenant that does not exist
    → 404 unless `create_tenant` (tokens bound to no tenant). Any refusal keeps nothing:
    the received blob is discarded and no row is written. The first version
    of a workflow becomes active; later ones only when `activate` is true.
    """
    try:
        label = parse_semver(version=version)
        metadata = parse_metadata(raw=metadata)
        if not tenant_slug:
            raise ApiError("tenant is required.", code="missing_field", field="tenant")
        if not workflow_slug:
            raise ApiError("workflow is required.", code="missing_field", field="workflow")
        bundle_check_received(received=received, declared_sha256=declared_sha256)
        workflow = _resolve_workflow_for_upload(
            principal=principal, tenant_slug=tenant_slug, workflow_slug=workflow_slug,
            workflow_defaults=workflow_defaults or {}, create_tenant=create_tenant,
        )
        existing = _existing_version(workflow, label, received.sha256)
        if existing is not None:
            received.discard()
            return RegisteredVersion(version=existing, deduplicated=True)
    except Exception:
        received.discard()
        raise

    with bundle_referenced(received=received) as bundle:
        Workflow.objects.select_for_update().get(pk=workflow.pk)
        existing = _existing_version(workflow, label, received.sha256)
        if existing is not None:
            return RegisteredVersion(version=existing, deduplicated=True)
        _check_bundle_quotas(tenant_id=workflow.tenant_id, bundle=bundle)
        new_version = WorkflowVersion.objects.create(
            workflow=workflow, version=label, bundle=bundle, metadata=metadata, deployed_by=str(principal),
        )
        should_activate = activate if activate is not None else not workflow.versions.filter(is_active=True).exists()
        if should_activate:
            _activate(workflow=workflow, version=new_version, actor=principal, reason="activate")
        audit_record(actor=principal, action="version.register", obj=new_version, tenant_id=workflow.tenant_id,
                     detail={"version": label, "bundle": received.sha256})
    return RegisteredVersion(version=new_version, deduplicated=False)


def _check_bundle_quotas(*, tenant_id: int, bundle) -> None:
    """429 when one more version (and, if the tenant does not hold these bytes yet, its bytes) is over quota."""
    tenant = tenant_lock_for_quota(tenant_id=tenant_id)
    tenant_versions = WorkflowVersion.objects.filter(workflow__tenant_id=tenant_id)
    tenant_quota_check(tenant=tenant, quota=quotas.BUNDLES, usage=tenant_versions.count())
    held = Bundle.objects.filter(pk__in=tenant_versions.values("bundle_id"))
    adding = 0 if held.filter(pk=bundle.pk).exists() else bundle.size
    if adding:
        usage = held.aggregate(total=Sum("size"))["total"] or 0
        tenant_quota_check(tenant=tenant, quota=quotas.BUNDLE_BYTES, usage=usage, adding=adding)


def _existing_version(workflow: Workflow, label: str, sha256: str) -> WorkflowVersion | None:
    """The version these bytes already are under this label, or a 409 for any other clash."""
    versions = workflow.versions.select_related("bundle")
    taken = versions.filter(version=label).first()
    if taken is not None:
        if taken.bundle.sha256 == sha256:
            return taken
        raise Conflict(
            f"Version {label} of {workflow} already exists with bundle {taken.bundle.sha256}; versions are immutable.",
            code="version_exists", field="version",
        )
    same_bytes = versions.filter(bundle__sha256=sha256).first()
    if same_bytes is not None:
        raise Conflict(
            f"These bytes are already version {same_bytes.version} of {workflow} (sha256 {sha256}); "
            f"{label} was not created. Activate {same_bytes.version} to run them, or change the bundle "
            f"to make a new version.",
            code="same_bytes", field="version",
        )
    return None


def _activate(*, workflow: Workflow, version: WorkflowVersion, actor, reason: str) -> WorkflowVersion:
    """Make `version` the active one (caller holds the workflow row lock)."""
    previous = workflow.versions.filter(is_active=True).first()
    if previous is not None and previous.pk == version.pk:
        return version
    if previous is not None:
        WorkflowVersion.objects.filter(pk=previous.pk).update(is_active=False)
    now = timezone.now()
    WorkflowVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=now)
    WorkflowActivation.objects.create(
        workflow=workflow, version=version, previous_version=previous, reason=reason, activated_by=str(actor)
    )
    version.is_active, version.activated_at = True, now
    audit_record(actor=actor, action=f"version.{reason}", obj=version, tenant_id=workflow.tenant_id,
                 detail={"version": version.version, "previous": previous.version if previous else None})
    return version


def workflow_version_activate(*, workflow: Workflow, version: WorkflowVersion, actor) -> WorkflowVersion:
    """Activate one version of a workflow; the previously active one is deactivated."""
    if version.workflow_id != workflow.pk:
        raise NotFound(f"Workflow {workflow.pk} has no version {version.pk}.")
    with transaction.atomic():
        Workflow.objects.select_for_update().get(pk=workflow.pk)
        return _activate(workflow=workflow, version=version, actor=actor, reason="activate")


def workflow_rollback(*, workflow: Workflow, actor) -> WorkflowVersion:
    """Re-activate the version that was active before the current one (409 when there is none)."""
    with transaction.atomic():
        Workflow.objects.select_for_update().get(pk=workflow.pk)
        last = workflow.activations.select_related("previous_version").first()
        current = workflow.versions.filter(is_active=True).first()
        if last is None or last.previous_version is None or current is None or last.version_id != current.pk:
            raise Conflict(f"Workflow {workflow} has no previous version to roll back to.", code="no_previous_version")
        return _activate(workflow=workflow, version=last.previous_version, actor=actor, reason="rollback")
