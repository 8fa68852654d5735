"""Rows for build tests, made through the services like a user would."""
from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

from rest_framework.test import APIClient

_names = itertools.count(1)


def make_job(*, name: str | None = None, steps=None, scm_url: str = "https://git.example.com/acme/app.git",
             tenant=None, queue=None, **config):
    """A job with a valid build config (override any config key)."""
    from builds.services import job_create

    extra = {key: config.pop(key) for key in ("branch_filter", "webhook_secret", "secrets", "scm_credential",
                                                "default_branch", "build_tags", "enabled") if key in config}
    build_config = {"steps": steps or ["echo hello"], **config}
    return job_create(name=name or f"job-{next(_names)}", scm_url=scm_url, build_config=build_config,
                      tenant=tenant, queue=queue, **extra)


#: What an agent with a working bubblewrap reports (drones/sandbox.py).
BUBBLEWRAP = {"mode": "bubblewrap", "detail": "/usr/bin/bwrap works"}


def make_drone(name: str | None = None, *, labels=None, capacity: int = 1, sandbox=BUBBLEWRAP):
    """A registered drone and an API client speaking with its token (a bubblewrap sandbox unless told)."""
    from drones.tests.conftest import register_drone

    drone, token = register_drone(name or f"drone-{next(_names)}", labels=labels or [], capacity=capacity,
                                  sandbox=sandbox)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    client.drone = drone
    client.token = token
    return drone, client


def make_git_repo(path: Path, files: dict[str, str], *, branch: str = "main", message: str = "initial") -> str:
    """A real git repository with one commit of `files` on `branch`; returns the commit sha."""
    path.mkdir(parents=True, exist_ok=True)
    run = lambda *args: subprocess.run(["git", *args], cwd=path, check=True, capture_output=True,  # noqa: E731
                                       text=True).stdout.strip()
    if not (path / ".git").exists():
        run("init", "-q", "-b", branch)
        run("config", "user.email", "test@example.com")
        run("config", "user.name", "Test")
    else:
        run("checkout", "-q", "-B", branch)
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        if name.endswith(".sh"):
            target.chmod(0o755)
    run("add", "-A")
    run("commit", "-q", "-m", message)
    return run("rev-parse", "HEAD")
