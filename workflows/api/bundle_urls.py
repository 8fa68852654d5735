"""The bundle detail route with raw-body uploads (`PUT /api/v1/bundles/<sha256>`).

Mounted before `bundles.api.urls` in swarm/urls.py: the view extends the
bundle store's GET/HEAD view with a PUT that registers a workflow version,
which the bundles app cannot do itself (workflows depends on bundles, not the
reverse).
"""
from django.urls import path

from workflows.api import views

urlpatterns = [
    path("bundles/<str:sha256>", views.BundleView.as_view(), name="bundle-detail-upload"),
]
