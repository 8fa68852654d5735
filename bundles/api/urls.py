"""Bundle API routes (mounted under /api/v1/)."""
from django.urls import path

from bundles.api import views

urlpatterns = [
    path("bundles/<str:sha256>", views.BundleDetailView.as_view(), name="bundle-detail"),
    path("bundles/<str:sha256>/download", views.bundle_download, name="bundle-download"),
]
