"""The control plane's logs: JSON lines, one capped Redis stream every process appends to, and its viewer.

A Redis outage never blocks or breaks logging (in this process, and in a real
server whose stream Redis is gone: it keeps serving and its viewer says why);
in a real Chromium the admin's log page tails a live server's lines while a
build is triggered, and filters them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest
import websockets
from django.test import Client
from websockets.sync.client import connect

from swarm.core import logstream
from swarm.core.logstream import JsonFormatter, LogFilter, RedisStreamHandler, process_role
from swarm.embedded import free_port


def test_process_roles_name_what_wrote_a_line(monkeypatch):
    monkeypatch.delenv("SWARM_PROCESS_ROLE", raising=False)
    assert process_role(["/venv/bin/uvicorn", "swarm.asgi:application"]) == "web"
    assert process_role(["python", "-m", "uvicorn", "swarm.asgi:application"]) == "web"
    assert process_role(["/venv/bin/celery", "-A", "swarm", "worker"]) == "worker"
    assert process_role(["/venv/bin/celery", "-A", "swarm", "beat"]) == "beat"
    assert process_role(["/venv/lib/python3.11/site-packages/celery/__main__.py", "-A", "swarm", "worker"]) == "worker"
    assert process_role(["/venv/lib/python3.11/site-packages/uvicorn/__main__.py", "swarm.asgi:application"]) == "web"
    assert process_role(["manage.py", "migrate"]) == "manage migrate"
    monkeypatch.setenv("SWARM_PROCESS_ROLE", "web-2")
    assert process_role(["anything"]) == "web-2"


def test_json_lines_carry_level_logger_process_and_the_traceback():
    record = logging.LogRecord("builds.services", logging.ERROR, __file__, 1, "build %s failed", (7,), None)
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["message"]) == ("ERROR", "builds.services", "build 7 failed")
    assert "ValueError: boom" in line["exc"] and "@" in line["process"] and line["time"].endswith("+00:00")


def test_records_reach_the_capped_stream(settings):
    import redis

    handler = RedisStreamHandler(maxlen=50)
    logger = logging.getLogger("swarm.tests.logstream")
    logger.addHandler(handler)
    try:
        for index in range(120):
            logger.warning("line %s", index)
        handler.flush_pending(5)
        time.sleep(0.3)
    finally:
        logger.removeHandler(handler)
    client = redis.Redis.from_url(settings.SWARM_LOG_REDIS_URL)
    entries = client.xrevrange(logstream.stream_key(), count=200)
    ours = [json.loads(fields[b"j"]) for _, fields in entries
            if json.loads(fields[b"j"])["logger"] == "swarm.tests.logstream"]
    assert ours and ours[0]["message"] == "line 119"
    assert client.xlen(logstream.stream_key()) < 200, "MAXLEN ~ keeps the stream capped"


def test_a_redis_outage_never_blocks_or_breaks_logging(settings, capfd):
    settings.SWARM_LOG_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    handler = RedisStreamHandler()
    logger = logging.getLogger("swarm.tests.outage")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        started = time.perf_counter()
        for index in range(20_000):  # more than the queue holds: the rest is dropped, never waited for
            logger.error("still logging %s", index)
        elapsed = time.perf_counter() - started
        time.sleep(1.5)
        logger.error("and after the first failed send")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert elapsed < 5, f"logging waited for Redis ({elapsed:.1f} s for 20,000 records)"
    assert handler.dropped > 0
    assert "swarm log stream unavailable" in capfd.readouterr().err


def test_the_viewers_filter():
    line = {"level": "WARNING", "process": "worker@host:12", "logger": "builds.services.reaper",
            "message": "Build 4 lease expired", "exc": ""}
    assert LogFilter.from_message({"level": "info", "process": "WORKER", "logger": "builds", "text": "lease"}).matches(line)
    assert not LogFilter.from_message({"level": "ERROR"}).matches(line)
    assert not LogFilter.from_message({"process": "web"}).matches(line)
    assert not LogFilter.from_message({"logger": "drones"}).matches(line)
    assert LogFilter.from_message({"level": "bogus", "text": 42}) == LogFilter()


def test_tail_says_when_the_stream_is_unavailable(settings):
    settings.SWARM_LOG_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    async def first():
        async for message in logstream.tail(LogFilter()):
            return message

    message = asyncio.run(asyncio.wait_for(first(), 10))
    assert message["type"] == "unavailable" and "cannot be reached" in message["detail"]


def _staff_cookie(django_user_model) -> str:
    user = django_user_model.objects.create_superuser("logreader", "logs@example.test", "correct horse battery")
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@pytest.mark.live
def test_a_server_whose_log_redis_is_down_keeps_serving_and_its_viewer_says_so(
        subprocess_environment, tmp_path, transactional_db, django_user_model):
    from conftest import LiveServer

    env = dict(subprocess_environment, SWARM_LOG_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    server = LiveServer(env, tmp_path / "no-log-redis.log")
    try:
        for _ in range(30):
            assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        cookie = _staff_cookie(django_user_model)
        url = server.url.replace("http://", "ws://") + "/ws/logs/"
        with connect(url, additional_headers={"Cookie": f"sessionid={cookie}"}, open_timeout=15) as socket:
            message = json.loads(socket.recv(timeout=15))
        assert message["type"] == "unavailable" and "keep logging to their stdout" in message["detail"]
        with pytest.raises(websockets.InvalidStatus):
            connect(url, open_timeout=15).__enter__()  # anonymous: refused
        assert server.process.poll() is None
    finally:
        server.stop()
    assert "swarm log stream unavailable" in server.log_text()


@pytest.mark.live
@pytest.mark.browser
def test_the_log_page_tails_the_servers_lines_while_a_build_is_triggered(live_url, browser_page, django_user_model,
                                                                         admin_api):
    from builds.tests.factories import make_job

    django_user_model.objects.create_superuser("operator", "op@example.test", "correct horse battery")
    page = browser_page
    page.goto(f"{live_url}/admin/login/?next=/admin/logs/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/logs/")
    page.wait_for_function("() => document.getElementById('log-status').textContent.startsWith('live')")
    page.fill("#log-filter-logger", "builds")
    page.wait_for_timeout(600)  # the filter is sent after a short pause in typing
    job = make_job(name="logged-job")
    response = httpx.post(f"{live_url}/api/v1/jobs/{job.pk}/trigger", json={"branch": "main"},
                          headers={"Authorization": f"Bearer {admin_api.token}"}, timeout=30)
    assert response.status_code == 201, response.text
    build_id = response.json()["id"]
    page.wait_for_function(f"() => document.getElementById('log-lines').innerText.includes('build {build_id} of job "
                           f"logged-job queued')", timeout=20_000)
    row = page.locator(".log-line", has_text=f"build {build_id} of job logged-job queued").first
    assert "web@" in row.locator(".log-process").inner_text()
    assert row.locator(".log-level").inner_text() == "INFO"
    assert row.locator(".log-logger").inner_text().startswith("builds")
    page.select_option("#log-filter-level", "ERROR")
    page.wait_for_function("() => !document.getElementById('log-lines').innerText.includes('logged-job queued')")
