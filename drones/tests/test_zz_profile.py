import cProfile, pstats, io, time
import pytest
from drones.payloads.engine import rollout_advance
from drones.payloads.models import RolloutTarget
from drones.tests.payload_support import agent_report, keep_alive, live_drones, push_payload

@pytest.mark.django_db(transaction=True)
def test_profile(admin_api, capsys):
    push_payload(admin_api)
    drones = live_drones(60)
    clients = {d.pk: c for d, c in drones}
    rid = admin_api.post("/api/v1/rollouts", {"payload_type": "toolchain", "version": "1.0.0", "target": {"all": True},
                                              "max_parallel": 10, "min_healthy_time": 0}, format="json").json()["id"]
    prof = cProfile.Profile()
    steps = 0
    t_adv = 0.0
    t_rep = 0.0
    rprof = cProfile.Profile()
    while True:
        keep_alive(*[d for d, _ in drones])
        s = time.process_time(); prof.enable(); step = rollout_advance(rollout_id=rid); prof.disable(); t_adv += time.process_time() - s
        steps += 1
        if step.state != "running":
            break
        for t in RolloutTarget.objects.filter(rollout_id=rid, state="pending", dispatched_at__isnull=False):
            s = time.process_time(); rprof.enable()
            agent_report(clients[t.drone_id], t.pk, "downloading", "installing", "verifying", "succeeded")
            rprof.disable(); t_rep += time.process_time() - s
    with capsys.disabled():
        print(f"\nsteps {steps}, advance total {t_adv*1000:.0f} ms ({t_adv/steps*1000:.1f} per step), reports {t_rep*1000:.0f} ms ({t_rep/60*1000:.1f} each)")
        out = io.StringIO(); pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25); print(out.getvalue()[:6000])
        out = io.StringIO(); pstats.Stats(rprof, stream=out).sort_stats("cumulative").print_stats(30); print(out.getvalue()[:6000])
