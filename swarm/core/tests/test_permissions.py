"""A scope refusal names the scope the call needs and how to make a token that has it."""
import pytest

pytestmark = pytest.mark.django_db


def test_engine_token_pinging_a_drone_is_told_it_needs_admin(engine_api):
    response = engine_api.post("/api/v1/drones/local-drone/ping")
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "permission_denied"
    assert body["detail"] == (
        "This call needs a token with scope admin; this token's scope is engine. Make one with "
        "`.venv/bin/python manage.py issue_token --scope admin` (or admin → API tokens → Add).")


def test_read_token_writing_is_told_the_least_scope_that_would_do(read_api):
    response = read_api.post("/api/v1/jobs", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["detail"].startswith(
        "This call needs a token with scope engine or admin; this token's scope is read. Make one with "
        "`.venv/bin/python manage.py issue_token --scope engine`")
