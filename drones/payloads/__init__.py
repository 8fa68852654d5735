"""Payloads: what the control plane ships *to* drones, and how it gets there.

Payload types and immutable versions (content in the bundle store),
releases (immutable manifests of versions), per-drone desired vs reported
state and drift, and rollouts (Nomad's `update` strategy with Mender's
per-device states), advanced by one idempotent Celery task per rollout.

Layout: `choices`, `models` (re-exported from `drones.models`), `services`
(writes), `engine` (the rollout state machine), `drift`, `selectors`,
`heartbeat` (the heartbeat hook), `tasks`, `events` (live notices), `api/`,
`admin`, `consumers`. See docs/payloads.md.
"""
