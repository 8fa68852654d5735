"""API tokens: issued once by `manage.py issue_token`, stored hashed, compared in constant time, tenant-bound."""
import hashlib
import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict
from django.utils import timezone
from rest_framework.test import APIClient

from swarm.core import tokens
from swarm.core.authentication import authenticate_token
from swarm.core.models import ApiToken, AuditLogEntry
from swarm.core.services import api_token_issue, api_token_revoke
from workflows.tests.factories import make_tenant, make_version, make_workflow

pytestmark = pytest.mark.django_db


def issue(*args) -> str:
    out = io.StringIO()
    call_command("issue_token", *args, stdout=out)
    return out.getvalue().strip()


def bearer(plaintext: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def test_issue_token_prints_a_working_tenant_bound_token():
    acme, globex = make_tenant("acme"), make_tenant("globex")
    own = make_workflow(acme)
    foreign = make_workflow(globex)
    plaintext = issue("--scope", "engine", "--tenant", "acme", "--name", "ci")
    assert plaintext.startswith("swm_")
    assert "\n" not in plaintext

    token = ApiToken.objects.get()
    assert (token.scope, token.tenant_id, token.name) == ("engine", acme.pk, "ci")
    client = bearer(plaintext)
    assert client.get(f"/api/v1/workflows/{own.pk}").status_code == 200
    assert client.get(f"/api/v1/workflows/{foreign.pk}").status_code == 404
    assert [t["slug"] for t in client.get("/api/v1/tenants").json()["results"]] == ["acme"]
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_only_prefix_and_digest_are_stored():
    make_tenant("acme")
    plaintext = issue("--scope", "engine", "--tenant", "acme", "--name", "ci")
    token = ApiToken.objects.get()
    _, prefix, secret = plaintext.split("_", 2)
    assert token.prefix == prefix
    assert token.digest == hashlib.sha256(plaintext.encode()).hexdigest()
    stored = " ".join(str(value) for value in model_to_dict(token).values())
    assert plaintext not in stored
    assert secret not in stored
    # Nor anywhere else a token's row could leak it: str() and the audit log.
    assert secret not in str(token)
    assert not any(secret in str(entry.detail) for entry in AuditLogEntry.objects.all())


def test_digest_comparison_is_constant_time(monkeypatch):
    _, plaintext = api_token_issue(scope="admin")
    compared = []
    real_compare = tokens.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    assert authenticate_token(plaintext) is not None
    assert compared and compared[-1][0] == hashlib.sha256(plaintext.encode()).hexdigest()
    wrong = plaintext[:-2] + ("AA" if not plaintext.endswith("AA") else "BB")
    assert authenticate_token(wrong) is None
    assert compared[-1][0] == hashlib.sha256(wrong.encode()).hexdigest()


def test_same_prefix_other_secret_is_refused():
    _, plaintext = api_token_issue(scope="admin")
    prefix = plaintext.split("_")[1]
    response = bearer(f"swm_{prefix}_{'z' * 40}").get("/api/v1/tenants")
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


@pytest.mark.parametrize("scope", ["drone", "execution", "superuser"])
def test_issue_token_refuses_other_scopes(scope):
    with pytest.raises(CommandError, match="invalid choice"):
        issue("--scope", scope)
    assert not ApiToken.objects.exists()


def test_issue_token_unknown_tenant_is_an_error():
    with pytest.raises(CommandError, match="No tenant 'nope'"):
        issue("--scope", "engine", "--tenant", "nope")
    assert not ApiToken.objects.exists()


def test_issue_token_can_create_the_tenant_and_set_expiry():
    plaintext = issue("--scope", "read", "--tenant", "newco", "--create-tenant", "--expires-days", "2")
    token = ApiToken.objects.get()
    assert token.tenant.slug == "newco"
    assert timedelta(days=1, hours=23) < token.expires_at - timezone.now() <= timedelta(days=2)
    assert bearer(plaintext).get("/api/v1/tenants").status_code == 200


def test_revoked_and_expired_tokens_stop_working():
    token, plaintext = api_token_issue(scope="admin")
    client = bearer(plaintext)
    assert client.get("/api/v1/tenants").status_code == 200
    api_token_revoke(token=token, actor="test")
    assert client.get("/api/v1/tenants").status_code == 401

    token, plaintext = api_token_issue(scope="admin")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert bearer(plaintext).get("/api/v1/tenants").status_code == 401


def test_tenant_bound_read_token_cannot_write_even_its_own_tenant():
    acme = make_tenant("acme")
    workflow = make_workflow(acme)
    make_version(workflow, "1.0.0", activate=True)
    make_version(workflow, "2.0.0", activate=True)
    client = bearer(issue("--scope", "read", "--tenant", "acme"))
    assert client.get(f"/api/v1/workflows/{workflow.pk}/active").json()["version"] == "2.0.0"
    assert client.post(f"/api/v1/workflows/{workflow.pk}/rollback").status_code == 403
    assert bearer(issue("--scope", "engine", "--tenant", "acme")).get(
        f"/api/v1/workflows/{workflow.pk}/active").json()["version"] == "2.0.0"
