"""Drone models (filled in by the drones issue)."""
