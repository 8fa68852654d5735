"""A container image for the container executor's tests, made from Debian packages, built once and cached.

Tests have no registry: `mmdebstrap --variant=minbase bookworm` writes a root
file system tar from Debian's mirror, and `podman import` makes it the local
image `localhost/swarm-test:bookworm-<key>`. The tar is kept under
var/container-images/<key>/ (like the microVM image under var/microvm), the key
a hash of everything that goes into it, so a later run imports the tar (or
finds the image) instead of building again.

`containers.conf` beside it is the engine configuration the test agents get
through CONTAINERS_CONF, as an operator would set /etc/containers/containers.conf:
runc where it is installed (crun refuses hosts with hybrid cgroups) and
ulimits below any host's hard limits (podman's defaults exceed some hosts').
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from django.conf import settings

SUITE = "bookworm"
MMDEBSTRAP = ["mmdebstrap", "--variant=minbase", "--quiet", SUITE]
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
{engine}"""


def podman() -> str | None:
    """The podman on PATH, or None."""
    return shutil.which("podman")


def image_key() -> str:
    return hashlib.sha256(" ".join(MMDEBSTRAP).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    return Path(settings.VAR_DIR) / "container-images" / image_key()


def containers_conf() -> Path:
    """The engine configuration the test agents run podman with (CONTAINERS_CONF)."""
    path = cache_dir() / "containers.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = '\n[engine]\nruntime = "runc"\n' if shutil.which("runc") else ""
    path.write_text(CONTAINERS_CONF.format(engine=engine))
    return path


def build_test_image() -> str:
    """The local image's name, building (mmdebstrap) and importing it when missing."""
    name = f"localhost/swarm-test:{SUITE}-{image_key()}"
    engine = podman()
    if subprocess.run([engine, "image", "exists", name], capture_output=True).returncode == 0:
        return name
    rootfs = cache_dir() / "rootfs.tar"
    if not rootfs.exists():
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        partial = rootfs.with_suffix(".partial.tar")
        subprocess.run([*MMDEBSTRAP, str(partial)], check=True, capture_output=True, timeout=900)
        partial.rename(rootfs)
    subprocess.run([engine, "import", str(rootfs), name], check=True, capture_output=True, timeout=300)
    return name
