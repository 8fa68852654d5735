"""Drone API routes (mounted under /api/v1/).

The fleet's resources are viewsets on the router (drones/api/viewsets.py).
The agent endpoints and the provisioning downloads are plain views, declared
first (`drones/register` and `drones/heartbeat` before `drones/<name>`).
"""
from django.urls import path
from rest_framework.routers import SimpleRouter

from drones.api import views, viewsets

router = SimpleRouter(trailing_slash=False)
router.register("drones", viewsets.DroneViewSet, basename="drone")
router.register("ping", viewsets.PingViewSet, basename="ping")
router.register("escalation", viewsets.EscalationViewSet, basename="escalation")

urlpatterns = [
    path("drones/register", views.DroneRegisterView.as_view(), name="drone-register"),
    path("drones/heartbeat", views.DroneHeartbeatView.as_view(), name="drone-heartbeat"),
    path("provision/bootstrap", views.BootstrapScriptView.as_view(), name="provision-bootstrap"),
    path("provision/agent.whl", views.AgentWheelView.as_view(), name="provision-agent-wheel"),
    path("provision/agent.tar.gz", views.AgentPackageView.as_view(), name="provision-agent-package"),
    *router.urls,
]
