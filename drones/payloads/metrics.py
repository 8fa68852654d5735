"""Prometheus gauge `swarm_drone_payload_drift{payload_type}`: drifted drones, read at scrape time."""
from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from swarm.core.metrics import register_collector_once

DRIFT = ("swarm_drone_payload_drift", "Drones whose reported payload hash differs from the desired version's "
         "with no rollout in progress, per payload type.")


class PayloadDriftCollector:
    """Counts drifted (drone, payload type) pairs from the database; every replica reports the same."""

    def describe(self):
        yield GaugeMetricFamily(*DRIFT, labels=["payload_type"])

    def collect(self):
        from drones.payloads.drift import drift_counts

        gauge = GaugeMetricFamily(*DRIFT, labels=["payload_type"])
        try:
            counts = drift_counts()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is away
            counts = {}
        for name, count in sorted(counts.items()):
            gauge.add_metric([name], count)
        yield gauge


def register_collector() -> None:
    """Register the collector on the default registry once per process."""
    register_collector_once(PayloadDriftCollector())
