"""Writes of the drone fleet: one keyword-only `<entity>_<action>()` per use case. One module per seam:

* `join_tokens`  — issue, revoke, reuse and check join tokens; provisioning progress.
* `registration` — a machine joins (or re-joins) with a join token and gets its drone token.
* `heartbeat`    — the one-statement heartbeat (view and event loop), its answer, and the hooks other
                   apps add to it (the builds app renews leases through one; drones never import builds).
* `presence`     — WebSocket connected/disconnected, pings and pongs, the health sweep's record.
* `holds`        — pause, drain, resume, a fixed drone type, an escalation reset.

The escalation ladder itself (health evaluation, cooldowns) is drones/ladder.py.
This package re-exports the public names, so callers write
`from drones import services` and `services.drone_register(...)`; modules of
the package import from their sibling modules, never from here.
"""
from drones.services.heartbeat import (
    FIRST_HEARTBEAT_SQL,
    HEARTBEAT_SQL,
    MAX_METRICS_BYTES,
    HeartbeatStatement,
    action_for,
    drone_heartbeat,
    drone_heartbeat_async,
    drone_intervals,
    first_heartbeat_params,
    heartbeat_answer,
    heartbeat_needs_sync_hooks,
    heartbeat_statement,
    register_heartbeat_hook,
    run_heartbeat_hooks,
    run_heartbeat_hooks_async,
)
from drones.services.holds import drone_drain, drone_pause, drone_reset_escalation, drone_resume, drone_set_type
from drones.services.join_tokens import (
    join_token_check,
    join_token_issue,
    join_token_mark_script_fetched,
    join_token_reuse,
    join_token_revoke,
)
from drones.services.presence import (
    HEALTH_SWEEP_RECORD_TTL,
    PING_RECORD_TTL,
    drone_ping,
    drone_ping_all,
    drone_ping_send,
    drone_pong_record,
    drone_ws_connected,
    drone_ws_disconnected,
    drones_ping_due,
    drones_websocket_silent_mark,
    health_sweep_record,
)
from drones.services.registration import Registration, drone_register

__all__ = [
    "FIRST_HEARTBEAT_SQL",
    "HEALTH_SWEEP_RECORD_TTL",
    "HEARTBEAT_SQL",
    "MAX_METRICS_BYTES",
    "PING_RECORD_TTL",
    "HeartbeatStatement",
    "Registration",
    "action_for",
    "drone_drain",
    "drone_heartbeat",
    "drone_heartbeat_async",
    "drone_intervals",
    "drone_pause",
    "drone_ping",
    "drone_ping_all",
    "drone_ping_send",
    "drone_pong_record",
    "drone_register",
    "drone_reset_escalation",
    "drone_resume",
    "drone_set_type",
    "drone_ws_connected",
    "drone_ws_disconnected",
    "drones_ping_due",
    "drones_websocket_silent_mark",
    "first_heartbeat_params",
    "heartbeat_answer",
    "heartbeat_needs_sync_hooks",
    "heartbeat_statement",
    "health_sweep_record",
    "join_token_check",
    "join_token_issue",
    "join_token_mark_script_fetched",
    "join_token_reuse",
    "join_token_revoke",
    "register_heartbeat_hook",
    "run_heartbeat_hooks",
    "run_heartbeat_hooks_async",
]
