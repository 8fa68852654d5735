"""Runs one claimed build from acknowledgement to final report.

1. `PUT /builds/<id>/state {state: running}` within the ack timeout (two-phase start);
2. clone the repository (branch or exact sha, shallow; no branch: the
   repository's default, its HEAD; the credential goes through GIT_ASKPASS
   and the environment, never argv or the log). A clone, fetch or checkout
   that fails is `source_failure`, with the log's last line naming what was
   tried: the user's steps never ran;
3. run the steps in a fresh workspace through the executor, output masked and
   streamed as it comes;
4. collect artifacts by glob and upload each with its sha256 (presigned PUT
   straight to S3, or streamed through the API);
5. flush the log and report the final state with the log's size and sha256;
6. remove the workspace.

While it runs, a keep-alive reports every `update_interval` seconds and reads
`Job-Status`; any response saying the build is no longer running (canceled,
or failed by the reaper) stops the step: SIGTERM to its process group, SIGKILL
after the grace period. The build's own timeout is enforced here as well.
"""
from __future__ import annotations

import asyncio
import glob
import hashlib
import logging
import os
import shutil
import stat
import time
import uuid
from pathlib import Path

import httpx

from swarm_agent.builds.executors import Executor, executor_for
from swarm_agent.builds.logstream import LogStreamer, parse_range
from swarm_agent.builds.masking import SecretMasker

logger = logging.getLogger(__name__)

ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$SWARM_GIT_USERNAME" ;;
  *) printf '%s\\n' "$SWARM_GIT_PASSWORD" ;;
