"""The deployment manager's refusals.

Each is an `ApiError` (so the API of phase 2 answers it as `{error, detail, field}` with its
status without a translation table) that also carries the structured facts a caller needs
beyond the sentence: the members of a cycle, the problems of each file, the pointers of a
schema violation, the infrastructure secrets that stop an assembly. `extra` holds them.
"""
from __future__ import annotations

from swarm.core.errors import ApiError

UNPROCESSABLE = 422


class DeploymentError(ApiError):
    """A refusal of the deployment manager; `extra` holds its structured details (JSON-ready)."""

    code = "deployment_error"

    def __init__(self, detail: str, *, code: str | None = None, field: str | None = None,
                 status_code: int | None = None, extra: dict | None = None):
        super().__init__(detail, code=code, field=field, status_code=status_code)
        self.extra = extra or {}

    def as_dict(self) -> dict:
        """The refusal as JSON: the API body plus the structured details."""
        body = {"error": self.code, "detail": self.detail}
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        return body


class UnknownTier(DeploymentError):
    """A tier name that is neither a tier nor one of its accepted spellings."""

    code = "unknown_tier"


class CatalogRefused(DeploymentError):
    """A catalog import refused as a whole (hostile archive, nothing to import, strict mode)."""

    code = "catalog_refused"


class UnknownScenario(DeploymentError):
    """The scenario is not in the catalog snapshot."""

    code = "unknown_scenario"
    status_code = 404


class DependencyCycle(DeploymentError):
    """The dependency graph has a cycle; `extra["cycle"]` names its members in order, first one repeated."""

    code = "dependency_cycle"
    status_code = UNPROCESSABLE


class InvalidSwap(DeploymentError):
    """A swap to an entry the catalog does not have, of a dependency the scenario does not use, or chained."""

    code = "invalid_swap"


class InvalidProfile(DeploymentError):
    """A profile change with a malformed field; `field` is its JSON pointer."""

    code = "invalid_profile"


class NotDeployable(DeploymentError):
    """The scenario cannot be assembled for the tier: a blocking dependency, a missing one, a broken entry."""

    code = "not_deployable"
    status_code = UNPROCESSABLE


class InfrastructureSecrets(DeploymentError):
    """Assembly refused: infrastructure secrets would reach the bundle; `extra["secrets"]` names each and its fixes."""

    code = "infrastructure_secret"
    status_code = UNPROCESSABLE


class ManifestInvalid(DeploymentError):
    """A manifest that breaks the bundle-manifest schema; `extra["errors"]` lists `{pointer, message}`."""

    code = "invalid_manifest"
    status_code = UNPROCESSABLE
