"""Jobs and queues: the default queues, and creating, changing and deleting a job.

A job is what to build (repository, branches, build config, secrets); its
builds are queued by `builds.services.lifecycle.build_trigger`.
"""
from __future__ import annotations

from builds.choices import ACTIVE_STATES
from builds.config import (
    ENV_NAME,
    normalize_scm_url,
    validate_branch_filter,
    validate_branch_name,
    validate_build_config,
    validate_scm_url,
)
from builds.models import Job, Queue
from swarm.core.errors import ApiError, Conflict
from swarm.core.secret_box import encrypt_mapping, encrypt_text
from swarm.core.services import audit_record

#: The queues every installation has (also created by migration 0002).
DEFAULT_QUEUES = (
    {"name": "default", "priority": 50, "description": "Everyday builds."},
    {"name": "test", "priority": 10, "description": "Low-priority test builds; claimed after every other queue."},
)


def queues_ensure_defaults() -> None:
    """Create the `default` and low-priority `test` queues when they are missing."""
    for queue in DEFAULT_QUEUES:
        Queue.objects.get_or_create(name=queue["name"], defaults=queue)


def _default_queue() -> Queue:
    queue = Queue.objects.filter(name="default").first()
    if queue is None:
        queues_ensure_defaults()
        queue = Queue.objects.get(name="default")
    return queue


def job_create(
    *,
    name: str,
    scm_url: str,
    build_config: dict,
    tenant=None,
    queue: Queue | None = None,
    default_branch: str = "",
    branch_filter: str = "",
    description: str = "",
    scm_credential: str = "",
    secrets: dict[str, str] | None = None,
    webhook_secret: str = "",
    build_tags: bool = False,
    enabled: bool = True,
    actor="system",
) -> Job:
    """Create a job after validating its URL, branches and build config."""
    config = validate_build_config(build_config)
    validate_scm_url(scm_url)
    # Empty: whatever the repository's HEAD points at (`main`, `master`, …), resolved by the drone's clone.
    if default_branch:
        default_branch = validate_branch_name(default_branch, field="default_branch")
    validate_branch_filter(branch_filter)
    _validate_secrets(secrets or {})
    if Job.objects.filter(tenant=tenant, name=name).exists():
        raise Conflict(f"A job named {name!r} already exists.", field="name")
    job = Job.objects.create(
        tenant=tenant,
        name=name,
        description=description,
        scm_url=scm_url.strip(),
        scm_url_normalized=normalize_scm_url(scm_url),
        default_branch=default_branch,
        branch_filter=branch_filter,
        build_config=config,
        queue=queue or _default_queue(),
        scm_credential_encrypted=encrypt_text(scm_credential),
        secrets_encrypted=encrypt_mapping(secrets or {}),
        webhook_secret=webhook_secret,
        build_tags=bool(build_tags),
        enabled=enabled,
    )
    audit_record(actor=actor, action="job.create", obj=job, tenant_id=job.tenant_id)
    return job


def _validate_secrets(secrets: dict) -> None:
    if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
        raise ApiError("secrets: must map names to string values", code="invalid", field="secrets")
    for name in secrets:
        if not ENV_NAME.match(name):
            raise ApiError(f"secrets: {name!r} is not a valid variable name", code="invalid", field="secrets")


def job_update(*, job: Job, actor="system", **changes) -> Job:
    """Change a job's fields; secrets are replaced only when given."""
    if "build_config" in changes:
        job.build_config = validate_build_config(changes.pop("build_config"))
    if "scm_url" in changes:
        url = validate_scm_url(changes.pop("scm_url"))
        job.scm_url = url
        job.scm_url_normalized = normalize_scm_url(url)
    if changes.get("default_branch"):
        validate_branch_name(changes["default_branch"], field="default_branch")
    if "branch_filter" in changes:
        validate_branch_filter(changes["branch_filter"])
    if "scm_credential" in changes:
        job.scm_credential_encrypted = encrypt_text(changes.pop("scm_credential") or "")
    if "secrets" in changes:
        secrets = changes.pop("secrets") or {}
        _validate_secrets(secrets)
        job.secrets_encrypted = encrypt_mapping(secrets)
    if "name" in changes and changes["name"] != job.name:
        if Job.objects.filter(tenant_id=job.tenant_id, name=changes["name"]).exclude(pk=job.pk).exists():
            raise Conflict(f"A job named {changes['name']!r} already exists.", field="name")
    for name, value in changes.items():
        setattr(job, name, value)
    job.save()
    audit_record(actor=actor, action="job.update", obj=job, tenant_id=job.tenant_id)
    return job


def job_delete(*, job: Job, actor="system") -> None:
    """Delete a job and its builds; refused while one of its builds is held by a drone."""
    if job.builds.filter(state__in=ACTIVE_STATES).exists():
        raise Conflict("The job has builds running; cancel them first.")
    audit_record(actor=actor, action="job.delete", obj=job, tenant_id=job.tenant_id)
    job.delete()
