"""`make run` itself: the launcher from a clean var directory with embedded services, driven as the README does.

It waits for the summary box, then follows the README's first steps with the
CLI and the API (an engine and an admin token, a bundle push and run, a CI
build of a fresh `git init` repository with its artifact checked, a drone
ping), checks the terminal stayed quiet and no secret shows in `ps` or the
logs, and stops it with SIGINT: no traceback, no process left behind.
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from swarm.embedded import free_port

pytestmark = [pytest.mark.live, pytest.mark.timeout(420)]

BASE_DIR = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


class Launcher:
    """`python -m swarm.launcher run` in its own session, its terminal output collected line by line."""

    def __init__(self, var_dir: Path, port: int):
        self.var_dir = var_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {key: value for key, value in os.environ.items()
                    if key not in ("DATABASE_URL", "REDIS_URL", "SWARM_S3_BUCKET", "SWARM_LOG_LEVEL",
                                   "DJANGO_SETTINGS_MODULE")}
        self.env.update(SWARM_VAR_DIR=str(var_dir), PYTHONIOENCODING="utf-8", SWARM_DRONE_HEARTBEAT_INTERVAL="5")
        self.lines: list[str] = []
        self.process = subprocess.Popen([sys.executable, "-m", "swarm.launcher", "run", "--port", str(port)],
                                        cwd=BASE_DIR, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in iter(self.process.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_box(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            starts = [i for i, line in enumerate(self.lines) if "Swarm is up" in line]
            if starts:
                ends = [i for i in range(starts[0], len(self.lines)) if self.lines[i].startswith("╰")]
                if ends:
                    return self.lines[starts[0]:ends[0] + 1]
            assert self.process.poll() is None, f"the launcher exited:\n{self.output()}"
            time.sleep(0.2)
        raise AssertionError(f"no summary box after {timeout}s:\n{self.output()}")

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], cwd=BASE_DIR, env=self.env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def swarmctl(self, *args: str, token: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env, SWARM_URL=self.url, SWARM_TOKEN=token)
        result = subprocess.run([str(BIN / "swarmctl"), *args], cwd=cwd or BASE_DIR, env=env, capture_output=True,
                                text=True, timeout=180)
        assert result.returncode == 0, f"swarmctl {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def interrupt(self, timeout: float = 90) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        """After a failed assertion: stop it as Ctrl-C does, then kill whatever of it is left.

        The children run in sessions of their own, so killing the launcher alone would orphan them.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for line in processes_of(self.var_dir):
            try:
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass


