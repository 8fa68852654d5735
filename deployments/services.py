"""Writes of the deployment manager: catalog imports and profile versions.

    result = catalog_import_tarball(fileobj=stream, actor="token:ci", tenant=acme)   # or _directory(path=…)
    version = profile_create(tenant=acme, slug="wheel-desktop", snapshot=result.snapshot,
                             scenario="picker-wheel", tier="desktop", actor="alice")
    change = profile_swap(profile=version.profile, original="postgres", replacement="sqlite", actor="alice")

Every profile change writes a new immutable `ProfileVersion` (numbered, with who and when) and an
audit entry holding the diff; a change that changes nothing writes nothing.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from bundles.blobstore import BlobStore
from bundles.services import bundle_check_received, bundle_referenced
from bundles.upload import ReceivedBundle

from deployments.catalog import CatalogTree, catalog_limits, entry_key, parse_tree, read_directory, read_tarball
from deployments import tasks
from deployments.catalog.git import check_git_source, checkout
from deployments.catalog.problems import ERROR
from deployments.choices import FetchState
from deployments.errors import CatalogRefused, InvalidProfile, UnknownScenario
from deployments.models import (
    CatalogEntry,
    CatalogFetch,
    CatalogImport,
    CatalogSnapshot,
    DeploymentProfile,
    ProfileVersion,
)
from deployments.profiles import check_content, diff
from deployments.selectors import scenario_analysis
from swarm.core.services import audit_record

#: Bumped when parsing changes what a snapshot's entries hold (recorded on each snapshot).
PARSER_VERSION = 1

UNSET = object()


@dataclass(frozen=True)
class CatalogImportResult:
    """A snapshot, whether this import created it, and its per-file problems."""

    snapshot: CatalogSnapshot
    created: bool
    problems: list[dict]


def catalog_import(*, tree: CatalogTree, source: str, actor, origin: str = "", tenant=None,
                   strict: bool = False, bundle=None) -> CatalogImportResult:
    """Store a read catalog tree as a snapshot; the same tree again is a no-op returning the existing one.

    Per-file problems do not stop the import: broken files become invalid entries, reported
    here, on the snapshot and in every analysis that reaches them (docs/deployments.md explains
    why). With `strict`, any error refuses the whole import. A tree without one valid entry is
    refused.
    """
    existing = CatalogSnapshot.objects.filter(sha256=tree.sha256).first()
    if existing is not None:
        _record_import(existing, tenant, actor)
        return CatalogImportResult(snapshot=existing, created=False, problems=existing.problems)
    entries, problems = parse_tree(tree)
    problem_dicts = [problem.as_dict() for problem in problems]
    errors = [problem for problem in problems if problem.severity == ERROR]
    valid = [document for document in entries.values() if document.get("valid", True)]
    if strict and errors:
        raise CatalogRefused(f"{len(errors)} catalog files have problems (strict import): {errors[0]}.",
                             code="catalog_problems", extra={"problems": problem_dicts})
    if not valid:
        raise CatalogRefused(f"No catalog file could be read: {errors[0] if errors else 'none found'}.",
                             code="catalog_invalid", extra={"problems": problem_dicts})
    try:
        with transaction.atomic():
            snapshot = CatalogSnapshot.objects.create(
                sha256=tree.sha256, source=source, origin=origin[:500], parser_version=PARSER_VERSION,
                scenario_count=sum(1 for d in valid if d["kind"] == "scenario"),
                resource_count=sum(1 for d in valid if d["kind"] == "resource"),
                invalid_count=len(entries) - len(valid), ignored_files=tree.ignored_files, problems=problem_dicts,
                bundle=bundle, created_by=str(actor)[:200])
            CatalogEntry.objects.bulk_create([
                CatalogEntry(snapshot=snapshot, key=key, kind=document["kind"], name=document["name"],
                             version=(document.get("version") or "")[:100], path=document["path"],
                             valid=document.get("valid", True), document=document)
                for key, document in sorted(entries.items())
            ], batch_size=500)
            _record_import(snapshot, tenant, actor)
    except IntegrityError:
        # The same tree imported at the same moment by someone else: theirs is the snapshot.
        snapshot = CatalogSnapshot.objects.get(sha256=tree.sha256)
        _record_import(snapshot, tenant, actor)
        return CatalogImportResult(snapshot=snapshot, created=False, problems=snapshot.problems)
    audit_record(actor=actor, action="catalog.import", obj=snapshot, tenant_id=getattr(tenant, "pk", None),
                 detail={"sha256": snapshot.sha256, "source": source, "origin": origin[:200],
                         "problems": len(problem_dicts)})
    return CatalogImportResult(snapshot=snapshot, created=True, problems=problem_dicts)


def _record_import(snapshot: CatalogSnapshot, tenant, actor) -> None:
    CatalogImport.objects.get_or_create(snapshot=snapshot, tenant=tenant, defaults={"created_by": str(actor)[:200]})


def catalog_import_tarball(*, fileobj, actor, origin: str = "", tenant=None,
                           strict: bool = False) -> CatalogImportResult:
    """Import a catalog from a `.tar.gz` stream (checked with the bundle store's safety rules)."""
    tree = read_tarball(fileobj, limits=catalog_limits())
    return catalog_import(tree=tree, source="tarball", origin=origin, actor=actor, tenant=tenant, strict=strict)


def catalog_import_upload(*, received: ReceivedBundle, actor, tenant=None, declared_sha256: str | None = None,
                          strict: bool = False) -> CatalogImportResult:
    """Import a catalog tarball streamed in through the bundle store's upload handler.

    The upload is checked with the bundle store's safety rules (`bundle_check_received`), published as
    a bundle, and read back from the store as a catalog; a new snapshot references that bundle, which
    keeps the orphan sweep off it. A refused catalog leaves no bundle behind; a tree that already is a
    snapshot (from other bytes) leaves the new bundle unreferenced, and the sweep removes it.
    """
    bundle_check_received(received=received, declared_sha256=declared_sha256)
    with bundle_referenced(received=received) as bundle:
        with BlobStore().open(bundle.storage_key) as stream:
            tree = read_tarball(stream, limits=catalog_limits())
        return catalog_import(tree=tree, source="tarball", origin=f"bundle sha256:{bundle.sha256}", actor=actor,
                              tenant=tenant, strict=strict, bundle=bundle)


def catalog_fetch_request(*, git_url: str, ref: str, actor, tenant=None, strict: bool = False) -> CatalogFetch:
    """Queue a git import (`deployments.catalog_fetch` clones on the worker); the URL and ref are checked first."""
    git_url, ref = check_git_source(git_url, ref, allow_file=settings.SWARM_CATALOG_GIT_ALLOW_FILE)
    fetch = CatalogFetch.objects.create(tenant=tenant, git_url=git_url, ref=ref, strict=strict,
                                        created_by=str(actor)[:200])
    audit_record(actor=actor, action="catalog.fetch", obj=fetch, tenant_id=getattr(tenant, "pk", None),
                 detail={"git_url": git_url, "ref": ref})
    transaction.on_commit(lambda: tasks.catalog_fetch.delay(fetch.pk))
    return fetch


def catalog_fetch_run(*, fetch_id: int) -> CatalogFetch:
    """Clone and import one queued fetch; a redelivered or finished fetch is left as it is.

    The row is claimed (`queued` → `running`) under its lock, so two workers given the same message
    run it once; a fetch left `running` by a crashed worker is run again by the task's retry.
    """
    with transaction.atomic():
        fetch = CatalogFetch.objects.select_for_update().get(pk=fetch_id)
        if fetch.state in (FetchState.SUCCEEDED, FetchState.FAILED):
            return fetch
        fetch.state = FetchState.RUNNING
        fetch.save(update_fields=["state"])
    try:
        with checkout(fetch.git_url, fetch.ref, timeout=settings.SWARM_CATALOG_GIT_TIMEOUT_SECONDS,
                      allow_file=settings.SWARM_CATALOG_GIT_ALLOW_FILE) as (path, commit_sha):
            fetch.commit_sha = commit_sha
            tree = read_directory(path, limits=catalog_limits())
        result = catalog_import(tree=tree, source="git", origin=f"{fetch.git_url}@{fetch.ref} ({commit_sha})",
                                actor=fetch.created_by, tenant=fetch.tenant, strict=fetch.strict)
    except CatalogRefused as refused:
        fetch.state, fetch.error_code, fetch.error_detail = FetchState.FAILED, refused.code, refused.detail
        fetch.problems = refused.extra.get("problems", [])
    else:
        fetch.state, fetch.snapshot, fetch.created = FetchState.SUCCEEDED, result.snapshot, result.created
        fetch.problems = result.problems
    fetch.finished_at = timezone.now()
    fetch.save(update_fields=["state", "snapshot", "created", "commit_sha", "error_code", "error_detail",
                              "problems", "finished_at"])
    return fetch


def catalog_import_directory(*, path, actor, origin: str = "", tenant=None,
                             strict: bool = False) -> CatalogImportResult:
    """Import a catalog from a directory (a checkout, an unpacked tree); symlinks are never followed."""
    tree = read_directory(path, limits=catalog_limits())
    return catalog_import(tree=tree, source="directory", origin=origin or str(path), actor=actor, tenant=tenant,
                          strict=strict)


def _checked(content: dict, snapshot: CatalogSnapshot) -> dict:
    content = check_content(content)
    if not snapshot.entries.filter(key=entry_key("scenario", content["scenario"]), valid=True).exists():
        raise UnknownScenario(f"The catalog snapshot {snapshot.sha256[:12]}… has no valid scenario "
                              f"{content['scenario']!r}.", field="/scenario")
    # Walking the graph proves every swap applies and names an entry the snapshot has.
    scenario_analysis(snapshot=snapshot, scenario=content["scenario"], swaps=content["swaps"])
    return content


def _write_version(profile: DeploymentProfile, content: dict, snapshot: CatalogSnapshot, actor, note: str,
                   number: int) -> ProfileVersion:
    version = ProfileVersion.objects.create(
        profile=profile, number=number, snapshot=snapshot, scenario=content["scenario"], tier=content["tier"],
        swaps=content["swaps"], decisions=content["secrets"], settings=content["settings"], note=note[:500],
        created_by=str(actor)[:200])
    profile.current_version = version
    profile.save(update_fields=["current_version"])
    return version


def profile_create(*, tenant, slug: str, snapshot: CatalogSnapshot, scenario: str, tier: str, actor, name: str = "",
                   swaps: dict | None = None, secrets: dict | None = None, settings: dict | None = None,
                   note: str = "") -> ProfileVersion:
    """A new profile of `tenant` and its version 1; refuses a taken slug, an unknown tier, scenario or swap."""
    content = _checked({"snapshot": snapshot.sha256, "scenario": scenario, "tier": tier, "swaps": swaps or {},
                        "secrets": secrets or {}, "settings": settings or {}}, snapshot)
    try:
        with transaction.atomic():
            profile = DeploymentProfile.objects.create(tenant=tenant, slug=slug, name=name or slug,
                                                       created_by=str(actor)[:200])
            version = _write_version(profile, content, snapshot, actor, note or "created", 1)
            # The profile's tenant sees the snapshot its profile uses (an admin may create it for the tenant).
            _record_import(snapshot, tenant, actor)
    except IntegrityError:
        raise InvalidProfile(f"The tenant already has a deployment profile {slug!r}.", code="profile_exists",
                             field="/slug", status_code=409) from None
    audit_record(actor=actor, action="profile.create", obj=profile, tenant_id=tenant.pk,
                 detail={"version": 1, "scenario": scenario, "tier": content["tier"], "snapshot": snapshot.sha256})
    return version


@dataclass(frozen=True)
class ProfileChange:
    """The version a change left current, whether the change created it, and what changed."""

    version: ProfileVersion
    created: bool
    changes: list[dict]


def _change(profile: DeploymentProfile, actor, note: str, mutate: Callable[[dict], dict],
            snapshot: CatalogSnapshot | None = None) -> ProfileChange:
    """Apply `mutate` to the current content under the profile's row lock, and write the result as a new version.

    The lock serialises changes to one profile: two at once get consecutive numbers, and neither
    is computed from a version the other has already replaced.
    """
    with transaction.atomic():
        locked = DeploymentProfile.objects.select_for_update().get(pk=profile.pk)
        current = ProfileVersion.objects.select_related("snapshot").get(pk=locked.current_version_id)
        target_snapshot = snapshot or current.snapshot
        content = mutate({**current.content(), "snapshot": target_snapshot.sha256})
        content = _checked(content, target_snapshot)
        changes = diff(current.content(), content)
        if not changes:
            return ProfileChange(version=current, created=False, changes=[])
        version = _write_version(locked, content, target_snapshot, actor, note, current.number + 1)
    profile.current_version = version
    audit_record(actor=actor, action="profile.change", obj=locked, tenant_id=locked.tenant_id,
                 detail={"version": version.number, "changes": changes})
    return ProfileChange(version=version, created=True, changes=changes)


def profile_update(*, profile: DeploymentProfile, actor, note: str = "", snapshot=UNSET, scenario=UNSET, tier=UNSET,
                   swaps=UNSET, secrets=UNSET, settings=UNSET) -> ProfileChange:
    """A new version of `profile` with the given fields replaced (the others carried over); None clears a mapping."""
    replaced = {field: value for field, value in (("scenario", scenario), ("tier", tier), ("swaps", swaps),
                                                  ("secrets", secrets), ("settings", settings)) if value is not UNSET}

    def mutate(content: dict) -> dict:
        return {**content, **{field: {} if value is None else value for field, value in replaced.items()}}

    return _change(profile, actor, note, mutate, snapshot=None if snapshot is UNSET else snapshot)


def profile_swap(*, profile: DeploymentProfile, original: str, replacement: str, actor,
                 note: str = "") -> ProfileChange:
    """A new version with `original` swapped for `replacement` (added to the current swaps)."""
    def mutate(content: dict) -> dict:
        return {**content, "swaps": {**content["swaps"], original: replacement}}

    return _change(profile, actor, note or f"swap {original} → {replacement}", mutate)


def profile_unswap(*, profile: DeploymentProfile, original: str, actor, note: str = "") -> ProfileChange:
    """A new version without the swap of `original` (nothing changes when it was not swapped)."""
    def mutate(content: dict) -> dict:
        return {**content, "swaps": {key: value for key, value in content["swaps"].items() if key != original}}

    return _change(profile, actor, note or f"unswap {original}", mutate)


def profile_decide_secret(*, profile: DeploymentProfile, secret_id: str, decision: dict | None, actor,
                          note: str = "") -> ProfileChange:
    """A new version with the decision for one secret set (or removed, with None)."""
    return profile_decide_secrets(profile=profile, decisions={secret_id: decision}, actor=actor,
                                  note=note or f"secret {secret_id}")


def profile_decide_secrets(*, profile: DeploymentProfile, decisions: dict[str, dict | None], actor,
                           note: str = "") -> ProfileChange:
    """One new version with several secrets' decisions set (a None removes that secret's decision)."""
    def mutate(content: dict) -> dict:
        secrets = {key: value for key, value in content["secrets"].items() if key not in decisions}
        secrets.update({key: value for key, value in decisions.items() if value is not None})
        return {**content, "secrets": secrets}

    return _change(profile, actor, note or f"secrets {', '.join(sorted(decisions))}", mutate)
