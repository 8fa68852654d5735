"""Prometheus metrics of the fleet's health check, read at scrape time (every replica reports the same)."""
from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from swarm.core.metrics import register_collector_once

SWEEP_SECONDS = ("swarm_drone_health_sweep_seconds", "How long the last health sweep took.")
SWEEP_AGE = ("swarm_drone_health_sweep_age_seconds",
             "Seconds since the last health sweep ended (grows when beat or the workers stop).")
SWEEP_DRONES = ("swarm_drone_health_sweep_drones", "Drones the last health sweep pinged, evaluated and acted on.")


class HealthSweepCollector:
    """The last health sweep (drones.selectors.last_health_sweep); nothing until a sweep has run."""

    def describe(self):
        yield GaugeMetricFamily(*SWEEP_SECONDS)
        yield GaugeMetricFamily(*SWEEP_AGE)
        yield GaugeMetricFamily(*SWEEP_DRONES, labels=["step"])

    def collect(self):
        from drones.selectors import last_health_sweep

        seconds, age = GaugeMetricFamily(*SWEEP_SECONDS), GaugeMetricFamily(*SWEEP_AGE)
        drones = GaugeMetricFamily(*SWEEP_DRONES, labels=["step"])
        sweep = last_health_sweep()
        if sweep is not None:
            seconds.add_metric([], sweep["seconds"])
            age.add_metric([], round(sweep["age_seconds"], 3))
            for step in ("pinged", "evaluated", "acted"):
                drones.add_metric([step], sweep[step])
        yield seconds
        yield age
        yield drones


def register_collector() -> None:
    """Register the collector on the default registry once per process."""
    register_collector_once(HealthSweepCollector())
