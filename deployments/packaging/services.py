"""The package run: requested once (202), advanced step by step by the `deployments.package_advance` task.

Every step takes the run's row lock (`select_for_update(skip_locked=True)`), so two workers given the same
message advance it once; a step that finds the run finished does nothing.
"""
from __future__ import annotations

import json
import logging
import shutil

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from builds.choices import TERMINAL_STATES, BuildState, TriggerKind
from builds.config import required_drone_labels, validate_build_config
from builds.models import Artifact, Build, Job
from builds.services import build_cancel, build_trigger, job_create, job_update
from builds.choices import ArtifactState
from bundles.blobstore import BlobStore
from bundles.services import bundle_limits
from bundles.upload import bundle_receive_file
from deployments.choices import PACKAGE_FINISHED, PackageState, RegisterAs
from deployments.errors import DeploymentError
from deployments.models import DeploymentProfile, PackagePlatform, PackageRun
from deployments.packaging.assets import AssetFailed, asset_procure, manifest_assets
from deployments.packaging.staging import stage_platform
from deployments.packaging.steps import platform_build
from drones.models import Drone
from swarm.core.errors import Conflict
from swarm.core.principals import system_principal
from swarm.core.services import audit_record

logger = logging.getLogger(__name__)


class PackageFailed(DeploymentError):
    """A package request refused up front (nothing queued)."""

    code = "package_refused"
    status_code = 422


def _log(run: PackageRun, line: str) -> None:
    run.log += f"{timezone.now().isoformat(timespec='seconds')} {line}\n"


def package_request(*, profile: DeploymentProfile, platforms: list[str], register_as: str, git_url: str,
                    ref: str = "", name: str = "", version: str = "1.0.0", labels: dict | None = None,
                    actor) -> PackageRun:
    """Queue a package run of the profile's current version (its manifest frozen now); 202 material.

    Refused up front (422) when the manifest cannot be assembled or a platform cannot be built from it.
    """
    from deployments import selectors, tasks

    version_row = selectors.profile_version_get(profile=profile)
    assembled = selectors.profile_manifest(version=version_row)
    labels = labels or {}
    for platform in platforms:
        platform_build(assembled.document, platform, extra_labels=labels.get(platform, []))
    if register_as not in RegisterAs.values:
        raise PackageFailed(f"register_as is one of {', '.join(RegisterAs.values)}.", field="register_as")
    with transaction.atomic():
        run = PackageRun.objects.create(
            tenant_id=profile.tenant_id, profile=profile, profile_version=version_row,
            manifest_sha256=assembled.sha256, manifest_canonical=assembled.canonical.decode("ascii"),
            register_as=register_as, register_name=name or profile.slug, version_label=version, git_url=git_url,
            ref=ref, labels=labels, created_by=str(actor)[:200])
        for platform in sorted(set(platforms)):
            PackagePlatform.objects.create(run=run, platform=platform)
        _log(run, f"queued: {', '.join(sorted(set(platforms)))} of {profile.slug} v{version_row.number} "
                  f"(manifest sha256 {assembled.sha256})")
        run.save(update_fields=["log"])
        audit_record(actor=actor, action="package.request", obj=run, tenant_id=profile.tenant_id,
                     detail={"platforms": sorted(set(platforms)), "manifest_sha256": assembled.sha256})
        transaction.on_commit(lambda: tasks.package_advance.delay(run.pk))
    return run


def package_advance(*, run_id: int) -> float | None:
    """Take the run one step further; answers seconds until it wants to look again, None when finished."""
    with transaction.atomic():
        run = PackageRun.objects.select_for_update(skip_locked=True).filter(pk=run_id).first()
        if run is None:
            return None if not PackageRun.objects.filter(pk=run_id).exists() else settings.SWARM_PACKAGE_POLL_SECONDS
        if run.state in PACKAGE_FINISHED:
            return None
        if run.state in (PackageState.QUEUED, PackageState.PROCURING):
            _procure(run)
            if run.state == PackageState.FAILED:
                return None
            _start_builds(run)
            run.save()
            return settings.SWARM_PACKAGE_POLL_SECONDS
        if run.state == PackageState.BUILDING:
            if not _builds_done(run):
                run.save()
                return settings.SWARM_PACKAGE_POLL_SECONDS
            _stage_and_register(run)
            return None
    return None


