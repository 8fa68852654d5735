"""`manage.py ensure_admin`: create the first admin user, printing its credentials once."""
import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser from SWARM_ADMIN_USER/SWARM_ADMIN_PASSWORD, or a generated one, if none exists."

    def handle(self, *args, **options):
        users = get_user_model()
        username = os.environ.get("SWARM_ADMIN_USER", "admin")
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("[swarm] admin user exists (credentials were printed when it was created)")
            return
        password = os.environ.get("SWARM_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email=os.environ.get("SWARM_ADMIN_EMAIL", ""),
                                       password=password)
        shown = password if not os.environ.get("SWARM_ADMIN_PASSWORD") else "(from SWARM_ADMIN_PASSWORD)"
        self.stdout.write(f"[swarm] created admin user  username: {username}  password: {shown}")
