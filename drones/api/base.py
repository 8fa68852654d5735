"""Base view of every agent-facing endpoint: drone-token auth, `self.drone`, last-seen renewal."""
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from drones.models import Drone
from drones.selectors import drone_for_principal, drone_id_for_principal
from swarm.core.api import ScopedAPIView
from swarm.core.choices import TokenScope

# Renewing last_seen_at on every call would turn every agent read into a
# write; a few seconds of precision is plenty for "when did it last talk?".
LAST_SEEN_PRECISION = timedelta(seconds=5)


class DroneAgentAPIView(ScopedAPIView):
    """An endpoint only a drone token may call, acting as its own drone.

    `self.drone_id` costs no query; `self.drone` loads the row once. Every
    call renews the drone's `last_seen_at` (throttled).
    """

    read_scopes = frozenset({TokenScope.DRONE})
    write_scopes = frozenset({TokenScope.DRONE})
    renews_last_seen = True

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.drone_id = drone_id_for_principal(self.principal)
        if self.renews_last_seen:
            now = timezone.now()
            Drone.objects.filter(pk=self.drone_id).filter(
                Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=now - LAST_SEEN_PRECISION)
            ).update(last_seen_at=now)

    @property
    def drone(self) -> Drone:
        if not hasattr(self, "_drone"):
            self._drone = drone_for_principal(self.principal)
        return self._drone
