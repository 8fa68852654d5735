"""A container image for the container executor's tests, made from Debian packages, built once and cached.

Tests have no registry. The root file system is the microVM image's base
layer (`swarm_agent.microvm.image.build_base`: `mmdebstrap` of Debian
bookworm, cached under var/microvm/base/<key>.tar by a hash of its inputs),
shared rather than built twice; `podman import` makes it the local image
`localhost/swarm-test:bookworm-<key>`, which a later run finds in podman's
storage instead of importing again.

`containers.conf` under var/container-images/ is the engine configuration the
test agents get through CONTAINERS_CONF, as an operator would set
/etc/containers/containers.conf: runc where it is installed (crun refuses
hosts with hybrid cgroups) and ulimits below any host's hard limits
(podman's defaults exceed some hosts').
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from django.conf import settings

CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
{engine}"""


def podman() -> str | None:
    """The podman on PATH, or None."""
    return shutil.which("podman")


def containers_conf() -> Path:
    """The engine configuration the test agents run podman with (CONTAINERS_CONF)."""
    path = Path(settings.VAR_DIR) / "container-images" / "containers.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = '\n[engine]\nruntime = "runc"\n' if shutil.which("runc") else ""
    path.write_text(CONTAINERS_CONF.format(engine=engine))
    return path


def build_test_image() -> str:
    """The local image's name, building the root file system and importing it when missing."""
    from swarm_agent.microvm.image import SUITE, base_key, build_base

    name = f"localhost/swarm-test:{SUITE}-{base_key()}"
    engine = podman()
    if subprocess.run([engine, "image", "exists", name], capture_output=True).returncode == 0:
        return name
    rootfs = build_base(settings.SWARM_MICROVM_IMAGE_DIR, log=lambda line: None)
    subprocess.run([engine, "import", str(rootfs), name], check=True, capture_output=True, timeout=300)
    return name
