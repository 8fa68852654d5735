"""`make run` and `make test`: bring up what is not configured, then run.

    python -m swarm.launcher run    # embedded services if needed, migrate, admin user,
                                    # uvicorn + Celery worker + beat + a local drone agent
    python -m swarm.launcher test [pytest args]

When DATABASE_URL, REDIS_URL or SWARM_S3_BUCKET are set those services are
used and nothing embedded starts. Embedded data lives under `var/` (or
SWARM_VAR_DIR), so a second `make run` finds it again. Ctrl-C stops every
process this launcher started. This module never imports Django: the
settings must see the environment it prepares.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from swarm.embedded import start_postgres, start_redis, wait_for_port

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def var_dir() -> Path:
    path = Path(os.environ.get("SWARM_VAR_DIR", BASE_DIR / "var"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def say(message: str) -> None:
    print(f"[swarm] {message}", flush=True)


def ensure_secret_key(directory: Path) -> None:
    """A stable secret key for this installation, generated on first run."""
    if os.environ.get("SWARM_SECRET_KEY"):
        return
    key_file = directory / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    os.environ["SWARM_SECRET_KEY"] = key_file.read_text().strip()


def write_runtime_env(directory: Path, services: list) -> Path:
    """Publish the running installation's service URLs and key for `manage.py` in other shells."""
    lines = [f"SWARM_SECRET_KEY={os.environ['SWARM_SECRET_KEY']}"]
    for name in ("DATABASE_URL", "REDIS_URL"):
        if any(service.url == os.environ.get(name) for service in services):
            lines.append(f"{name}={os.environ[name]}")
    env_file = directory / "swarm.env"
    env_file.write_text("\n".join(lines) + "\n")
    env_file.chmod(0o600)
    return env_file


def ensure_services(directory: Path, *, purpose: str) -> list:
    """Start embedded PostgreSQL/Redis for whatever is not configured; export their URLs."""
    started = []
    if not os.environ.get("DATABASE_URL"):
        say(f"DATABASE_URL not set: starting embedded PostgreSQL ({directory / purpose / 'postgres'})")
        postgres = start_postgres(directory / purpose / "postgres")
        started.append(postgres)
        os.environ["DATABASE_URL"] = postgres.url
    if not os.environ.get("REDIS_URL"):
        say(f"REDIS_URL not set: starting embedded Redis ({directory / purpose / 'redis'})")
        redis_server = start_redis(directory / purpose / "redis")
        started.append(redis_server)
        os.environ["REDIS_URL"] = redis_server.url
    return started


def stop_all(services: list) -> None:
    for service in reversed(services):
        try:
            service.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the rest
            say(f"could not stop {service}: {exc}")


def manage(*args: str) -> None:
    subprocess.run([PYTHON, str(BASE_DIR / "manage.py"), *args], check=True, cwd=BASE_DIR)


def spawn(name: str, argv: list[str], log_dir: Path) -> subprocess.Popen:
    """Start one long-running child in its own process group."""
    say(f"starting {name}: {' '.join(argv)}")
    return subprocess.Popen(argv, cwd=BASE_DIR, start_new_session=True)


def terminate(children: dict[str, subprocess.Popen], timeout: float = 15.0) -> None:
    """SIGTERM every child's process group, then SIGKILL what is left."""
    for process in children.values():
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for process in children.values():
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in children.values():
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()


def command_run(args) -> int:
    directory = var_dir()
    ensure_secret_key(directory)
    host, port = args.host, args.port
    os.environ.setdefault("SWARM_PUBLIC_URL", f"http://{host}:{port}")
    # Under ASGI, per-thread persistent connections pile up; a per-process pool does not.
    os.environ.setdefault("SWARM_DB_POOL", "1")
    services = ensure_services(directory, purpose="run")
    write_runtime_env(directory, services)
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        manage("migrate", "--noinput")
        manage("ensure_admin")
        if not os.environ.get("SWARM_S3_BUCKET"):
            say(f"SWARM_S3_BUCKET not set: blobs are stored in {directory / 'media'}")
        log_dir = directory / "logs"
        log_dir.mkdir(exist_ok=True)
        children["web"] = spawn("web", [PYTHON, "-m", "uvicorn", "swarm.asgi:application", "--host", host,
                                        "--port", str(port), "--no-access-log"], log_dir)
        children["worker"] = spawn("worker", [PYTHON, "-m", "celery", "-A", "swarm", "worker", "--loglevel",
                                              "INFO", "--concurrency", "2", "--pool", "threads"], log_dir)
        children["beat"] = spawn("beat", [PYTHON, "-m", "celery", "-A", "swarm", "beat", "--loglevel", "INFO",
                                          "--schedule", str(directory / "celerybeat-schedule")], log_dir)
        wait_for_port(host, port, timeout=60)
        for extra in local_agent_argv(directory, host, port):
            children[extra[0]] = spawn(extra[0], extra[1], log_dir)
        say(f"Swarm is up: admin at http://{host}:{port}/admin/  API docs at http://{host}:{port}/api/docs/")
        say("Press Ctrl-C to stop everything.")
        while not stopping:
            for name, process in children.items():
                if process.poll() is not None:
                    say(f"{name} exited with {process.returncode}; stopping")
                    stopping = True
                    break
            time.sleep(0.5)
    finally:
        say("stopping...")
        terminate(children)
        stop_all(services)
        write_runtime_env(directory, [])  # keep the key, forget the stopped services' URLs
        say("stopped.")
    return 0


def local_agent_argv(directory: Path, host: str, port: int) -> list[tuple[str, list[str]]]:
    """The local drone agent `make run` starts, when the agent supports `run`."""
    if os.environ.get("SWARM_LOCAL_AGENT", "1") != "1":
        return []
    try:
        from swarm_agent.commands import run as agent_run  # noqa: F401
    except ImportError:  # the drone agent is not installed: the control plane runs without it
        return []
    join_token = subprocess.run(
        [PYTHON, str(BASE_DIR / "manage.py"), "issue_join_token", "--name", "make-run-local", "--reuse"],
        cwd=BASE_DIR, capture_output=True, text=True, check=False,
    )
    if join_token.returncode != 0:
        say(f"no local drone: {join_token.stderr.strip()}")
        return []
    agent_dir = directory / "agent"
    agent_dir.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "swarm_agent.cli_agent", "run", "--server", f"http://{host}:{port}",
            "--join-token", join_token.stdout.strip(), "--state-dir", str(agent_dir), "--name", "local-drone"]
    return [("drone", argv)]


def command_test(args) -> int:
    directory = var_dir()
    services = ensure_services(directory, purpose="test")
    # Cache keys of this checkout's test run (failed-authentication counters among them) apart from
    # another checkout's run on the same Redis database.
    os.environ.setdefault("SWARM_CACHE_PREFIX", "test-" + hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:10])
    try:
        return subprocess.run([PYTHON, "-m", "pytest", *args.pytest_args], cwd=BASE_DIR).returncode
    finally:
        stop_all(services)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swarm.launcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the whole control plane")
    run.add_argument("--host", default=os.environ.get("SWARM_HOST", "127.0.0.1"))
    run.add_argument("--port", type=int, default=int(os.environ.get("SWARM_PORT", "8000")))
    test = sub.add_parser("test", help="run the test suite against real services")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    return {"run": command_run, "test": command_test}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
