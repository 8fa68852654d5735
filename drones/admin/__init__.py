"""Admin of the drones app, one module per seam; importing this package registers every page.

* `fleet`   — drones (health, levers, the operator's consoles), join tokens, hypervisors, the ladder's history.
* `console` — the fleet topology, a drone's terminal and system log, terminal sessions and their recordings.
"""
from drones.admin import console, fleet  # noqa: F401  (each registers its pages)
