"""Executions survive a restart of the whole control plane: every web server, Celery worker and beat killed mid-run.

The execution belongs to its detached supervisor (and, for microvm, its VM),
never to a worker: while nothing of the control plane runs the boot keeps
its output and retries; once everything is started again (same port) the
execution finishes with the right status, every output line stored once,
in order.
"""
from __future__ import annotations

import time

import pytest

from conftest import CeleryWorker
from workflows.tests.conftest import events_of, publish, wait_finished, wait_for

pytestmark = pytest.mark.live
LINES = 40
COUNTER = f"""
import sys, time
for number in range({LINES}):
    print("line", number, flush=True)
    time.sleep(0.25)
sys.exit(0)
"""


@pytest.mark.parametrize("runtime", ["process", "microvm"])
def test_killing_every_control_plane_process_mid_execution_loses_nothing(
        runtime, request, live_system, live_server_process, celery_worker_process, subprocess_environment,
        admin_api, engine_token, tmp_path):
    from workflows.models import Execution
    from workflows.runtimes import get_runtime

    if runtime == "microvm":
        request.getfixturevalue("microvm_image")
    beat = CeleryWorker(dict(subprocess_environment, SWARM_PUBLIC_URL=live_system.url), tmp_path / "beat.log",
                        beat=True)
    workflow = publish(admin_api, {"main.py": COUNTER}, workflow=f"restart-{runtime}", memory_mb=128)
    try:
        with live_system.api(engine_token) as api:
            spawned = api.post(f"/workflows/{workflow.pk}/executions", json={"runtime": runtime}).json()
            wait_for(lambda: len([e for e in events_of(api, spawned["id"]) if e["type"] == "output"]) >= 3,
                     timeout=240, message="the entrypoint's first lines")
        for process in (live_server_process, celery_worker_process, beat):
            process.kill()
        execution = Execution.objects.get(pk=spawned["id"])
        time.sleep(3)  # output goes on while nothing of the control plane runs
        assert get_runtime(runtime).is_alive(execution) is True
        assert execution.status == "running"
        for process in (live_server_process, celery_worker_process, beat):
            process.restart()
        with live_system.api(engine_token) as api:
            finished = wait_finished(api, spawned["id"], timeout=120)
            events = wait_for(lambda: (lambda found: found if found[-1]["type"] == "runtime_exited" else None)(
                events_of(api, spawned["id"])), timeout=60, message="the supervisor's report")
    finally:
        beat.kill()
    assert finished["status"] == "succeeded" and finished["exit_code"] == 0, events
    assert [e["message"] for e in events if e["type"] == "output"] == [f"line {n}" for n in range(LINES)]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    stages = [e["type"] for e in events if e["type"] != "output"]
    assert stages.count("exited") == 1 and stages.count("started") == 1, stages
