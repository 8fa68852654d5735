"""The `container` executor: each step runs in the job's `image` through podman (docker where podman is absent).

A step is one `podman run --rm --name swarm-build-<id> ...` of `sh -e -c STEP`
(bash when the image has it), with the build's workspace mounted at
/workspace and the working directory there, so whatever a step writes to
the workspace is on the host for the artifact upload and the next step.

* Environment and secrets never reach argv, where `ps` shows them: each
  variable goes to podman through a 0600 `--env-file` in a private directory
  removed when the step ends; a value the env-file format cannot carry (one
  with a newline: a PEM key) goes as `-e NAME`, which podman reads from its
  own environment.
* Stopping (cancel, timeout, the server gave the build up) goes through the
  engine by the container's name, since killing the `podman run` client
  leaves the container running under conmon: `kill --signal TERM`, then
  `rm -f` (SIGKILL) after the grace period.
* Images come from the registries the drone's container engine is configured
  with (`/etc/containers/registries.conf`, `podman login`,
  REGISTRY_AUTH_FILE); a missing image is pulled once before the first step,
  its output in the build log. Everything else about the engine (runtime,
  default ulimits, network, storage) is its own configuration:
  `containers.conf`, or the file CONTAINERS_CONF names.

What a drone can run is probed for real (`container_probe`: a tiny image made
from the host's own `true` and imported locally, then run) and reported with
the sandbox; the control plane hands a job with `image` only to a drone that
reported a working engine (the implicit `container:oci` label).
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from swarm_agent.builds.executors.base import Executor, OutputCallback, StepResult, stream_output

logger = logging.getLogger(__name__)

#: What SWARM_AGENT_CONTAINER_ENGINE takes: `auto` (podman, else docker), one of them, or `none` (no containers).
ENGINE_SETTINGS = ("auto", "podman", "docker", "none")
#: Where the workspace appears inside the container.
CONTAINER_WORKSPACE = "/workspace"
#: Names the env-file cannot carry go through the engine's environment, except these, which it reads itself.
ENGINE_OWN_VARIABLES = {"PATH", "HOME", "TMPDIR", "CONTAINERS_CONF", "CONTAINERS_REGISTRIES_CONF",
                        "CONTAINERS_STORAGE_CONF", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME",
                        "DOCKER_CONFIG", "DOCKER_HOST"}
PULL_POLICIES = ("missing", "always", "never", "newer")
_CONTAINER_NAME = re.compile(r"^swarm-build-[0-9a-f]{16}$")


class ContainerUnavailable(RuntimeError):
    """A step was to run in a container, and this drone cannot (no engine, or the image cannot be had)."""


@dataclass(frozen=True)
class ContainerReport:
    """What this drone can run containers with: `engine` (`podman`, `docker`, or "" for none) and why."""

    engine: str
    detail: str
    path: str | None = None

    def as_dict(self) -> dict:
        """The `containers` field of the sandbox report (registration and heartbeat bodies)."""
        return {"engine": self.engine, "detail": self.detail[:300]}


def _probe_rootfs() -> bytes:
    """A tar of the smallest root that runs: the host's `true` with the libraries it links."""
    true = shutil.which("true") or "/bin/true"
    files = [os.path.realpath(true)]
    try:
        linked = subprocess.run(["ldd", true], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        linked = ""
    files += [path for path in re.findall(r"(/\S+)", linked) if os.path.exists(path)]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(files[0], arcname="true")
        for path in files[1:]:
            archive.add(os.path.realpath(path), arcname=path.lstrip("/"))
    return buffer.getvalue()


def _last_line(data: bytes | str) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def container_probe(setting: str | None = None) -> ContainerReport:
    """Probe, for real, whether this drone can run a container: a tiny local image is imported and run once.

    `setting` is SWARM_AGENT_CONTAINER_ENGINE (read from the environment when None).
    """
    setting = (os.environ.get("SWARM_AGENT_CONTAINER_ENGINE", "auto") if setting is None else setting).strip().lower()
    if setting == "none":
        return ContainerReport("", "SWARM_AGENT_CONTAINER_ENGINE=none: this drone runs no containers")
    if setting not in ENGINE_SETTINGS:
        return ContainerReport("", f"SWARM_AGENT_CONTAINER_ENGINE={setting[:40]!r} is not one of "
                                   f"{', '.join(ENGINE_SETTINGS)}")
    candidates = ("podman", "docker") if setting == "auto" else (setting,)
    problems = []
    for engine in candidates:
        path = shutil.which(engine)
        if path is None:
            problems.append(f"{engine} is not installed")
            continue
        problem = _probe_engine(path)
        if problem is None:
            return ContainerReport(engine, f"{path} runs containers (a local probe image ran)", path=path)
        problems.append(f"{engine}: {problem}")
    return ContainerReport("", "; ".join(problems) + " (containers.conf, CONTAINERS_CONF, or install podman)")


def _probe_engine(path: str) -> str | None:
    """Why `path` cannot run a container here, or None when it can."""
    rootfs = _probe_rootfs()
    image = f"localhost/swarm-probe:{hashlib.sha256(rootfs).hexdigest()[:12]}"
    try:
        exists = subprocess.run([path, "image", "inspect", image], capture_output=True, timeout=30)
        if exists.returncode != 0:
            imported = subprocess.run([path, "import", "-", image], input=rootfs, capture_output=True, timeout=60)
            if imported.returncode != 0:
                return f"import of a probe image exits {imported.returncode}: {_last_line(imported.stderr)}"
        ran = subprocess.run([path, "run", "--rm", "--network=none", image, "/true"], capture_output=True,
                             timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"could not be run: {error}"
    if ran.returncode != 0:
        return f"run of a probe image exits {ran.returncode}: {_last_line(ran.stderr)}"
    return None


class ContainerExecutor(Executor):
    """Runs steps in the job's image through podman or docker."""

    name = "container"
    #: The runner gives a container's steps only the job's variables: PATH and HOME are the image's.
    host_environment = False

    def __init__(self, *, report: ContainerReport | None = None):
        self.report = report or container_probe()
        self.engine = self.report.path
        self.pull = os.environ.get("SWARM_AGENT_CONTAINER_PULL", "missing").strip().lower()
        self.network = os.environ.get("SWARM_AGENT_CONTAINER_NETWORK", "").strip()
        self._process: asyncio.subprocess.Process | None = None
        self._container: str | None = None
        self._stopped = False
        self._images_ready: set[str] = set()

    def describe(self) -> str:
        if self.engine:
            return f"container executor, {self.report.engine} ({self.report.detail})"
        return f"container executor, no container engine available: {self.report.detail}"

    # --- the step --------------------------------------------------------------------

    async def run_step(self, command: str, *, workspace: Path, env: dict[str, str], output: OutputCallback,
                       image: str = "") -> StepResult:
        if not self.engine:
            raise ContainerUnavailable(f"refusing to run a container step: {self.report.detail}")
        if not image:
            raise ContainerUnavailable("the container executor runs a job's `image`, and this job names none")
        self._stopped = False
        if image not in self._images_ready:
            await self._ensure_image(image, output)
            self._images_ready.add(image)
        if self._stopped:
            return StepResult(exit_code=-15, stopped=True)
        private = Path(tempfile.mkdtemp(prefix="swarm-container-"))  # 0700
        container = f"swarm-build-{uuid.uuid4().hex[:16]}"
        try:
            argv, engine_env = self._run_argv(command, container=container, image=image,
                                              workspace=Path(workspace).resolve(), env=env, private=private)
            self._container = container
            self._process = await asyncio.create_subprocess_exec(
                *argv, env=engine_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True)
            exit_code = await stream_output(self._process, output)
        except asyncio.CancelledError:
            # The runner's timeout cancels the step and then calls `stop`, which needs the container's name.
            raise
        else:
            self._process = None
            self._container = None
        finally:
            shutil.rmtree(private, ignore_errors=True)
        await self._remove(container)
        return StepResult(exit_code=exit_code, stopped=self._stopped)

    def _run_argv(self, command: str, *, container: str, image: str, workspace: Path, env: dict[str, str],
                  private: Path) -> tuple[list[str], dict[str, str]]:
        """The `run` command line (names only, never values) and the engine's environment."""
        engine_env = {name: value for name, value in os.environ.items()}
        env_file = private / "env"
        lines, passed = [], []
        for name, value in env.items():
            if "\n" in value or "\r" in value or "\x00" in value:
                if name in ENGINE_OWN_VARIABLES:
                    raise ContainerUnavailable(f"{name}: a value with a newline cannot reach the container")
                engine_env[name] = value
                passed += ["-e", name]
            else:
                lines.append(f"{name}={value}\n")
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(lines)
        argv = [self.engine, "run", "--rm", "--name", container, "--pull", "never",
                "--env-file", str(env_file), *passed,
                "-v", f"{workspace}:{CONTAINER_WORKSPACE}", "--workdir", CONTAINER_WORKSPACE,
                "--label", "swarm.build=1"]
        if self.network:
            argv += ["--network", self.network]
        # bash when the image has it (pipefail), else POSIX sh: the same `-e` as the process executor.
        script = ("if command -v bash >/dev/null 2>&1; then exec bash -e -o pipefail -c \"$0\"; "
                  "else exec sh -e -c \"$0\"; fi")
        argv += [image, "sh", "-c", script, command]
        return argv, engine_env

    async def _ensure_image(self, image: str, output: OutputCallback) -> None:
        """Pull `image` unless it is here (SWARM_AGENT_CONTAINER_PULL: missing, the default; always; never)."""
        policy = self.pull if self.pull in PULL_POLICIES else "missing"
        present = await _quiet(self.engine, "image", "inspect", image) == 0
        if present and policy in ("missing", "never"):
            return
        if not present and policy == "never":
            raise ContainerUnavailable(f"image {image} is not on this drone and SWARM_AGENT_CONTAINER_PULL=never")
        output(f"Pulling image {image}\n".encode())
        self._process = await asyncio.create_subprocess_exec(
            self.engine, "pull", image, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            exit_code = await stream_output(self._process, output)
        finally:
            self._process = None
        if exit_code != 0 and not self._stopped:
            raise ContainerUnavailable(f"image {image} could not be pulled ({self.report.engine} pull exits "
                                       f"{exit_code}); check the drone's registries and credentials")

    # --- stopping --------------------------------------------------------------------

    async def stop(self, *, grace: float) -> None:
        self._stopped = True
        container, process = self._container, self._process
        if container is None:
            if process is not None:  # a pull: nothing runs yet
                _signal_group(process, 9)
            return
        await _quiet(self.engine, "kill", "--signal", "TERM", container)
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), timeout=grace)
            except asyncio.TimeoutError:
                pass
        await self._remove(container)
        if self._container == container:
            self._container, self._process = None, None

    async def _remove(self, container: str) -> None:
        """`rm -f` the container (SIGKILL to what is left; a no-op once `--rm` removed it)."""
        if self.engine and _CONTAINER_NAME.match(container):
            # podman waits out a stop timeout unless told not to; docker's `rm -f` kills at once and has no --time.
            wait = ["--time", "0"] if self.report.engine == "podman" else []
            await _quiet(self.engine, "rm", "-f", *wait, container)


async def _quiet(*argv: str) -> int:
    process = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)
    return await process.wait()


def _signal_group(process: asyncio.subprocess.Process, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
