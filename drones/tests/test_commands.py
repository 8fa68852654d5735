"""`manage.py issue_join_token`, as `make run` uses it."""
from io import StringIO

import pytest
from django.core.management import call_command

from drones.models import JoinToken
from drones.selectors import join_token_find
from drones.services import join_token_revoke

pytestmark = pytest.mark.django_db


def _issue(*args) -> str:
    out = StringIO()
    call_command("issue_join_token", *args, stdout=out)
    return out.getvalue().strip()


def test_prints_only_a_new_token():
    plaintext = _issue("--name", "ci", "--max-uses", "3", "--expires-hours", "2")
    assert plaintext.startswith("swj_") and "\n" not in plaintext
    token = join_token_find(plaintext)
    assert token.name == "ci" and token.max_uses == 3 and token.expires_at is not None


def test_reuse_returns_the_same_usable_token_and_replaces_a_revoked_one():
    first = _issue("--name", "make-run-local", "--reuse")
    assert _issue("--name", "make-run-local", "--reuse") == first
    assert JoinToken.objects.filter(name="make-run-local").count() == 1
    join_token_revoke(token=join_token_find(first))
    second = _issue("--name", "make-run-local", "--reuse")
    assert second != first and join_token_find(second).is_usable


def test_reuse_replaces_a_token_whose_stored_plaintext_no_key_decrypts(admin_client):
    from cryptography.fernet import Fernet

    first = _issue("--name", "make-run-local", "--reuse")
    token = join_token_find(first)
    lost_key = Fernet(Fernet.generate_key())
    JoinToken.objects.filter(pk=token.pk).update(plaintext_encrypted=lost_key.encrypt(first.encode()).decode())
    page = admin_client.get(f"/admin/drones/jointoken/{token.pk}/change/")
    assert page.status_code == 200 and b"the stored token cannot be decrypted" in page.content
    second = _issue("--name", "make-run-local", "--reuse")
    assert second != first and join_token_find(second).is_usable
    token.refresh_from_db()
    assert token.revoked_at is not None
