"""Swarm control plane project package: settings, URLs, ASGI and Celery apps."""
from swarm.celery import app as celery_app

__all__ = ("celery_app",)
