"""Writes of the workflows app: one keyword-only `<entity>_<action>()` per use case. One module per seam:

* `registry`   — workflows, their immutable versions (registered from bundles), activation, rollback.
* `secrets`    — tenant secrets: set, rotate, read for a workflow, mask.
* `executions` — spawn, provision, the state changes and their events, cancel, timeouts, the reaper.
* `boot`       — what the boot side calls: the metadata service, reported events, a silent boot exit.
* `canary`     — a weighted split between the active version and a candidate; promote, revert, judge.

Tenants themselves are the tenancy app's (`tenancy.services`). The API
views, the admin, the Celery tasks and the runtimes call these. This
package re-exports the public names, so callers write
`from workflows import services` and `services.execution_spawn(...)`;
modules of the package import from their sibling modules, never from here.
"""
from workflows.services.boot import execution_metadata_serve, execution_report
from workflows.services.canary import (
    canary_active,
    workflow_canary_evaluate,
    workflow_canary_promote,
    workflow_canary_revert,
    workflow_canary_start,
)
from workflows.services.executions import (
    EXECUTION_SUBJECT,
    execution_cancel,
    execution_fail,
    execution_provision,
    execution_spawn,
    execution_stop_runtime,
    execution_time_out,
    executions_reap,
    metadata_url,
)
from workflows.services.registry import (
    WORKFLOW_EDITABLE_FIELDS,
    RegisteredVersion,
    parse_metadata,
    parse_semver,
    workflow_create,
    workflow_rollback,
    workflow_update,
    workflow_version_activate,
    workflow_version_register,
)
from workflows.services.secrets import (
    SECRET_MASK,
    SECRET_NAME_PATTERN,
    mask_data,
    mask_secrets,
    secrets_for_workflow,
    tenant_secret_set,
)

__all__ = [
    "EXECUTION_SUBJECT",
    "SECRET_MASK",
    "SECRET_NAME_PATTERN",
    "WORKFLOW_EDITABLE_FIELDS",
    "RegisteredVersion",
    "canary_active",
    "execution_cancel",
    "execution_fail",
    "execution_metadata_serve",
    "execution_provision",
    "execution_report",
    "execution_spawn",
    "execution_stop_runtime",
    "execution_time_out",
    "executions_reap",
    "mask_data",
    "mask_secrets",
    "metadata_url",
    "parse_metadata",
    "parse_semver",
    "secrets_for_workflow",
    "tenant_secret_set",
    "workflow_canary_evaluate",
    "workflow_canary_promote",
    "workflow_canary_revert",
    "workflow_canary_start",
    "workflow_create",
    "workflow_rollback",
    "workflow_update",
    "workflow_version_activate",
    "workflow_version_register",
]
