"""Health probes, over the test client and over a real uvicorn server."""
import httpx
import pytest


@pytest.mark.django_db
def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}


@pytest.mark.django_db
def test_readyz_names_the_failed_dependency(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["redis"]


def test_live_server_serves_readyz(live_url):
    response = httpx.get(f"{live_url}/readyz", timeout=10)
    assert response.status_code == 200, response.text
