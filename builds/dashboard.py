"""Reads for the operator's dashboard and the fleet topology: CI at a glance, builds running per drone."""
from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from builds.choices import ACTIVE_STATES, TERMINAL_STATES, BuildState
from builds.models import Build, BuildAttempt, Queue

#: Hours of finished builds the dashboard's chart shows.
CHART_HOURS = 24


def running_builds_by_drone(at: datetime | None = None) -> dict[int, int]:
    """{drone id: builds it holds} now, or at a past moment (attempts started before it and not yet finished)."""
    if at is None:
        rows = (Build.objects.filter(state__in=ACTIVE_STATES, drone__isnull=False)
                .values_list("drone_id").annotate(count=Count("id")))
    else:
        rows = (BuildAttempt.objects.filter(drone__isnull=False, assigned_at__lte=at)
                .filter(Q(finished_at__isnull=True) | Q(finished_at__gt=at))
                .values_list("drone_id").annotate(count=Count("id")))
    return dict(rows)


QUEUE_WAIT_SQL = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM assigned_at - queued_at)), count(*)
FROM builds_build WHERE assigned_at >= %s AND assigned_at >= queued_at
"""

PER_HOUR_SQL = """
SELECT date_trunc('hour', finished_at) AS hour, state, count(*) FROM builds_build
WHERE finished_at >= %s AND state = ANY(%s) GROUP BY 1, 2 ORDER BY 1
"""


def ci_dashboard(*, now: datetime | None = None) -> dict:
    """Builds per hour by outcome (last CHART_HOURS hours), queue depth per queue, p50 queue wait (last hour)."""
    now = now or timezone.now()
    since = now - timedelta(hours=CHART_HOURS)
    first_hour = since.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    hours = {first_hour + timedelta(hours=index): {state: 0 for state in TERMINAL_STATES}
             for index in range(CHART_HOURS)}
    with connection.cursor() as cursor:
        cursor.execute(PER_HOUR_SQL, [first_hour, list(TERMINAL_STATES)])
        for hour, state, count in cursor.fetchall():
            if hour in hours:
                hours[hour][state] = count
        cursor.execute(QUEUE_WAIT_SQL, [now - timedelta(hours=1)])
        p50_wait, assigned_last_hour = cursor.fetchone()
    peak_builds = max([sum(counts.values()) for counts in hours.values()] + [0])
    peak = max(peak_builds, 1)
    per_hour = [{"hour": hour, "counts": counts, "total": sum(counts.values()),
                 "heights": {state: round(60 * count / peak, 1) for state, count in counts.items()}}
                for hour, counts in sorted(hours.items())]
    depth = dict(Build.objects.filter(state=BuildState.PENDING).values_list("queue_id").annotate(n=Count("id")))
    queues = [{"name": name, "depth": depth.get(pk, 0)} for pk, name in Queue.objects.order_by("-priority", "name")
              .values_list("pk", "name")]
    states = dict(Build.objects.filter(state__in=ACTIVE_STATES).values_list("state").annotate(n=Count("id")))
    finished = {state: sum(hour["counts"][state] for hour in per_hour) for state in TERMINAL_STATES}
    return {"per_hour": per_hour, "peak": peak, "peak_builds": peak_builds, "queues": queues,
            "queued": sum(depth.values()),
            "running": sum(states.values()), "finished": finished,
            "p50_queue_wait": None if p50_wait is None else float(p50_wait),
            "assigned_last_hour": assigned_last_hour, "hours": CHART_HOURS}