def _finish(run: PackageRun, state: str, reason: str = "") -> None:
    run.state = state
    run.reason = reason
    run.finished_at = timezone.now()
    _log(run, f"{state}" + (f": {reason}" if reason else ""))
    run.save()


def _procure(run: PackageRun) -> None:
    run.state = PackageState.PROCURING
    manifest = json.loads(run.manifest_canonical)
    procured = []
    for asset in manifest_assets(manifest):
        try:
            result = asset_procure(asset=asset)
        except AssetFailed as failure:
            run.platforms.update(state=PackageState.FAILED, reason=str(failure))
            _finish(run, PackageState.FAILED, str(failure))
            return
        procured.append(result)
        _log(run, f"asset {asset['path']}: sha256 {asset['sha256']} "
                  + ("downloaded and verified" if result["downloaded"] else "already stored, not downloaded"))
    run.assets = procured


def _job_for(run: PackageRun, platform: str, config: dict) -> Job:
    """The job that builds this profile for this platform: created once, its config brought up to date."""
    name = f"package-{run.profile.slug}-{platform}"[:200]
    job = Job.objects.filter(tenant_id=run.tenant_id, name=name).first()
    if job is None:
        return job_create(name=name, scm_url=run.git_url, build_config=config, tenant=run.tenant,
                          description=f"Builds of package runs of profile {run.profile.slug} for {platform}.",
                          actor=run.created_by or "package")
    return job_update(job=job, scm_url=run.git_url, build_config=config, actor=run.created_by or "package")


def _missing_labels(required: list[str]) -> list[str] | None:
    """None when some drone has every label; else the labels no drone that has the most of them carries."""
    if Drone.objects.with_labels(required).exists():
        return None
    best = set(required)
    for labels in Drone.objects.values_list("labels", flat=True):
        best = min(best, set(required) - set(labels or []), key=len)
    return sorted(best)


def _start_builds(run: PackageRun) -> None:
    manifest = json.loads(run.manifest_canonical)
    run.state = PackageState.BUILDING
    for row in run.platforms.all():
        config = validate_build_config(platform_build(manifest, row.platform,
                                                      extra_labels=run.labels.get(row.platform, [])))
        row.required_labels = required_drone_labels(config)
        missing = _missing_labels(row.required_labels)
        if missing is not None:
            row.state = PackageState.FAILED
            row.reason = (f"no drone can build {row.platform}: it needs the labels {', '.join(row.required_labels)} "
                          f"and no drone has {', '.join(missing)}")
            row.save()
            _log(run, f"{row.platform}: {row.reason}")
            continue
        job = _job_for(run, row.platform, config)
        build = build_trigger(job=job, trigger=TriggerKind.API, triggered_by=f"package {run.pk}",
                              branch=run.ref, params={"SWARM_PACKAGE_RUN": run.pk,
                                                      "SWARM_PACKAGE_PLATFORM": row.platform})
        row.build, row.state = build, PackageState.BUILDING
        row.save()
        _log(run, f"{row.platform}: build {build.pk} ({job.name} #{build.number}) queued for drones with "
                  f"{', '.join(row.required_labels)}")


def _builds_done(run: PackageRun) -> bool:
    """Record every build that finished; True once no platform is still building."""
    building = False
    for row in run.platforms.select_related("build"):
        if row.state != PackageState.BUILDING:
            continue
        build = Build.objects.get(pk=row.build_id)
        if build.state not in TERMINAL_STATES:
            if build.state == BuildState.PENDING and _missing_labels(build.required_labels) is not None:
                build_cancel(build=build, actor=f"package {run.pk}")
                row.state = PackageState.FAILED
                row.reason = (f"no drone can build {row.platform} any more: it needs the labels "
                              f"{', '.join(build.required_labels)}")
                row.save()
                continue
            building = True
            continue
        stored = Artifact.objects.filter(build=build, attempt__number=build.attempt_count,
                                         state=ArtifactState.STORED)
        row.artifacts = [{"path": a.path, "sha256": a.sha256, "size": a.size, "storage_key": a.storage_key}
                         for a in stored]
        if build.state == BuildState.SUCCESS:
            wanted = set(platform_build(json.loads(run.manifest_canonical), row.platform)["artifacts"])
            missing = sorted(wanted - {a["path"] for a in row.artifacts})
            if missing:
                row.state, row.reason = PackageState.FAILED, f"build {build.pk} stored no {', '.join(missing)}"
            else:
                row.state = PackageState.STAGING
        else:
            row.state = PackageState.CANCELED if build.state == BuildState.CANCELED else PackageState.FAILED
            row.reason = f"build {build.pk} {build.state}" + (f" ({build.failure_reason})" if build.failure_reason
                                                              else "")
        row.save()
        _log(run, f"{row.platform}: build {build.pk} {build.state}; artifacts "
                  + (", ".join(f"{a['path']} sha256 {a['sha256']}" for a in row.artifacts) or "none"))
    return not building


