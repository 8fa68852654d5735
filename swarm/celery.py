"""The Celery application; tasks are discovered in every installed app."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swarm.settings")

app = Celery("swarm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