def processes_of(var_dir: Path) -> list[str]:
    """Live processes that belong to this launcher's installation (its var dir in argv or environment)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(process.info["cmdline"] or [])
            mine = str(var_dir) in cmdline or process.environ().get("SWARM_VAR_DIR") == str(var_dir)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if mine and process.pid != os.getpid():
            found.append(f"{process.pid}: {cmdline}")
    return found


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_make_run_first_steps_and_a_clean_ctrl_c(tmp_path):
    var_dir = tmp_path / "var"
    launcher = Launcher(var_dir, free_port())
    try:
        box = launcher.wait_for_box(timeout=240)
        rows = {line[2:12].strip(): line[12:].rstrip(" │") for line in box[1:-1]}
        assert rows["admin"] == f"{launcher.url}/admin/" and rows["API docs"] == f"{launcher.url}/api/docs/"
        assert rows["user"] == "admin"
        password = rows["password"].split()[0]
        assert "changepassword admin" in rows["password"] and len(password) >= 12
        assert "issue_token --scope admin" in "\n".join(box)
        assert rows["logs"].startswith(f"{var_dir}/logs/{{web,worker,beat,drone}}.log")
        printed_before_steps = len(launcher.lines)

        # No secret in argv (`ps`) or in the log files.
        assert not [cmd for cmd in processes_of(var_dir) if "--join-token" in cmd or password in cmd]
        logs = var_dir / "logs"
        assert {"web.log", "worker.log", "beat.log", "drone.log"} <= {path.name for path in logs.iterdir()}

        # README step 1: tokens (made by the commands the box names).
        engine = launcher.manage("issue_token", "--scope", "engine", "--tenant", "acme", "--create-tenant",
                                 "--name", "me")
        admin = launcher.manage("issue_token", "--scope", "admin", "--name", "ops")

        # Step 2: push a directory under an ignored examples/ dir (a temp dir here) and run it.
        hello = tmp_path / "examples" / "hello"
        hello.mkdir(parents=True)
        (hello / "main.py").write_text('import os\nprint("hello from", os.environ.get("GREETING", "?"))\n')
        pushed = launcher.swarmctl("bundle", "push", str(hello), "--tenant", "acme", "--workflow", "hello",
                                   "--version", "1.0.0", token=engine)
        assert pushed.stdout.startswith("registered acme/hello 1.0.0")
        ran = launcher.swarmctl("run", "acme/hello", "--env", "GREETING=swarm", "--follow", token=engine)
        assert "hello from swarm" in ran.stdout + ran.stderr

        # Step 7: a CI build of a fresh repository, whatever branch `git init` gives, artifact verified.
        repo = tmp_path / "examples" / "hello-ci"
        repo.mkdir()
        git("init", "-q", cwd=repo)
        (repo / "build.sh").write_text("#!/bin/sh\nmkdir -p out && echo \"built $(git rev-parse HEAD)\" > out/hello.txt\n")
        (repo / "build.sh").chmod(0o755)
        git("add", "-A", cwd=repo)
        git("-c", "user.name=me", "-c", "user.email=me@example.com", "commit", "-q", "-m", "first", cwd=repo)
        auth = {"Authorization": f"Bearer {engine}"}
        job = httpx.post(f"{launcher.url}/api/v1/jobs", headers=auth, timeout=30, json={
            "name": "hello-ci", "scm_url": f"file://{repo}",
            "build_config": {"steps": ["./build.sh"], "artifacts": ["out/*"]}})
        assert job.status_code == 201, job.text
        built = launcher.swarmctl("build", "trigger", "acme/hello-ci", "--follow", token=engine)
        assert "Build finished: success" in built.stdout, built.stdout + built.stderr
        build = httpx.get(f"{launcher.url}/api/v1/builds", headers=auth, timeout=30).json()["results"][0]
        assert build["branch"] == git("symbolic-ref", "--short", "HEAD", cwd=repo)
        artifact = httpx.get(f"{launcher.url}/api/v1/builds/{build['id']}/artifacts", headers=auth,
                             timeout=30).json()["results"][0]
        download = httpx.get(f"{launcher.url}/api/v1/builds/{build['id']}/artifacts/{artifact['id']}/download",
                             headers=auth, follow_redirects=True, timeout=30)
        assert hashlib.sha256(download.content).hexdigest() == artifact["sha256"]
        assert download.content.decode().startswith("built ")

        # Step 8: ping the local drone with the admin token (the engine token is told which scope it needs).
        pinged = launcher.swarmctl("drone", "ping", "local-drone", token=admin)
        assert pinged.stdout.startswith("local-drone: pong in "), pinged.stdout
        refused = subprocess.run([str(BIN / "swarmctl"), "drone", "ping", "local-drone"], capture_output=True,
                                 text=True, env=dict(launcher.env, SWARM_URL=launcher.url, SWARM_TOKEN=engine))
        assert refused.returncode == 1 and "needs a token with scope admin" in refused.stderr

        # Idle and busy alike, the terminal stayed quiet after the box: routine lines are in the files only.
        time.sleep(1)
        # The one line: the refused ping above, a client error the operator may want to see.
        after_box = [line for line in launcher.lines[printed_before_steps:]
                     if not line.endswith("WARNING django.request: Forbidden: /api/v1/drones/local-drone/ping")]
        assert after_box == [], "printed after the summary box:\n" + "\n".join(after_box)
        web_log = (logs / "web.log").read_text()
        assert "Not Found: /api/v1/bundles/" not in web_log
        every_log = "".join(path.read_text(errors="replace") for path in logs.iterdir())
        assert password not in every_log

        code = launcher.interrupt()
    finally:
        launcher.kill()
    output = launcher.output()
    assert code == 0, output
    assert output.rstrip().endswith("[swarm] stopped.")
    assert "Traceback" not in output and "Task exception was never retrieved" not in output, output
    drone_log = (var_dir / "logs" / "drone.log").read_text()
    assert "Traceback" not in drone_log, drone_log[-3000:]
    assert processes_of(var_dir) == [], "left running after Ctrl-C"
    assert re.search(r"^SWARM_SECRET_KEY=", (var_dir / "swarm.env").read_text(), re.M)
    assert "DATABASE_URL" not in (var_dir / "swarm.env").read_text()
