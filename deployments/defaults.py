"""What Swarm assumes about common resources when a catalog says nothing about them.

Each field here is overridden by the catalog: a resource's own `requirements`, `runs_as`,
`swappable_with` and tier statements (resource.json `deployment.profiles`, service.json
`deployment.tiers`), and a dependent's `tier_feasibility` statements, always win. The values are
sizes of one small production instance (the image's documented minimum plus working room),
not the largest a deployment could grow to; docs/deployments.md#requirements has the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from deployments.requirements import Requirements


@dataclass(frozen=True)
class TierStatement:
    """A claim about one dependency on one tier: supported or not, how well, why."""

    supported: bool
    score: float
    reason: str


@dataclass(frozen=True)
class ResourceDefaults:
    """Swarm's assumptions about one well-known resource."""

    requirements: Requirements
    #: `service` (a process the bundle runs), `library` (linked into the scenario's own binary),
    #: `remote` (a hosted API: nothing runs locally) or `host` (must already be on the machine).
    runs_as: str = "service"
    tiers: dict[str, TierStatement] = field(default_factory=dict)
    swappable_with: tuple[str, ...] = ()


def _r(ram_mb, disk_mb, cpu_cores, gpu=False, gpu_vram_mb=0) -> Requirements:
    return Requirements(ram_mb=ram_mb, disk_mb=disk_mb, cpu_cores=cpu_cores, gpu=gpu, gpu_vram_mb=gpu_vram_mb)


_NO_SERVER_ON_A_PHONE = TierStatement(False, 0.0, "a phone app cannot run a server process")


def _server(name: str, desktop_score: float, desktop_reason: str) -> dict[str, TierStatement]:
    """Tier statements of a server-style resource: fine on servers, doubtful on a desktop, impossible on a phone."""
    return {
        "desktop": TierStatement(desktop_score >= 0.5, desktop_score, desktop_reason),
        "mobile": _NO_SERVER_ON_A_PHONE,
        "local": TierStatement(True, 1.0, f"{name} runs in the full local stack"),
        "server": TierStatement(True, 1.0, f"{name} runs as a service on the server"),
        "saas": TierStatement(True, 1.0, f"{name} runs as a managed service"),
        "enterprise": TierStatement(True, 1.0, f"{name} runs on the appliance"),
    }


_ALL_TIERS_REMOTE = {
    tier: TierStatement(True, 0.9, "a hosted API: needs network access and an account")
    for tier in ("local", "desktop", "mobile", "saas", "server", "enterprise")
}

RESOURCES: dict[str, ResourceDefaults] = {
    "postgres": ResourceDefaults(
        _r(512, 1024, 1),
        tiers=_server("PostgreSQL", 0.3, "a PostgreSQL server does not ship inside a desktop app; swap to sqlite"),
        swappable_with=("sqlite",)),
    "mysql": ResourceDefaults(
        _r(512, 1024, 1), tiers=_server("MySQL", 0.3, "a MySQL server does not ship inside a desktop app"),
        swappable_with=("sqlite",)),
    "mongodb": ResourceDefaults(
        _r(1024, 2048, 1), tiers=_server("MongoDB", 0.3, "a MongoDB server does not ship inside a desktop app")),
    "redis": ResourceDefaults(
        _r(256, 512, 0.5),
        tiers=_server("Redis", 0.4, "no vendorable cross-platform Redis server for every desktop OS")),
    "qdrant": ResourceDefaults(
        _r(1024, 2048, 1), tiers=_server("Qdrant", 0.6, "runs as a native binary beside the app; heavy for a desktop")),
    "minio": ResourceDefaults(
        _r(512, 10240, 1), tiers=_server("MinIO", 0.3, "an object-storage server is out of place in a desktop app")),
    "n8n": ResourceDefaults(
        _r(512, 1024, 1), tiers=_server("n8n", 0.3, "n8n is a Node.js server with its own database")),
    "vault": ResourceDefaults(
        _r(256, 256, 0.5), tiers=_server("Vault", 0.2, "a secrets server does not belong in a desktop app")),
    "ollama": ResourceDefaults(
        _r(8192, 10240, 4),
        tiers={**_server("Ollama", 0.6, "runs on the desktop, but models are gigabytes and CPU inference is slow"),
               "mobile": TierStatement(False, 0.1, "local LLM inference does not fit a phone")},
        swappable_with=("openrouter",)),
    "whisper": ResourceDefaults(
        _r(2048, 2048, 2), tiers=_server("Whisper", 0.6, "speech models run on a desktop CPU, slowly")),
    "comfyui": ResourceDefaults(
        _r(8192, 20480, 4, gpu=True, gpu_vram_mb=8192),
        tiers=_server("ComfyUI", 0.4, "image generation needs a GPU most desktops lack")),
    "browserless": ResourceDefaults(
        _r(1024, 1024, 1), tiers=_server("Browserless", 0.4, "a headless Chrome farm in a desktop app")),
    "searxng": ResourceDefaults(_r(256, 256, 0.5), tiers=_server("SearXNG", 0.5, "a metasearch server")),
    "node-red": ResourceDefaults(_r(256, 256, 0.5), tiers=_server("Node-RED", 0.5, "a Node.js flow server")),
    "windmill": ResourceDefaults(_r(1024, 2048, 1), tiers=_server("Windmill", 0.3, "needs PostgreSQL and workers")),
    "questdb": ResourceDefaults(_r(1024, 2048, 1), tiers=_server("QuestDB", 0.4, "a JVM database server")),
    "sqlite": ResourceDefaults(
        _r(16, 64, 0.1), runs_as="library",
        tiers={tier: TierStatement(True, 1.0, "an embedded database file: ships with the app")
               for tier in ("local", "desktop", "mobile", "server", "enterprise")}
        | {"saas": TierStatement(True, 0.6, "one writer at a time: fragile under multi-tenant load")}),
    "openrouter": ResourceDefaults(_r(0, 0, 0), runs_as="remote", tiers=_ALL_TIERS_REMOTE),
    "gemini": ResourceDefaults(_r(0, 0, 0), runs_as="remote", tiers=_ALL_TIERS_REMOTE),
    "claude-code": ResourceDefaults(
        _r(512, 512, 0.5), runs_as="host",
        tiers={**{t: TierStatement(True, 0.8, "an agent CLI installed on the host") for t in ("local", "server")},
               "desktop": TierStatement(True, 0.5, "needs the CLI installed and signed in on the user's machine"),
               "mobile": TierStatement(False, 0.0, "no agent CLI on a phone"),
               "saas": TierStatement(True, 0.6, "one CLI login shared by every tenant"),
               "enterprise": TierStatement(True, 0.6, "needs outbound network from the appliance")}),
}

#: What a scenario's own processes (its API and UI) need when it declares nothing.
SCENARIO_REQUIREMENTS = _r(256, 256, 0.5)

#: `runs_as` of a resource by its Vrooli `driver` (resource.json), when neither the catalog nor the table says.
RUNS_AS_BY_DRIVER = {
    "docker-service": "service",
    "compose-service": "service",
    "managed-service": "service",
    "native-cli": "service",
    "desktop-app": "host",
    "external-cli": "host",
    "manual": "host",
    "cloud-api": "remote",
}
