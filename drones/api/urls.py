"""Drone API routes (mounted under /api/v1/)."""
from django.urls import path

from drones.api import views

urlpatterns = [
    path("drones", views.DroneListView.as_view(), name="drone-list"),
    path("drones/register", views.DroneRegisterView.as_view(), name="drone-register"),
    path("drones/heartbeat", views.DroneHeartbeatView.as_view(), name="drone-heartbeat"),
    path("drones/<str:name>", views.DroneDetailView.as_view(), name="drone-detail"),
    path("drones/<str:name>/ping", views.DronePingView.as_view(), name="drone-ping"),
    path("drones/<str:name>/reset-escalation", views.DroneResetEscalationView.as_view(),
         name="drone-reset-escalation"),
    path("drones/<str:name>/set-type", views.DroneSetTypeView.as_view(), name="drone-set-type"),
    path("drones/<str:name>/pause", views.DronePauseView.as_view(), name="drone-pause"),
    path("drones/<str:name>/resume", views.DroneResumeView.as_view(), name="drone-resume"),
    path("drones/<str:name>/drain", views.DroneDrainView.as_view(), name="drone-drain"),
    path("ping", views.PingStatusView.as_view(), name="ping-status"),
    path("ping/all", views.PingAllView.as_view(), name="ping-all"),
    path("escalation", views.EscalationListView.as_view(), name="escalation-list"),
    path("provision/bootstrap", views.BootstrapScriptView.as_view(), name="provision-bootstrap"),
    path("provision/agent.whl", views.AgentWheelView.as_view(), name="provision-agent-wheel"),
    path("provision/agent.tar.gz", views.AgentPackageView.as_view(), name="provision-agent-package"),
]
