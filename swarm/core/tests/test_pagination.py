"""Every list endpoint answers a page `{count, next, previous, results}` (swarm/core/pagination.py)."""
import pytest

from drones.tests.conftest import register_drone

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/v1/tenants", "/api/v1/drones", "/api/v1/ping", "/api/v1/escalation",
                                  "/api/v1/jobs", "/api/v1/builds", "/api/v1/queues"])
def test_every_list_is_a_page(admin_api, path):
    body = admin_api.get(path).json()
    assert set(body) == {"count", "next", "previous", "results"}, path
    assert isinstance(body["results"], list) and body["count"] == len(body["results"])


def test_limit_and_offset_walk_the_list_in_order(read_api):
    names = sorted(register_drone(f"page-{n}")[0].name for n in range(5))

    first = read_api.get("/api/v1/drones?limit=2").json()
    assert first["count"] == 5 and [d["name"] for d in first["results"]] == names[:2]
    assert first["previous"] is None and "offset=2" in first["next"] and "limit=2" in first["next"]
    last = read_api.get("/api/v1/drones?limit=2&offset=4").json()
    assert [d["name"] for d in last["results"]] == names[4:] and last["next"] is None
    assert read_api.get("/api/v1/drones?offset=10").json()["results"] == []
    assert len(read_api.get("/api/v1/drones?limit=5000").json()["results"]) == 5, "capped, not refused"


@pytest.mark.parametrize("query, field", [("limit=abc", "limit"), ("limit=-1", "limit"), ("limit=0", "limit"),
                                          ("offset=x", "offset"), ("offset=-5", "offset")])
def test_a_malformed_limit_or_offset_is_a_400_naming_it(read_api, query, field):
    response = read_api.get(f"/api/v1/drones?{query}")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid" and response.json()["field"] == field
