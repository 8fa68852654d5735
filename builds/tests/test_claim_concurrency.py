"""50 concurrent claimers (threads, each with its own database connection) → no build is assigned twice."""
import threading
from collections import Counter

import pytest
from django.db import connection

from builds.choices import BuildState
from builds.models import Build, BuildAttempt
from builds.services import build_claim, build_trigger
from builds.tests.factories import make_drone, make_job

pytestmark = pytest.mark.django_db(transaction=True)


def run_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def test_fifty_concurrent_claimers_never_share_a_build():
    job = make_job()
    builds = [build_trigger(job=job, trigger="api") for _ in range(120)]
    drones = [make_drone(f"claimer-{i}", capacity=3)[0] for i in range(50)]
    claims: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(drones))

    def claimer(drone):
        try:
            start.wait()
            while True:
                result = build_claim(drone=drone, free_slots=1)
                if result is None:
                    break
                with lock:
                    claims.append((result.build.pk, drone.pk))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    run_all([threading.Thread(target=claimer, args=(drone,)) for drone in drones])
    assert not errors, errors
    counts = Counter(build_id for build_id, _ in claims)
    assert counts and max(counts.values()) == 1, "a build was handed to two drones"
    assert len(claims) == len(builds), "every build was claimed (50 drones x 3 slots > 120 builds)"
    assert Build.objects.filter(state=BuildState.ASSIGNED).count() == len(builds)
    assert BuildAttempt.objects.count() == len(builds)
    per_drone = Counter(drone_id for _, drone_id in claims)
    assert max(per_drone.values()) <= 3, "capacity held under concurrency"
    for build_id, drone_id in claims:
        assert Build.objects.get(pk=build_id).drone_id == drone_id


def test_claims_through_the_view_and_the_event_loop_at_once_keep_each_drone_to_its_capacity():
    """The same drones claim through both paths at once: they share the drone's claim lock."""
    import asyncio

    from builds.services import build_claim_async
    from swarm.core import async_db

    job = make_job()
    builds = [build_trigger(job=job, trigger="api") for _ in range(90)]
    drones = [make_drone(f"both-{i}", capacity=2) for i in range(30)]
    claims: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def through_the_view():
        try:
            start.wait()
            for _ in range(3):
                for drone, _client in drones:
                    result = build_claim(drone=drone, free_slots=1)
                    if result is not None:
                        with lock:
                            claims.append((result.claimed.build["id"], drone.pk))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    def on_the_event_loop():
        async def run():
            try:
                for _ in range(3):
                    outcomes = await asyncio.gather(*(build_claim_async(token=client.token, free_slots=1, labels=None)
                                                      for _drone, client in drones))
                    with lock:
                        claims.extend((outcome.result.claimed.build["id"], drone.pk)
                                      for outcome, (drone, _client) in zip(outcomes, drones, strict=True)
                                      if outcome is not None and outcome.result is not None)
            finally:
                await async_db.close_pools()

        try:
            start.wait()
            asyncio.run(run())
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    run_all([threading.Thread(target=through_the_view), threading.Thread(target=on_the_event_loop)])
    assert not errors, errors
    counts = Counter(build_id for build_id, _ in claims)
    assert max(counts.values()) == 1, "a build was handed out twice"
    assert len(claims) == 60, "30 drones x 2 slots"
    per_drone = Counter(drone_id for _, drone_id in claims)
    assert set(per_drone.values()) == {2}, "each drone holds exactly its capacity"
    assert Build.objects.filter(state=BuildState.ASSIGNED).count() == 60
    assert Build.objects.filter(state=BuildState.PENDING).count() == len(builds) - 60
