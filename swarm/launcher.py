"""`make run` and `make test`: bring up what is not configured, then run.

    python -m swarm.launcher run    # embedded services if needed, migrate, admin user,
                                    # uvicorn + Celery worker + beat + a local drone agent
    python -m swarm.launcher test [pytest args]

When DATABASE_URL, REDIS_URL or SWARM_S3_BUCKET are set those services are
used and nothing embedded starts. Embedded data lives under `var/` (or
SWARM_VAR_DIR), so a second `make run` finds it again. Ctrl-C stops every
process this launcher started. Start-up ends with one boxed summary
(admin URL and credentials, API docs, token commands, logs); afterwards the
terminal shows only warnings and errors of the processes, whose full output
is in `var/logs/<name>.log` (`-v` shows INFO here too). This module never
imports Django: the settings must see the environment it prepares.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from swarm.embedded import EmbeddedServiceError, start_postgres, start_redis, wait_for_port
from swarm.launcher_console import (
    LEVELS,
    ChildOutput,
    Summary,
    print_block,
    say,
    spawn_child,
    summary_box,
    wait_for_events,
)

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def var_dir() -> Path:
    path = Path(os.environ.get("SWARM_VAR_DIR", BASE_DIR / "var"))
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def manage(*args: str, log_path: Path | None = None) -> str:
    """Run a management command; its output goes to `log_path` (and is returned), or an error names it."""
    result = subprocess.run([PYTHON, str(BASE_DIR / "manage.py"), *args], cwd=BASE_DIR, capture_output=True,
                            text=True)
    if log_path is not None:
        with open(log_path, "a") as log:
            log.write(f"$ manage.py {' '.join(args)}\n{result.stdout}{result.stderr}")
    if result.returncode != 0:
        raise LauncherError(f"manage.py {args[0]} failed (exit {result.returncode}):\n"
                            f"{(result.stderr or result.stdout).strip()[-3000:]}")
    return result.stdout


class LauncherError(Exception):
    """A start-up step failed; the message says which and why."""


def terminate(children: dict[str, subprocess.Popen], timeout: float = 15.0) -> None:
    """SIGTERM every child's process group, then SIGKILL what is left.

    The drone goes first: it closes its WebSocket while the server still
    answers, so neither side logs a connection torn down under it.
    """
    first = [name for name in children if name == "drone"]
    for batch in (first, [name for name in children if name not in first]):
        for name in batch:
            if children[name].poll() is None:
                try:
                    os.killpg(children[name].pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for name in batch:
            try:
                children[name].wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    for process in children.values():
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()


def shown_path(path: Path) -> Path:
    """`path` relative to the working directory when it is inside it (`var/logs`), else as it is."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def terminal_level(verbosity: int) -> int:
    """The lowest level of the children's lines shown in the terminal: `-v` INFO, `-vv` DEBUG,
    else SWARM_LOG_LEVEL when set, else WARNING (everything is in var/logs/ anyway)."""
    if verbosity >= 2:
        return logging.DEBUG
    if verbosity == 1:
        return logging.INFO
    configured = os.environ.get("SWARM_LOG_LEVEL", "").upper()
    return LEVELS.get(configured, logging.WARNING)


