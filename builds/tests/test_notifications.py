"""Build notifications: a body a Slack incoming webhook accepts, and sent once even with two workers racing."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection

from builds.models import Build, BuildEvent, BuildNotification
from builds.notifications import build_notify_finished
from builds.services import build_claim, build_finish_from_agent, build_set_running, build_trigger
from builds.tests.factories import make_drone, make_job


class SlackLikeReceiver(BaseHTTPRequestHandler):
    """Answers like a Slack incoming webhook: 400 `no_text` unless the body has `text`; slow, to widen races."""

    bodies: list = []
    delay = 0.0

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.delay)
        type(self).bodies.append(body)
        ok = isinstance(body.get("text"), str) and body["text"]
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"no_text")

    def log_message(self, *args):
        return


@pytest.fixture
def receiver():
    SlackLikeReceiver.bodies = []
    SlackLikeReceiver.delay = 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlackLikeReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/services/T000/B000/XXXX"
    server.shutdown()


def finished_build(url: str) -> Build:
    job = make_job(name="notified", retry={"max": 0}, notifications={"webhook": url, "on": ["failed"]})
    build = build_trigger(job=job, trigger="api", triggered_by="user:ada")
    drone = make_drone()[0]
    build_claim(drone=drone)
    build_set_running(build_id=build.pk, drone=drone)
    build_finish_from_agent(build_id=build.pk, drone=drone, state="failed", exit_code=2, log_bytesize=0,
                            log_checksum="")
    return Build.objects.get(pk=build.pk)


@pytest.mark.django_db
def test_the_webhook_body_is_slack_shaped_alongside_the_json(receiver):
    build = finished_build(receiver)
    assert build_notify_finished(build_id=build.pk) == ["webhook"]
    body = SlackLikeReceiver.bodies[-1]
    assert body["text"].startswith("[swarm] notified #1 failed (script_failure)")
    assert body["blocks"][0]["type"] == "section" and "notified #1 failed" in body["blocks"][0]["text"]["text"]
    assert body["build"]["state"] == "failed" and body["event"] == "build.finished"
    assert BuildNotification.objects.get(build=build).detail == {"status": 200}


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_send_once(receiver, monkeypatch):
    SlackLikeReceiver.delay = 0.5
    # The finish enqueues the notification task on commit; a Celery worker another test left running would
    # take it and send before the race starts. The two racers here are the workers.
    monkeypatch.setattr("builds.tasks.notify_build_finished.delay", lambda *args, **kwargs: None)
    monkeypatch.setattr("builds.tasks.notify_build_finished.apply_async", lambda *args, **kwargs: None)
    build = finished_build(receiver)
    start = threading.Barrier(2)
    results, errors = [], []

    def worker():
        try:
            start.wait()
            results.append(build_notify_finished(build_id=build.pk))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()  # each thread had its own connection

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(results) == [[], ["webhook"]]
    assert len(SlackLikeReceiver.bodies) == 1
    assert BuildEvent.objects.filter(build=build, kind="notified").count() == 1


@pytest.mark.django_db
def test_a_failed_send_stays_unsent_and_is_sent_by_a_later_run(receiver, monkeypatch):
    build = finished_build(receiver)
    from builds import notifications

    def refuse(payload, url):
        raise OSError("connection refused")

    monkeypatch.setattr(notifications, "_send_webhook", refuse)
    with pytest.raises(OSError):
        build_notify_finished(build_id=build.pk)
    assert not BuildNotification.objects.filter(build=build, sent_at__isnull=False).exists()
    monkeypatch.undo()
    assert build_notify_finished(build_id=build.pk) == ["webhook"]
    assert len(SlackLikeReceiver.bodies) == 1
