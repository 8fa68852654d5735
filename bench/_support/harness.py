"""Shared set-up of the build benchmarks: services, a throw-away database, Django, a uvicorn server.

Uses DATABASE_URL / REDIS_URL when set, else starts embedded PostgreSQL and
Redis under var/bench (swarm.launcher); blobs go to a local directory unless
the S3 settings are set. Everything binds 127.0.0.1 and is stopped at exit.
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(BASE_DIR))


def log(message: str) -> None:
    """Progress on stderr; stdout's last line is the JSON result."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def prepare_environment(name: str) -> str:
    """Start or reuse services, create a fresh database, migrate it; returns its URL."""
    from swarm import launcher

    directory = launcher.var_dir() / "bench"
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SWARM_VAR_DIR", str(directory))
    os.environ.setdefault("SWARM_MEDIA_ROOT", str(directory / "media"))
    launcher.ensure_secret_key(directory)
    services = launcher.ensure_services(directory, purpose=name)
    atexit.register(launcher.stop_all, services)
    base_url = os.environ["DATABASE_URL"]
    for abandoned in reap_abandoned_databases(base_url):
        log(f"dropped {abandoned}, left by a bench that was killed")
    database = throwaway_database_name(name)
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')

    def drop() -> None:
        try:
            with psycopg.connect(base_url, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        except Exception as error:  # noqa: BLE001 - best effort at exit
            log(f"could not drop {database}: {error}")

    parts = urlsplit(base_url)
    url = urlunsplit(parts._replace(path=f"/{database}"))
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SWARM_DB_CONN_MAX_AGE", "600")
    os.environ["DJANGO_SETTINGS_MODULE"] = "swarm.settings"
    log(f"migrating {database}")
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "migrate", "-v", "0"], check=True, cwd=BASE_DIR)
    atexit.register(drop)
    import django

    django.setup()
    return url


class Server:
    """uvicorn serving the ASGI app on a free 127.0.0.1 port."""

    def __init__(self, *, workers: int = 1, env: dict | None = None, log_path: Path | None = None):
        from swarm.embedded import free_port, wait_for_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log_path = log_path or Path(os.environ["SWARM_VAR_DIR"]) / f"uvicorn-{self.port}.log"
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        argv = [sys.executable, "-m", "uvicorn", "swarm.asgi:application", "--host", "127.0.0.1", "--port",
                str(self.port), "--no-access-log", "--log-level", "warning", "--workers", str(workers)]
        self.process = subprocess.Popen(argv, cwd=BASE_DIR, env=dict(os.environ, SWARM_PUBLIC_URL=self.url,
                                                                     **(env or {})),
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)
        wait_for_port("127.0.0.1", self.port, timeout=60)
        time.sleep(1.0 if workers > 1 else 0.2)

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` percentile of `values` (nearest rank)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def available_connections(database_url: str, wanted: int) -> int:
    """How many more connections the server accepts now, keeping 10 spare for everyone else."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        limit = int(connection.execute("SHOW max_connections").fetchone()[0])
        used = int(connection.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0])
    return max(1, min(wanted, limit - used - 10))


def throwaway_database_name(name: str) -> str:
    """`bench_<name>_p<pid>_<random>`: the pid lets a later run drop it if this one is killed before its cleanup."""
    return f"bench_{name}_p{os.getpid()}_{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_abandoned_databases(admin_url: str) -> list[str]:
    """Drop throwaway bench databases whose bench process is gone (killed before it could drop them)."""
    import re

    import psycopg

    dropped = []
    with psycopg.connect(admin_url, autocommit=True) as connection:
        names = [row[0] for row in connection.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench%'")]
        for name in names:
            match = re.fullmatch(r"bench_[a-z_]+_p(\d+)_[0-9a-f]+", name)
            if match is None or _alive(int(match.group(1))):
                continue
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            dropped.append(name)
    return dropped