esac
"""


class BuildRunner:
    """One build on this drone."""

    def __init__(self, *, api: httpx.AsyncClient, spec: dict, work_dir: Path, executor: Executor | None = None,
                 drone_name: str = ""):
        self.api = api
        self.spec = spec
        self.build_id = int(spec["id"])
        self.attempt = int(spec.get("attempt") or 1)
        self.work_root = Path(work_dir) / "builds" / f"{self.build_id}-{self.attempt}-{uuid.uuid4().hex[:8]}"
        self.workspace = self.work_root / "workspace"
        # A job with an `image` runs in it (the control plane gave it only to a drone reporting a container
        # engine); any other takes the drone's configured executor.
        self.executor = executor or executor_for(
            "container" if spec.get("image") else os.environ.get("SWARM_AGENT_BUILD_EXECUTOR", "process"))
        self.drone_name = drone_name
        secrets = dict(spec.get("secrets") or {})
        credential = spec.get("scm_credential") or ""
        self.masker = SecretMasker([*secrets.values(), credential, *credential.split(":", 1)])
        self.log = LogStreamer(api, self.build_id, self.work_root / "build.log", attempt=self.attempt,
                               start_offset=int(spec.get("log_offset") or 0),
                               max_patch_bytes=int(spec.get("max_log_patch_bytes") or 1024 * 1024),
                               on_job_status=self._on_job_status)
        self.update_interval = float(spec.get("update_interval") or 5)
        self.cancel_grace = float(spec.get("cancel_grace") or 10)
        self.timeout = float(spec.get("timeout") or 3600)
        self.stop_reason: str | None = None  # "canceled" | "job_execution_timeout" | "server"
        self._stop_requested = asyncio.Event()
        self.final_state: str | None = None
        self.commit_sha = spec.get("commit_sha") or ""
        self.branch = spec.get("branch") or ""
        #: Why the build failed, when the reason alone does not say (the source that could not be fetched).
        self.failure_detail = ""
        self.git_output = ""  # what the last git command printed (masked)

    # --- stopping -------------------------------------------------------------------

    def _on_job_status(self, status: str) -> None:
        if status in ("canceling", "canceled"):
            self.request_stop("canceled")
        elif status in ("success", "failed", "pending"):
            # The server decided without us (reaper): stop at once.
            self.request_stop("server")

    def request_stop(self, reason: str) -> None:
        """Stop the build (cancel, timeout, or the server gave it up); idempotent."""
        if self.stop_reason is None:
            self.stop_reason = reason
            logger.info("build %s: stopping (%s)", self.build_id, reason)
        self._stop_requested.set()

    async def _stop_watcher(self) -> None:
        await self._stop_requested.wait()
        await self.executor.stop(grace=self.cancel_grace)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval)
            try:
                await self._report_running()
            except httpx.HTTPError as error:
                logger.warning("build %s keep-alive failed: %s", self.build_id, error)

    async def _report_running(self) -> httpx.Response:
        body = {"state": "running", "attempt": self.attempt}
        if self.commit_sha:
            body["commit_sha"] = self.commit_sha
        if self.branch:
            body["branch"] = self.branch
        response = await self.api.put(f"/builds/{self.build_id}/state", json=body)
        status = response.headers.get("Job-Status")
        if status:
            self._on_job_status(status)
        if response.status_code in (404, 409):
            self.request_stop("server")
        return response

    # --- the run --------------------------------------------------------------------

    async def run(self) -> str:
        """Run the build; returns the final state reported."""
        response = await self._report_running()
        if response.status_code != 200:
            logger.warning("build %s could not be acknowledged: %s %s", self.build_id, response.status_code,
                           response.text[:200])
            return "abandoned"
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.log.start()
        watchers = [asyncio.ensure_future(self._keepalive()), asyncio.ensure_future(self._stop_watcher())]
        started = time.monotonic()
        state, reason, exit_code = "failed", "unknown_failure", None
        try:
            state, reason, exit_code = await asyncio.wait_for(self._run_steps(), timeout=self.timeout)
        except asyncio.TimeoutError:
            self.request_stop("job_execution_timeout")
            await self.executor.stop(grace=self.cancel_grace)
            state, reason = "failed", "job_execution_timeout"
            self.log.line(f"ERROR: the build exceeded its timeout of {self.timeout:g}s and was stopped")
        except Exception as error:  # noqa: BLE001 - any agent-side fault is reported, not swallowed
            logger.exception("build %s failed inside the agent", self.build_id)
            self.log.line(f"ERROR: the agent failed: {type(error).__name__}: {error}")
            state, reason = "failed", "runner_system_failure"
        if self.stop_reason == "canceled":
            state, reason = "canceled", ""
        elif self.stop_reason == "job_execution_timeout":
            state, reason = "failed", "job_execution_timeout"
        elif self.stop_reason == "agent_stopping":
            state, reason = "failed", "runner_system_failure"
            self.log.line("ERROR: the agent is stopping; the build was interrupted")
        detail = f": {self.failure_detail}" if self.failure_detail and reason == "source_failure" else ""
        self.log.line(f"Build finished: {state}{' (' + reason + detail + ')' if reason else ''} "
                      f"after {time.monotonic() - started:.1f}s")
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await self.log.close()
        self.final_state = await self._report_final(state, reason, exit_code)
        self._cleanup()
        return self.final_state

    async def _run_steps(self) -> tuple[str, str, int | None]:
        self.log.line(f"Running build {self.build_id} (#{self.spec.get('number')}, attempt {self.attempt}) of job "
                      f"{self.spec.get('job', {}).get('name', '?')} on {self.drone_name or 'drone'}")
        self.log.line(f"Using {self.executor.describe()}")
        self.workspace.mkdir(parents=True, exist_ok=True)
        env = self._step_env(host=self.executor.host_environment)
        if not await self._clone(self._step_env(host=True)):
            return ("canceled", "", None) if self.stop_reason else ("failed", "source_failure", None)
        env["SWARM_COMMIT_SHA"] = self.commit_sha
        for command in self.spec.get("steps") or []:
            if self.stop_reason:
                break
            self.log.write(self.masker.mask(f"$ {command}\n".encode()))
            result = await self.executor.run_step(command, workspace=self.workspace / "src", env=env,
                                                  output=self._output, image=self.spec.get("image") or "")
            if result.stopped or self.stop_reason:
                return "canceled", "", result.exit_code
            if result.exit_code != 0:
                self.log.line(f"ERROR: step exited with code {result.exit_code}")
                return "failed", "script_failure", result.exit_code
        if self.stop_reason:
            return "canceled", "", None
        await self._upload_artifacts()
        return "success", "", 0

    def _output(self, data: bytes) -> None:
        self.log.write(self.masker.mask(data))

    def _step_env(self, *, host: bool = True) -> dict[str, str]:
        """The job's variables and secrets, over (`host`) this host's PATH, a HOME of the build's own, TMPDIR;
        a step in an image keeps the image's PATH and HOME."""
        env = {"LANG": os.environ.get("LANG", "C.UTF-8")}
        if host:
            home = self.work_root / "home"
            home.mkdir(parents=True, exist_ok=True)
            env.update({"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(home),
                        "TMPDIR": "/tmp"})
        env.update({str(k): str(v) for k, v in (self.spec.get("env") or {}).items()})
        env.update({str(k): str(v) for k, v in (self.spec.get("secrets") or {}).items()})
        return env

    # --- source ---------------------------------------------------------------------

    async def _git(self, *args: str, cwd: Path, env: dict[str, str]) -> int:
        process = await asyncio.create_subprocess_exec(
            "git", *args, cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        output, _ = await process.communicate()
        self.git_output = self.masker.mask(output or b"").decode(errors="replace")
        if output:
            self.log.write(self.masker.mask(output))
        return process.returncode

    def _git_complaint(self) -> str:
        """The last line git wrote (its `fatal:` reason), for the failure's one-line summary."""
        lines = [line.strip() for line in self.git_output.splitlines() if line.strip()]
        return lines[-1] if lines else "git gave no reason"

    def _source_failed(self, what: str) -> bool:
        self.failure_detail = f"{what}: {self._git_complaint()}"
        self.log.line(f"ERROR: {self.failure_detail}")
        return False

    def _git_env(self, env: dict[str, str]) -> dict[str, str]:
        git_env = dict(env, GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1")
        credential = self.spec.get("scm_credential") or ""
        if credential:
            username, _, password = credential.partition(":")
            if not password:
                username, password = "x-access-token", credential
            askpass = self.work_root / "askpass.sh"
            askpass.write_text(ASKPASS_SCRIPT)
            askpass.chmod(stat.S_IRWXU)
            git_env.update(GIT_ASKPASS=str(askpass), SWARM_GIT_USERNAME=username, SWARM_GIT_PASSWORD=password)
        return git_env

    async def _clone(self, env: dict[str, str]) -> bool:
        url = self.spec["scm_url"]
        if url.startswith("/"):
            url = "file://" + url  # shallow clones need a transport, not a plain path
        branch = self.branch
        sha = self.spec.get("commit_sha") or ""
        source = self.workspace / "src"
        git_env = self._git_env(env)
        shown_url = self.masker.mask(self.spec["scm_url"].encode()).decode()
        ref = f"branch {branch}" if branch else "the default branch"
        self.log.line(f"Fetching {shown_url} {'at ' + sha if sha else ref}")
        if sha:
            source.mkdir(parents=True, exist_ok=True)
            if not (await self._git("init", "-q", cwd=source, env=git_env) == 0
                    and await self._git("remote", "add", "origin", url, cwd=source, env=git_env) == 0):
                return self._source_failed(f"could not prepare a checkout of {shown_url}")
            if await self._git("fetch", "-q", "--depth", "1", "origin", sha, cwd=source, env=git_env) != 0:
                if not _refuses_single_commits(self.git_output):
                    return self._source_failed(f"could not fetch commit {sha} from {shown_url}")
                self.log.line("The server does not serve single commits; fetching "
                              f"{ref if branch else 'its default branch'} instead")
                if await self._git("fetch", "-q", "origin", branch or "HEAD", cwd=source, env=git_env) != 0:
                    return self._source_failed(f"could not fetch {ref} of {shown_url} (for commit {sha})")
            if await self._git("checkout", "-q", "--detach", sha, cwd=source, env=git_env) != 0:
                return self._source_failed(f"could not check out commit {sha} of {shown_url}")
        else:
            args = ["clone", "-q", "--depth", "1", "--single-branch"]
            if branch:
                args += ["--branch", branch]
            if await self._git(*args, url, str(source), cwd=self.workspace, env=git_env) != 0:
                return self._source_failed(f"could not clone {ref} of {shown_url}")
        self.commit_sha = await self._git_read("rev-parse", "HEAD", cwd=source, env=git_env)
        if not branch and not sha:
            self.branch = await self._git_read("symbolic-ref", "--short", "-q", "HEAD", cwd=source, env=git_env)
        on_branch = f" ({self.branch}{', the repository default' if branch != self.branch else ''})" \
            if self.branch else ""
        self.log.line(f"Checked out {self.commit_sha}{on_branch}")
        try:
            await self._report_running()  # records the resolved sha (and branch)
        except httpx.HTTPError:
            pass
        return True

    async def _git_read(self, *args: str, cwd: Path, env: dict[str, str]) -> str:
        """One line git prints (a sha, a branch name), or "" when it fails."""
        process = await asyncio.create_subprocess_exec("git", *args, cwd=str(cwd), env=env,
                                                       stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.DEVNULL)
        output, _ = await process.communicate()
        return output.decode(errors="replace").strip() if process.returncode == 0 else ""

    # --- artifacts ------------------------------------------------------------------

    def _artifact_paths(self) -> list[Path]:
        root = (self.workspace / "src").resolve()
        found: dict[str, Path] = {}
        for pattern in self.spec.get("artifacts") or []:
            for match in glob.glob(str(root / pattern), recursive=True):
                path = Path(match)
                if path.is_file() and not path.is_symlink() and root in path.resolve().parents:
                    found[path.relative_to(root).as_posix()] = path
        return [found[key] for key in sorted(found)]

    async def _upload_artifacts(self) -> None:
        paths = self._artifact_paths()
        if not paths and self.spec.get("artifacts"):
            self.log.line("No files matched the artifact patterns")
        root = (self.workspace / "src").resolve()
        for path in paths:
            relative = path.relative_to(root).as_posix()
            digest, size = _sha256_file(path)
            response = await self.api.post(f"/builds/{self.build_id}/artifacts",
                                            json={"path": relative, "size": size, "sha256": digest,
                                                  "attempt": self.attempt})
            if response.status_code != 201:
                raise RuntimeError(f"artifact {relative} refused: {response.status_code} {response.text[:200]}")
            announced = response.json()
            upload = announced["upload"]
            if upload.get("direct"):
                async with httpx.AsyncClient(timeout=300) as direct:
                    with open(path, "rb") as handle:
                        put = await direct.put(upload["url"], content=_file_chunks(handle),
                                               headers={"Content-Length": str(size)})
                put.raise_for_status()
                commit = await self.api.post(upload["commit_url"].removeprefix("/api/v1"))
                commit.raise_for_status()
            else:
                with open(path, "rb") as handle:
                    put = await self.api.put(upload["url"].removeprefix("/api/v1"), content=_file_chunks(handle),
                                             headers={"Content-Type": "application/octet-stream",
                                                      "Content-Length": str(size)}, timeout=300)
                put.raise_for_status()
            self.log.line(f"Uploaded artifact {relative} ({size} bytes, sha256 {digest})")

    # --- the end --------------------------------------------------------------------

    async def _report_final(self, state: str, reason: str, exit_code: int | None) -> str:
        for attempt in range(20):
            body = {"state": state, "attempt": self.attempt, "failure_reason": reason, "exit_code": exit_code,
                    "log_bytesize": self.log.written, "log_checksum": self.log.checksum}
            try:
                response = await self.api.put(f"/builds/{self.build_id}/state", json=body)
            except httpx.HTTPError as error:
                logger.warning("final report of build %s failed: %s", self.build_id, error)
                await asyncio.sleep(min(0.2 * 2 ** attempt, 5))
                continue
            if response.status_code == 416:
                # The server holds less (or more) than we wrote: resume the log there and report again.
                size = parse_range(response.headers.get("Range"))
                if size is not None and size <= self.log.written:
                    self.log.acknowledged = size
                    await self.log.flush()
                continue
            if response.status_code == 200:
                final = response.json().get("state", state)
                logger.info("build %s reported %s (server: %s)", self.build_id, state, final)
                return final
            logger.warning("final report of build %s refused: %s %s", self.build_id, response.status_code,
                           response.text[:200])
            return "refused"
        return "unreported"

    def _cleanup(self) -> None:
        self.log.discard()
        if os.environ.get("SWARM_AGENT_KEEP_WORKSPACES") == "1":
            return
        shutil.rmtree(self.work_root, ignore_errors=True)


#: What git says when a server reached fine will not hand out a commit by its id (older servers,
#: `uploadpack.allowReachableSHA1InWant` off); anything else (DNS, refused, auth) is not helped by
#: fetching more history.
_SINGLE_COMMIT_REFUSALS = ("not our ref", "unadvertised object", "couldn't find remote ref", "no such remote ref",
                           "upload-pack: not")


def _refuses_single_commits(git_output: str) -> bool:
    lowered = git_output.lower()
    return any(marker in lowered for marker in _SINGLE_COMMIT_REFUSALS)


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


async def _file_chunks(handle, size: int = 1024 * 1024):
    while chunk := handle.read(size):
        yield chunk
