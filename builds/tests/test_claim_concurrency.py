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

    threads = [threading.Thread(target=claimer, args=(drone,)) for drone in drones]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
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
