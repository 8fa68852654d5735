"""Payload API routes (mounted under /api/v1/)."""
from django.urls import path
from rest_framework.routers import SimpleRouter

from drones.payloads.api import views

router = SimpleRouter(trailing_slash=False)
router.register("payload-types", views.PayloadTypeViewSet, basename="payload-type")
router.register("payload-versions", views.PayloadVersionViewSet, basename="payload-version")
router.register("releases", views.ReleaseViewSet, basename="release")
router.register("rollouts", views.RolloutViewSet, basename="rollout")
router.register("payload-drift", views.PayloadDriftViewSet, basename="payload-drift")

urlpatterns = [
    path("payloads/agent/report", views.PayloadAgentReportView.as_view(), name="payload-agent-report"),
    path("payloads/agent/pending", views.PayloadAgentPendingView.as_view(), name="payload-agent-pending"),
    *router.urls,
]