def command_run(args) -> int:
    directory = var_dir()
    ensure_secret_key(directory)
    host, port = args.host, args.port
    base_url = f"http://{host}:{port}"
    os.environ.setdefault("SWARM_PUBLIC_URL", base_url)
    # Under ASGI, per-thread persistent connections pile up; a per-process pool does not.
    os.environ.setdefault("SWARM_DB_POOL", "1")
    if args.verbose >= 2:
        os.environ.setdefault("SWARM_LOG_LEVEL", "DEBUG")
    level = terminal_level(args.verbose)
    log_dir = directory / "logs"
    log_dir.mkdir(exist_ok=True)
    setup_log = log_dir / "setup.log"
    children: dict[str, subprocess.Popen] = {}
    outputs: dict[str, ChildOutput] = {}
    services: list = []
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt  # interrupts a start-up step too; the loop below catches it

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    try:
        services = ensure_services(directory, purpose="run")
        write_runtime_env(directory, services)
        say(f"migrating the database (output in {setup_log})")
        manage("migrate", "--noinput", log_path=setup_log)
        admin = json.loads(manage("ensure_admin", "--json").strip().splitlines()[-1])
        if not os.environ.get("SWARM_S3_BUCKET"):
            say(f"SWARM_S3_BUCKET not set: blobs are stored in {directory / 'media'}")

        def start(name: str, argv: list[str], env: dict | None = None) -> ChildOutput:
            children[name], outputs[name] = spawn_child(name, argv, log_dir=log_dir, terminal_level=level,
                                                        cwd=BASE_DIR, env=env)
            return outputs[name]

        start("web", [PYTHON, "-m", "uvicorn", "swarm.asgi:application", "--host", host, "--port", str(port),
                      "--no-access-log"])
        worker_ready = start("worker", [PYTHON, "-m", "celery", "-A", "swarm", "worker", "--loglevel", "INFO",
                                        "--concurrency", "2", "--pool", "threads"]).watch("ready.")
        start("beat", [PYTHON, "-m", "celery", "-A", "swarm", "beat", "--loglevel", "INFO",
                       "--schedule", str(directory / "celerybeat-schedule")])
        say(f"starting the web server, Celery worker and beat (logs in {log_dir})")
        wait_for_port(host, port, timeout=60, process=children["web"])
        ready = [worker_ready]
        agent = local_agent(directory, base_url, log_path=setup_log)
        if agent is not None:
            ready.append(start("drone", agent.argv, env=agent.env).watch("WebSocket connected"))
        if not wait_for_events(ready, timeout=30):
            say("still starting: the worker or the drone is slow (see their logs)")
        print_block(summary_box(Summary(
            base_url=base_url, admin_user=admin["username"], admin_password=admin["password"],
            password_from_env=admin["password_from_env"], log_dir=shown_path(log_dir), children=tuple(children),
            drone_name=agent.name if agent else None)))
        while not stopping:
            for name, process in children.items():
                if process.poll() is not None:
                    say(f"{name} exited with {process.returncode}; stopping. Its last lines "
                        f"({outputs[name].log_path}):")
                    print_block("\n".join(outputs[name].tail))
                    stopping, exit_code = True, 1
                    break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (LauncherError, EmbeddedServiceError, TimeoutError) as error:
        say(f"error: {error}")
        for name, process in children.items():
            if process.poll() is not None:
                outputs[name].join(2)
                say(f"{name} exited with {process.returncode}; its last lines ({outputs[name].log_path}):")
                print_block("\n".join(outputs[name].tail))
        exit_code = 1
    finally:
        # Another Ctrl-C must not cut the clean-up short (every wait in it is bounded).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("stopping...")
        terminate(children)
        for output in outputs.values():
            output.join(5)
        stop_all(services)
        write_runtime_env(directory, [])  # keep the key, forget the stopped services' URLs
        say("stopped.")
    return exit_code


@dataclass(frozen=True)
class LocalAgent:
    """The local drone `make run` starts: its command line and environment (the join token is in the
    environment, never in argv where `ps` shows it)."""

    name: str
    argv: list[str]
    env: dict[str, str]


def local_agent(directory: Path, base_url: str, *, log_path: Path) -> LocalAgent | None:
    """The local drone agent `make run` starts, when the agent is installed and not turned off."""
    if os.environ.get("SWARM_LOCAL_AGENT", "1") != "1":
        return None
    try:
        from swarm_agent.commands import run as agent_run  # noqa: F401
    except ImportError:  # the drone agent is not installed: the control plane runs without it
        return None
    try:
        join_token = manage("issue_join_token", "--name", "make-run-local", "--reuse").strip()
    except LauncherError as error:
        say(f"no local drone: {error}")
        return None
    agent_dir = directory / "agent"
    agent_dir.mkdir(exist_ok=True)
    name = "local-drone"
    argv = [PYTHON, "-m", "swarm_agent.cli_agent", "run", "--server", base_url, "--state-dir", str(agent_dir),
            "--name", name]
    return LocalAgent(name=name, argv=argv, env={**os.environ, "SWARM_JOIN_TOKEN": join_token})


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
    run.add_argument("-v", "--verbose", action="count", default=0,
                     help="show the processes' INFO lines here too (-vv: DEBUG); they are always in var/logs/")
    test = sub.add_parser("test", help="run the test suite against real services")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    return {"run": command_run, "test": command_test}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
