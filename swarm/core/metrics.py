"""Scrape-time Prometheus collectors (computed when /metrics is read), registered once per process."""
from __future__ import annotations

from prometheus_client import REGISTRY

_registered: set[type] = set()


def register_collector_once(collector) -> None:
    """Register `collector` on the default registry, unless one of its class already is (ready() may run twice)."""
    if type(collector) in _registered:
        return
    REGISTRY.register(collector)
    _registered.add(type(collector))
