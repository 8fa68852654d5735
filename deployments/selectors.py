"""Reads of the deployment manager: snapshots, cached analyses, profiles and their diffs, secrets plans, manifests.

Analyses are cached in the shared cache (Redis) by `(snapshot hash, scenario, swaps)` and the
analyzer's version: a snapshot never changes, so an analysis never goes stale, and a hit is one
cache read — no catalog file is parsed and no entry is loaded. A refusal (a cycle, a bad swap)
is cached the same way and raised again on a hit.
"""
from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.core.cache import cache

from deployments import errors as deployment_errors
from deployments.analysis import ANALYZER_VERSION, analyze
from deployments.errors import DeploymentError
from deployments.graph import normalise_swaps
from deployments.lookup import SnapshotLookup
from deployments.manifest import AssembledManifest, assemble_manifest
from deployments.models import CatalogEntry, CatalogSnapshot, DeploymentProfile, ProfileVersion
from deployments.profiles import diff
from deployments.secrets_plan import plan_secrets
from deployments.tiers import parse_tier
from swarm.core.errors import NotFound


def snapshot_get(*, sha256: str, principal=None) -> CatalogSnapshot:
    """A snapshot by its hash (visible to `principal` when given); `NotFound` otherwise."""
    snapshots = CatalogSnapshot.objects.all() if principal is None else CatalogSnapshot.objects.visible_to(principal)
    snapshot = snapshots.filter(sha256=sha256.lower()).first()
    if snapshot is None:
        raise NotFound(f"No catalog snapshot {sha256}.", field="snapshot")
    return snapshot


def snapshot_entries(*, snapshot: CatalogSnapshot, kind: str | None = None):
    """A snapshot's entries, by key (documents deferred: lists need names, not documents)."""
    entries = CatalogEntry.objects.filter(snapshot=snapshot).defer("document")
    return entries.filter(kind=kind) if kind else entries


def analysis_cache_key(*, snapshot_sha256: str, scenario: str, swaps: dict) -> str:
    """The cache key of an analysis; `swaps` already normalised."""
    digest = hashlib.sha256(json.dumps(swaps, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:24]
    return f"deployments:analysis:v{ANALYZER_VERSION}:{snapshot_sha256}:{scenario}:{digest}"


def scenario_analysis(*, snapshot: CatalogSnapshot, scenario: str, swaps: dict | None = None,
                      lookup: SnapshotLookup | None = None) -> dict:
    """The analysis of `scenario` with `swaps` in `snapshot` (`deployments.analysis`), from the cache when there."""
    swaps = normalise_swaps(swaps)
    key = analysis_cache_key(snapshot_sha256=snapshot.sha256, scenario=scenario, swaps=swaps)
    cached = cache.get(key)
    if cached is None:
        try:
            cached = {"analysis": analyze(lookup or SnapshotLookup(snapshot), scenario, swaps)}
        except DeploymentError as error:
            cached = {"refusal": {"class": type(error).__name__, "detail": error.detail, "code": error.code,
                                  "field": error.field, "extra": error.extra}}
        cache.set(key, cached, timeout=settings.SWARM_ANALYSIS_CACHE_SECONDS)
    if "refusal" in cached:
        refusal = cached["refusal"]
        raise getattr(deployment_errors, refusal["class"])(refusal["detail"], code=refusal["code"],
                                                           field=refusal["field"], extra=refusal["extra"])
    return cached["analysis"]


def profile_list(*, principal):
    """Profiles visible to `principal`, with their current version."""
    return DeploymentProfile.objects.visible_to(principal).select_related("tenant", "current_version__snapshot")


def profile_get(*, principal, profile_id: int) -> DeploymentProfile:
    """A profile visible to `principal`; another tenant's is `NotFound`, as a missing one."""
    profile = profile_list(principal=principal).filter(pk=profile_id).first()
    if profile is None:
        raise NotFound(f"No deployment profile {profile_id}.", field="profile")
    return profile


def profile_versions(*, profile: DeploymentProfile):
    """A profile's versions, newest first."""
    return ProfileVersion.objects.filter(profile=profile).select_related("snapshot").order_by("-number")


def profile_version_get(*, profile: DeploymentProfile, number: int | None = None) -> ProfileVersion:
    """Version `number` of a profile (its current one when None); `NotFound` otherwise."""
    if number is None:
        if profile.current_version_id is None:
            raise NotFound(f"Profile {profile.slug} has no version.", field="version")
        return ProfileVersion.objects.select_related("snapshot", "profile").get(pk=profile.current_version_id)
    version = profile_versions(profile=profile).filter(number=number).select_related("profile").first()
    if version is None:
        raise NotFound(f"Profile {profile.slug} has no version {number}.", field="version")
    return version


def profile_version_diff(*, older: ProfileVersion, newer: ProfileVersion) -> dict:
    """What changed between two versions of one profile, who made the newer one and when."""
    return {
        "profile": newer.profile.slug, "from": older.number, "to": newer.number,
        "changes": diff(older.content(), newer.content()),
        "created_by": newer.created_by, "created_at": newer.created_at.isoformat(), "note": newer.note,
    }


def _analysis_for(version: ProfileVersion, lookup: SnapshotLookup):
    def analysis_for(swaps: dict) -> dict:
        return scenario_analysis(snapshot=version.snapshot, scenario=version.scenario, swaps=swaps, lookup=lookup)
    return analysis_for


def profile_analysis(*, version: ProfileVersion) -> dict:
    """The (cached) analysis of a profile version: its scenario in its snapshot with its swaps."""
    return scenario_analysis(snapshot=version.snapshot, scenario=version.scenario, swaps=version.swaps)


def profile_secrets_plan(*, version: ProfileVersion, tier: str | None = None) -> dict:
    """The secrets plan of a profile version (for another tier when `tier` is given)."""
    lookup = SnapshotLookup(version.snapshot)
    analysis_for = _analysis_for(version, lookup)
    return plan_secrets(analysis=analysis_for(version.swaps), lookup=lookup,
                        tier=parse_tier(tier) if tier else version.tier, decisions=version.decisions,
                        settings=version.settings, analysis_for=analysis_for)


def profile_manifest(*, version: ProfileVersion) -> AssembledManifest:
    """`bundle.json` of a profile version: raises `NotDeployable`, `InfrastructureSecrets` or `ManifestInvalid`."""
    lookup = SnapshotLookup(version.snapshot)
    return assemble_manifest(content=version.content(), lookup=lookup, analysis_for=_analysis_for(version, lookup),
                             profile=version.profile.slug, version=version.number)
