"""Admin of the drones app, one module per seam; importing this package registers every page.

* `fleet`   — drones (health, levers, the operator's consoles), join tokens, hypervisors, the ladder's history.
* `console` — the fleet topology, a drone's terminal and system log, terminal sessions and their recordings.
* payload types, versions, releases, rollouts and the drift view register in `drones/payloads/admin.py`.
"""
from drones.admin import console, fleet  # noqa: F401  (each registers its pages)
from drones.payloads import admin as payload_admin  # noqa: F401
