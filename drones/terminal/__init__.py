"""Terminals and system logs of drones, relayed to the admin.

* `sessions`  — who may open a terminal, the per-drone limit, the audit trail (writes);
* `consumer`  — `/ws/terminal/<drone>/`, the browser's end;
* `relay`     — the agent's end: its frames and messages to the session's browser;
* `recording` — asciinema v2 casts in the bundle store;
* `ssh`       — the direct SSH transport, pinned host keys only;
* `syslog`    — `/ws/syslog/<drone>/`, a drone's system log tailed by its agent.

Modules import what they need from their siblings; this package re-exports nothing.
"""
