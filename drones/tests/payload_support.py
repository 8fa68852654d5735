"""Helpers for payload tests: push a payload through the API, make drones deployable, play the agent."""
from __future__ import annotations

import io

from django.utils import timezone
from rest_framework.test import APIClient

from drones.models import Drone
from drones.tests.conftest import register_drone


def reproducible_bundle(files: dict[str, bytes | str]) -> bytes:
    """A .tar.gz whose bytes depend only on `files` (gzip and tar times fixed), like swarmctl's packer."""
    import gzip
    import tarfile

    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed:
        with tarfile.open(fileobj=compressed, mode="w") as archive:
            for name, content in sorted(files.items()):
                data = content.encode() if isinstance(content, str) else content
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o755 if name.startswith("bin/") else 0o644, 0
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def push_payload(client: APIClient, *, type_name: str = "toolchain", version: str = "1.0.0",
                 files: dict | None = None, data: bytes | None = None):
    """POST /payload-versions like swarmctl does."""
    body = data if data is not None else reproducible_bundle(files or {"bin/tool": f"#!/bin/sh\necho {version}\n"})
    upload = io.BytesIO(body)
    upload.name = "payload.tar.gz"
    return client.post("/api/v1/payload-versions", {"bundle": upload, "type": type_name, "version": version},
                       format="multipart")


def live_drones(count: int, *, prefix: str = "d", labels: list[str] | None = None) -> list[tuple[Drone, APIClient]]:
    """Registered drones that heartbeated just now (deployable), each with an agent API client."""
    drones = []
    for number in range(count):
        drone, token = register_drone(f"{prefix}{number:02d}", labels=labels or ["linux"])
        Drone.objects.filter(pk=drone.pk).update(last_heartbeat_at=timezone.now(), status="online")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        client.token = token
        drones.append((Drone.objects.get(pk=drone.pk), client))
    return drones


def agent_report(client: APIClient, target_id: int, *states: str, action: str = "deploy", sha256: str = "",
                 reason: str = ""):
    """What the agent's reporter POSTs."""
    return client.post("/api/v1/payloads/agent/report", {
        "target_id": target_id, "action": action, "current_sha256": sha256,
        "states": [{"state": state, "reason": reason} for state in states]}, format="json")


def keep_alive(*drones: Drone) -> None:
    Drone.objects.filter(pk__in=[drone.pk for drone in drones]).update(last_heartbeat_at=timezone.now())


class RolloutPlane:
    """A control plane of its own for fault tests: uvicorn, Celery workers and beat on a private rollout queue.

    The session's shared worker never sees this plane's rollout tasks, so killing this plane's worker
    really leaves the rollout without one.
    """

    def __init__(self, subprocess_environment: dict, directory, *, tick_interval: float = 1.0):
        import uuid

        from conftest import LiveServer

        self.directory = directory
        queue = f"rollouts-{uuid.uuid4().hex[:8]}"
        self.queue = queue
        self.server = LiveServer(dict(subprocess_environment, SWARM_ROLLOUT_QUEUE=queue,
                                      SWARM_ROLLOUT_TICK_INTERVAL=str(tick_interval),
                                      SWARM_PAYLOAD_DRIFT_INTERVAL="2"), directory / "uvicorn.log")
        self.env = dict(self.server.env)
        self.url = self.server.url
        self.workers: list = []
        self.beat = None

    def _spawn(self, argv: list[str], log_name: str):
        import subprocess
        import sys

        log = open(self.directory / log_name, "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "swarm", *argv], env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return process

    def start_worker(self):
        worker = self._spawn(["worker", "--pool", "threads", "--concurrency", "4", "-Q", self.queue,
                              "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
                              "-n", f"{self.queue}-{len(self.workers)}@%h"], f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def start_beat(self):
        self.beat = self._spawn(["beat", "--loglevel", "INFO", "-s", str(self.directory / "beat-schedule")],
                                "beat.log")
        return self.beat

    @staticmethod
    def sigkill(process) -> None:
        import os
        import signal

        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def stop(self) -> None:
        for process in [*self.workers, self.beat]:
            self.sigkill(process)
        self.server.stop()
