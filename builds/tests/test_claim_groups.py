"""Claims on the event loop go to the database in groups (builds/claim_groups.py)."""
import asyncio
import json

import pytest
from prometheus_client import REGISTRY

from builds import claim_groups, services
from builds.models import Build, BuildAttempt, BuildEvent, Queue
from builds.services import build_trigger
from builds.tests.factories import make_drone, make_job
from conftest import fast_route_call
from swarm.core import async_db
from swarm.core.fast_routes import FastRoutes
from swarm.urls import FAST_ROUTES

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def group_sizes(monkeypatch, settings):
    """One group in flight at a time; records the size of every group sent."""
    settings.SWARM_CLAIM_GROUPS = 1
    sizes = []
    send = claim_groups.ClaimGroups._send

    async def recording_send(self, group):
        sizes.append(len(group))
        await send(self, group)

    monkeypatch.setattr(claim_groups.ClaimGroups, "_send", recording_send)
    return sizes


def claim_together(tokens: list[str]) -> list:
    """The outcome (or the exception) of a claim for each token, all sent on one event loop at once."""
    async def run():
        try:
            return await asyncio.gather(*(services.build_claim_async(token=token, free_slots=1, labels=None)
                                          for token in tokens), return_exceptions=True)
        finally:
            await async_db.close_pools()

    return asyncio.run(run())


def test_claims_that_arrive_together_go_as_one_group_and_get_different_builds(group_sizes):
    job = make_job()
    builds = [build_trigger(job=job, trigger="api") for _ in range(6)]
    clients = [make_drone()[1] for _ in range(5)]
    before = REGISTRY.get_sample_value("swarm_build_claim_group_size_bucket", {"le": "8.0"}) or 0

    outcomes = claim_together([client.token for client in clients])

    assert group_sizes == [5], "one database call for the five claims"
    assert REGISTRY.get_sample_value("swarm_build_claim_group_size_bucket", {"le": "8.0"}) == before + 1
    claimed = [outcome.result.claimed for outcome in outcomes]
    assert sorted(row.build["id"] for row in claimed) == sorted(build.pk for build in builds[:5])
    for client, row in zip(clients, claimed, strict=True):
        build = Build.objects.get(pk=row.build["id"])
        assert build.state == "assigned" and build.drone_id == client.drone.pk and build.attempt_count == 1
        assert BuildAttempt.objects.get(pk=row.attempt_id).drone_id == client.drone.pk
        assert BuildEvent.objects.filter(build=build, kind="claimed", actor=f"drone:{client.drone.pk}").exists()
    assert Build.objects.get(pk=builds[5].pk).state == "pending"


def test_one_drone_twice_in_a_group_keeps_to_its_capacity(group_sizes):
    job = make_job()
    for _ in range(3):
        build_trigger(job=job, trigger="api")
    _, client = make_drone(capacity=1)

    outcomes = claim_together([client.token, client.token])

    assert group_sizes == [2]
    assert sorted(outcome.result is not None for outcome in outcomes) == [False, True]
    assert Build.objects.filter(state="assigned", drone=client.drone).count() == 1


def test_an_unknown_token_in_a_group_is_left_to_the_view_and_the_others_are_claimed(group_sizes):
    job = make_job()
    for _ in range(2):
        build_trigger(job=job, trigger="api")
    _, first = make_drone()
    _, second = make_drone()
    unknown = first.token[:-4] + ("aaaa" if not first.token.endswith("aaaa") else "bbbb")

    outcomes = claim_together([first.token, unknown, second.token])

    assert group_sizes == [3]
    assert outcomes[1] is None, "the view answers (401) for a token the database does not know"
    assert outcomes[0].result and outcomes[2].result
    assert Build.objects.filter(state="assigned").count() == 2


def test_a_queue_with_limits_leaves_the_whole_group_to_the_view(group_sizes):
    Queue.objects.filter(name="default").update(max_concurrent=5)
    job = make_job()
    build_trigger(job=job, trigger="api")
    clients = [make_drone()[1] for _ in range(2)]

    assert claim_together([client.token for client in clients]) == [None, None]
    assert Build.objects.filter(state="pending").count() == 1


def test_a_group_that_fails_claims_nothing_and_every_request_goes_to_the_view(group_sizes, monkeypatch):
    job = make_job()
    for _ in range(2):
        build_trigger(job=job, trigger="api")
    clients = [make_drone()[1] for _ in range(2)]
    # The function runs and claims, then the statement fails: the whole group rolls back.
    monkeypatch.setattr(claim_groups, "AGENT_CLAIMS_SQL", claim_groups.AGENT_CLAIMS_SQL + " WHERE 1 / 0 = 1")

    outcomes = claim_together([client.token for client in clients])

    assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
    assert Build.objects.filter(state="pending").count() == 2 and not BuildAttempt.objects.exists()

    routes = FastRoutes(FAST_ROUTES, fallback=None)
    answer = fast_route_call(routes, "POST", "/api/v1/builds/request", token=clients[0].token,
                             body=json.dumps({"free_slots": 1}).encode())
    assert answer["django"], "the view answers a request whose group failed"


def test_a_lone_claim_is_sent_at_once(group_sizes):
    build_trigger(job=make_job(), trigger="api")
    _, client = make_drone()

    (outcome,) = claim_together([client.token])

    assert group_sizes == [1] and outcome.result is not None
