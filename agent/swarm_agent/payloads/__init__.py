"""Payloads on the drone: apply `deploy_payload` commands, report each state, upgrade the agent itself.

* `install`  — fetch through the verified bundle cache (the same code as
  `swarm-agent boot`), unpack safely to `<dir>/releases/<sha256>/`, switch
  `<dir>/current` atomically, health-check, go back on failure, prune;
* `tree`     — what is installed really is what was shipped (file hashes), for
  the `payload_hashes` every heartbeat carries;
* `health`   — the health checks (a command, an HTTP URL);
* `selfupgrade`, `probe`, `launcher` — the agent upgrading itself;
* `reporter` — states to the control plane over HTTP, coalesced.

The plugin that wires them into `swarm-agent run` is `swarm_agent.plugins.payloads`.
"""
