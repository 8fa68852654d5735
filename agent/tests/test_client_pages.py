"""swarmctl reads whole lists through their pages (swarm_agent.client.get_all)."""
import httpx
import pytest

from swarm_agent import client as api


def paged_server(items: list[int], seen: list[dict]):
    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        if request.url.path.endswith("/missing"):
            return httpx.Response(404, json={"error": "not_found", "detail": "No such tenant.", "field": None})
        limit, offset = int(params["limit"]), int(params["offset"])
        return httpx.Response(200, json={"count": len(items), "next": None, "previous": None,
                                         "results": items[offset:offset + limit]})

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://swarm.test/api/v1")


def test_every_page_is_read_in_order(monkeypatch):
    monkeypatch.setattr(api, "LIST_PAGE_LIMIT", 3)
    seen: list[dict] = []
    with paged_server(list(range(8)), seen) as client:
        assert api.get_all(client, "/drones", {"state": "x"}) == list(range(8))
    assert [(page["offset"], page["state"]) for page in seen] == [("0", "x"), ("3", "x"), ("6", "x")]


def test_an_empty_list_takes_one_request_and_errors_are_raised():
    seen: list[dict] = []
    with paged_server([], seen) as client:
        assert api.get_all(client, "/drones") == []
    assert len(seen) == 1
    with paged_server([1], []) as client, pytest.raises(api.ApiError) as raised:
        api.get_all(client, "/tenants/missing")
    assert (raised.value.status, raised.value.error) == (404, "not_found")
