"""Reads of payloads. Payloads are fleet-wide (not tenant-owned): any admin, engine or read token sees them."""
from __future__ import annotations

from django.db.models import QuerySet

from drones.payloads.choices import ACTIVE_ROLLOUT_STATES
from drones.payloads.models import (
    DronePayloadState,
    PayloadEvent,
    PayloadType,
    PayloadVersion,
    Release,
    Rollout,
    RolloutTarget,
)


def payload_type_queryset() -> QuerySet[PayloadType]:
    return PayloadType.objects.all()


def payload_version_queryset(*, type_name: str | None = None) -> QuerySet[PayloadVersion]:
    versions = PayloadVersion.objects.select_related("payload_type", "bundle")
    return versions.filter(payload_type__name=type_name) if type_name else versions


def release_queryset() -> QuerySet[Release]:
    return Release.objects.all()


def rollout_queryset(*, active: bool | None = None) -> QuerySet[Rollout]:
    rollouts = Rollout.objects.select_related("release", "payload_version__payload_type", "payload_version__bundle")
    if active is True:
        rollouts = rollouts.filter(state__in=ACTIVE_ROLLOUT_STATES)
    return rollouts


def rollout_targets(rollout: Rollout) -> QuerySet[RolloutTarget]:
    return rollout.targets.select_related("drone", "payload_version__payload_type").order_by("position", "id")


def rollout_events(rollout: Rollout) -> QuerySet[PayloadEvent]:
    return rollout.events.select_related("drone", "payload_type").order_by("-at", "-id")


def drift_states(*, drifted_only: bool = True) -> QuerySet[DronePayloadState]:
    states = DronePayloadState.objects.select_related("drone", "payload_type", "desired_version__bundle")
    return states.filter(drifted=True) if drifted_only else states


def deployment_matrix() -> tuple[list[PayloadType], list[dict]]:
    """Drones × payload types, each cell `in_sync | drifted | deploying | failed | none` (the admin matrix)."""
    from drones.models import Drone
    from drones.payloads.choices import DONE_TARGET_STATES, TargetState

    types = list(PayloadType.objects.order_by("name"))
    states = {(state.drone_id, state.payload_type_id): state
              for state in DronePayloadState.objects.select_related("desired_version")}
    deploying, failed = set(), set()
    for drone_id, type_id, state in (RolloutTarget.objects.filter(rollout__state__in=ACTIVE_ROLLOUT_STATES)
                                     .values_list("drone_id", "payload_version__payload_type_id", "state")):
        if state not in DONE_TARGET_STATES:
            deploying.add((drone_id, type_id))
        elif state == TargetState.FAILED:
            failed.add((drone_id, type_id))
    rows = []
    for drone in Drone.objects.order_by("name"):
        cells = []
        for payload_type in types:
            key = (drone.id, payload_type.id)
            state = states.get(key)
            if key in deploying:
                status = "deploying"
            elif key in failed:
                status = "failed"
            elif state is None or (state.desired_version_id is None and not state.reported_sha256):
                status = "none"
            elif state.drifted:
                status = "drifted"
            else:
                status = "in_sync"
            cells.append({"status": status, "version": state.desired_version.version
                          if state is not None and state.desired_version_id else "",
                          "reported": state.reported_sha256[:12] if state is not None else "",
                          "detail": state.drift_detail if state is not None else ""})
        rows.append({"drone": drone, "cells": cells})
    return types, rows
