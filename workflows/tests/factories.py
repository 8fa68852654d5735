"""Rows of the workflow registry for tests, built through the same services the API uses."""
from __future__ import annotations

import hashlib
import uuid

from bundles.models import Bundle
from swarm.core.principals import system_principal
from workflows import services
from tenancy.models import Tenant
from workflows.models import Workflow, WorkflowVersion


def make_tenant(slug: str) -> Tenant:
    """A tenant named after its slug."""
    return Tenant.objects.create(name=slug.title(), slug=slug)


def make_bundle_row(*, size: int = 1234) -> Bundle:
    """A bundle row with a fresh random digest (no blob: enough for registry reads)."""
    return Bundle.objects.create(sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), size=size, member_count=1,
                                 unpacked_size=size)


def make_workflow(tenant: Tenant, slug: str = "hello", **fields) -> Workflow:
    """A workflow in `tenant`."""
    return services.workflow_create(principal=system_principal("test"), tenant=tenant, slug=slug, **fields)


def make_version(workflow: Workflow, label: str, *, bundle: Bundle | None = None, activate: bool = False,
                 metadata: dict | None = None) -> WorkflowVersion:
    """A version of `workflow`, optionally activated through `workflow_version_activate`."""
    version = WorkflowVersion.objects.create(workflow=workflow, version=label, bundle=bundle or make_bundle_row(),
                                             metadata=metadata or {}, deployed_by="test")
    if activate:
        services.workflow_version_activate(workflow=workflow, version=version, actor="test")
        version.refresh_from_db()
    return version
