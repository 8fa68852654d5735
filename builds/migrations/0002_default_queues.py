"""Ship two queues: `default` for everyday builds and a low-priority `test` queue."""
from django.db import migrations

QUEUES = [
    {"name": "default", "priority": 50, "description": "Everyday builds."},
    {"name": "test", "priority": 10, "description": "Low-priority test builds; claimed after every other queue."},
]


def create_queues(apps, schema_editor):
    Queue = apps.get_model("builds", "Queue")
    for queue in QUEUES:
        Queue.objects.get_or_create(name=queue["name"], defaults=queue)


def remove_queues(apps, schema_editor):
    Queue = apps.get_model("builds", "Queue")
    Queue.objects.filter(name__in=[q["name"] for q in QUEUES], jobs__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("builds", "0001_initial")]
    operations = [migrations.RunPython(create_queues, remove_queues)]
