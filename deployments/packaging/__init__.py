"""Packaging on the fleet: a profile version's manifest → assets procured → one CI build per platform →
a reproducible tarball per platform → a registered workflow or payload version (docs/deployments.md).

* `steps`    — the build steps, artifact globs and drone labels of one platform, from the manifest's `build` blocks.
* `assets`   — every manifest asset fetched by URL, verified by sha256, stored once in the bundle store.
* `staging`  — binaries, assets and the canonical manifest packed reproducibly (`swarm_agent.packing`).
* `services` — `package_request`, `package_advance` (one step of the run; the Celery task calls it), `package_cancel`.
"""
from deployments.packaging.services import (
    PackageFailed,
    package_advance,
    package_cancel,
    package_request,
)

__all__ = ["PackageFailed", "package_advance", "package_cancel", "package_request"]
