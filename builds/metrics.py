"""Prometheus metrics of builds, served on /metrics next to django-prometheus' own.

Gauges are computed from the database at scrape time (so every replica
reports the same truth); the claim latency and claim group size histograms are
observed per process.
"""
from __future__ import annotations

import logging

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily

from swarm.core.metrics import register_collector_once

logger = logging.getLogger(__name__)

CLAIM_SECONDS = Histogram(
    "swarm_build_claim_seconds", "Time to answer POST /api/v1/builds/request (claim or no build).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CLAIM_GROUP_SIZE = Histogram(
    "swarm_build_claim_group_size", "Claims sent to the database together, per group (builds/claim_groups.py).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


class BuildsCollector:
    """Queue depth per queue, builds by state, drones by status and escalation level."""

    def describe(self):
        """Metric names without touching the database (called once, at registration)."""
        yield GaugeMetricFamily("swarm_build_queue_depth", "Pending builds per queue.", labels=["queue"])
        yield GaugeMetricFamily("swarm_builds", "Builds by state.", labels=["state"])
        yield GaugeMetricFamily("swarm_drones", "Drones by status and escalation level.",
                                labels=["status", "escalation_level"])

    def collect(self):
        from django.db.models import Count

        from builds.choices import BuildState
        from builds.models import Build, Queue

        depth = GaugeMetricFamily("swarm_build_queue_depth", "Pending builds per queue.", labels=["queue"])
        builds = GaugeMetricFamily("swarm_builds", "Builds by state.", labels=["state"])
        drones = GaugeMetricFamily("swarm_drones", "Drones by status and escalation level.",
                                   labels=["status", "escalation_level"])
        try:
            pending = dict(Build.objects.filter(state=BuildState.PENDING).values_list("queue__name")
                           .annotate(n=Count("id")).values_list("queue__name", "n"))
            for name in Queue.objects.values_list("name", flat=True):
                depth.add_metric([name], pending.get(name, 0))
            by_state = dict(Build.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
            for state in BuildState.values:
                builds.add_metric([state], by_state.get(state, 0))
            from drones.models import Drone

            for status, level, count in (Drone.objects.values_list("status", "escalation_level")
                                         .annotate(n=Count("id")).values_list("status", "escalation_level", "n")):
                drones.add_metric([status, str(level)], count)
        except Exception:  # noqa: BLE001 - a scrape must answer even when the database is away
            logger.warning("could not compute build metrics", exc_info=True)
        yield depth
        yield builds
        yield drones


def register_collector() -> None:
    """Register the collector on the default registry once per process."""
    register_collector_once(BuildsCollector())
