"""Brute force refused: failed token authentications are limited per address and per token prefix (429 with
Retry-After, counters in Redis, audited); admin logins lock out after repeated failures (django-axes, audited)."""
from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from conftest import token_client
from swarm.core.models import AuditLogEntry
from swarm.core.tokens import generate_token

pytestmark = pytest.mark.django_db


def _client(plaintext: str, address: str = "203.0.113.7") -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def _wrong_token(prefix: str | None = None) -> str:
    guess = generate_token().plaintext
    if prefix:
        kind, _, secret = guess.split("_", 2)
        guess = f"{kind}_{prefix}_{secret}"
    return guess


def test_failures_from_one_address_are_refused_with_429_and_retry_after(settings, django_capture_on_commit_callbacks):
    settings.SWARM_AUTH_FAILURES_PER_ADDRESS = 3
    settings.SWARM_AUTH_FAILURES_PER_TOKEN_PREFIX = 100
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):
            assert _client(_wrong_token()).get("/api/v1/tenants").status_code == 401
    valid = token_client("admin").token
    refused = _client(valid).get("/api/v1/tenants")  # even a valid token: the address is blocked
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "too_many_failed_authentications"
    assert "address 203.0.113.7" in body["detail"] and "SWARM_AUTH_FAILURES_PER_ADDRESS" in body["detail"]
    retry_after = int(refused["Retry-After"])
    assert 1 <= retry_after <= settings.SWARM_AUTH_FAILURE_WINDOW
    assert f"Retry after {retry_after} s" in body["detail"]
    # Another address is not affected.
    assert _client(valid, address="198.51.100.2").get("/api/v1/tenants").status_code == 200
    entry = AuditLogEntry.objects.get(action="auth.rate_limited")
    assert entry.actor == "address:203.0.113.7" and entry.detail["setting"] == "SWARM_AUTH_FAILURES_PER_ADDRESS"


def test_failures_for_one_token_prefix_are_refused_from_every_address(settings, django_capture_on_commit_callbacks):
    settings.SWARM_AUTH_FAILURES_PER_ADDRESS = 100
    settings.SWARM_AUTH_FAILURES_PER_TOKEN_PREFIX = 2
    engine = token_client("engine")
    prefix = engine.token.split("_")[1]
    with django_capture_on_commit_callbacks(execute=True):
        assert _client(_wrong_token(prefix), "192.0.2.1").get("/api/v1/tenants").status_code == 401
        assert _client(_wrong_token(prefix), "192.0.2.2").get("/api/v1/tenants").status_code == 401
    refused = _client(_wrong_token(prefix), "192.0.2.3").get("/api/v1/tenants")
    assert refused.status_code == 429 and "Retry-After" in refused
    assert f"token prefix {prefix}" in refused.json()["detail"]
    # The token's own holder waits the window out too (a correct guess must not pass either).
    assert _client(engine.token, "192.0.2.9").get("/api/v1/tenants").status_code == 429
    # Other tokens are not affected.
    assert token_client("admin").get("/api/v1/tenants").status_code == 200
    entry = AuditLogEntry.objects.get(action="auth.rate_limited")
    assert entry.object_type == "core.apitoken" and entry.detail["token_prefix"] == prefix


def test_successful_authentications_never_count(settings):
    settings.SWARM_AUTH_FAILURES_PER_ADDRESS = 2
    settings.SWARM_AUTH_FAILURES_PER_TOKEN_PREFIX = 2
    client = token_client("admin")
    for _ in range(10):
        assert client.get("/api/v1/tenants").status_code == 200


def test_the_window_ends_and_counters_live_in_the_shared_cache(settings):
    settings.SWARM_AUTH_FAILURES_PER_ADDRESS = 1
    assert _client(_wrong_token()).get("/api/v1/tenants").status_code == 401
    assert _client(_wrong_token()).get("/api/v1/tenants").status_code == 429
    keys = [key for key in cache._cache.get_client().scan_iter(match=cache.make_key("auth-failures:*"))]
    assert keys, "the counters are in Redis, where every replica reads them"
    # A new window (here: a shorter one, which renumbers the windows) starts from zero.
    settings.SWARM_AUTH_FAILURE_WINDOW = 7
    assert _client(_wrong_token()).get("/api/v1/tenants").status_code == 401


def test_metadata_token_failures_count_too(settings):
    settings.SWARM_AUTH_FAILURES_PER_ADDRESS = 2
    client = APIClient(REMOTE_ADDR="203.0.113.50")
    for _ in range(2):
        assert client.get("/api/v1/metadata", HTTP_X_SWARM_METADATA_TOKEN=_wrong_token()).status_code == 401
    # An admin token is no execution token: refused, and counted.
    refused = client.get("/api/v1/metadata", HTTP_X_SWARM_METADATA_TOKEN=token_client("admin").token)
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_failed_authentications"


def test_heartbeat_token_failures_count_too(settings):
    """The heartbeat authenticates in its own statement; its refusals go through the same limits."""
    settings.SWARM_AUTH_FAILURES_PER_ADDRESS = 2
    client = APIClient(REMOTE_ADDR="203.0.113.60")
    for _ in range(2):
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {_wrong_token()}")
        assert client.post("/api/v1/drones/heartbeat", {"metrics": {}}, format="json").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {_wrong_token()}")
    refused = client.post("/api/v1/drones/heartbeat", {"metrics": {}}, format="json")
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_failed_authentications"
    assert int(refused["Retry-After"]) > 0


def test_admin_login_locks_out_after_repeated_failures_and_is_audited(operator, settings,
                                                                       django_capture_on_commit_callbacks):
    settings.AXES_FAILURE_LIMIT = 3
    client = Client(REMOTE_ADDR="203.0.113.99")
    login = "/admin/login/?next=/admin/"
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            page = client.post(login, {"username": "operator", "password": "wrong"})
            assert page.status_code == 200 and b"Please enter the correct username" in page.content
        locked = client.post(login, {"username": "operator", "password": "wrong"})
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    # Now even the right password is refused from this address.
    assert client.post(login, {"username": "operator", "password": "operator-pass-1"}).status_code == 429
    # The same operator from elsewhere still logs in.
    elsewhere = Client(REMOTE_ADDR="198.51.100.20")
    assert elsewhere.post(login, {"username": "operator", "password": "operator-pass-1"}).status_code == 302
    entry = AuditLogEntry.objects.get(action="admin.login_locked_out")
    assert (entry.object_id, entry.detail["address"], entry.detail["failure_limit"]) == ("operator",
                                                                                       "203.0.113.99", 3)
    from axes.models import AccessAttempt

    assert AccessAttempt.objects.filter(username="operator", ip_address="203.0.113.99").exists()


def test_admin_login_form_needs_its_csrf_token(operator):
    client = Client(enforce_csrf_checks=True)
    refused = client.post("/admin/login/", {"username": "operator", "password": "operator-pass-1"})
    assert refused.status_code == 403
    page = client.get("/admin/login/")
    assert b"csrfmiddlewaretoken" in page.content
