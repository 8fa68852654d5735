"""The Celery application; tasks are discovered in every installed app."""
import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swarm.settings")

app = Celery("swarm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _one_event_loop_per_worker_process(**kwargs) -> None:
    """Channel-layer sends from tasks (deploy commands, live notices) share one loop and its connections."""
    from swarm.core import event_loop

    event_loop.use_background_loop()