def _stage_and_register(run: PackageRun) -> None:
    rows = list(run.platforms.all())
    failed = [row for row in rows if row.state != PackageState.STAGING]
    if failed:
        # The others keep their build artifacts (recorded on their rows); nothing is registered.
        for row in rows:
            if row.state == PackageState.STAGING:
                row.state = PackageState.SUCCEEDED
                row.reason = "built; not registered because another platform failed"
                row.save()
        _finish(run, PackageState.FAILED, "; ".join(f"{row.platform}: {row.reason}" for row in failed))
        return
    run.state = PackageState.STAGING
    metadata_base = {"manifest_sha256": run.manifest_sha256, "package_run": run.pk, "profile": run.profile.slug,
                     "profile_version": run.profile_version.number}
    for row in rows:
        packed, work = stage_platform(manifest_canonical=run.manifest_canonical.encode("ascii"),
                                      binaries=row.artifacts, assets=run.assets)
        try:
            received = bundle_receive_file(packed.path, store=BlobStore(), limits=bundle_limits(),
                                           max_bytes=settings.SWARM_BUNDLE_MAX_BYTES)
            label = f"{run.version_label}+{row.platform}"
            metadata = {**metadata_base, "platform": row.platform,
                        "artifacts": [{k: a[k] for k in ("path", "sha256", "size")} for a in row.artifacts]}
            row.registered_version, bundle = _register(run, label, received, metadata)
        except DeploymentError:
            raise
        except Exception as error:  # noqa: BLE001 - a refused registration is the platform's reason
            row.state, row.reason = PackageState.FAILED, f"registration refused: {getattr(error, 'detail', error)}"
            row.save()
            _finish(run, PackageState.FAILED, f"{row.platform}: {row.reason}")
            return
        finally:
            shutil.rmtree(work, ignore_errors=True)
        row.bundle, row.state = bundle, PackageState.SUCCEEDED
        row.save()
        _log(run, f"{row.platform}: tarball sha256 {packed.sha256} ({packed.member_count} members) registered as "
                  f"{row.registered_version}")
    _finish(run, PackageState.SUCCEEDED)


def _register(run: PackageRun, label: str, received, metadata: dict):
    principal = system_principal(f"package {run.pk}")
    if run.register_as == RegisterAs.WORKFLOW:
        from workflows.services.registry import workflow_version_register

        registered = workflow_version_register(principal=principal, tenant_slug=run.tenant.slug,
                                               workflow_slug=run.register_name, version=label, received=received,
                                               metadata=metadata)
        version = registered.version
        return f"workflow:{version.workflow_id}:{version.version}", version.bundle
    from drones.payloads.services import payload_version_push

    pushed = payload_version_push(actor=principal, type_name=run.register_name, version=label, received=received,
                                  notes=json.dumps(metadata, sort_keys=True))
    return f"payload:{pushed.version.payload_type_id}:{pushed.version.version}", pushed.version.bundle


def package_cancel(*, run: PackageRun, actor) -> PackageRun:
    """Cancel a run and every build of it still going; a finished run is a 409."""
    with transaction.atomic():
        run = PackageRun.objects.select_for_update().get(pk=run.pk)
        if run.state in PACKAGE_FINISHED:
            raise Conflict(f"Package run {run.pk} is already {run.state}.", code="already_finished")
        for row in run.platforms.select_related("build"):
            if row.build is not None and row.build.state not in TERMINAL_STATES:
                build_cancel(build=row.build, actor=actor)
            if row.state not in PACKAGE_FINISHED:
                row.state, row.reason = PackageState.CANCELED, f"canceled by {actor}"
                row.save()
        _finish(run, PackageState.CANCELED, f"canceled by {actor}")
        audit_record(actor=actor, action="package.cancel", obj=run, tenant_id=run.tenant_id)
    return run
