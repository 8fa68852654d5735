"""`manage.py ensure_admin`: create the first admin user, printing its credentials once."""
import json
import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser from SWARM_ADMIN_USER/SWARM_ADMIN_PASSWORD, or a generated one, if none exists."

    def add_arguments(self, parser):
        parser.add_argument("--json", dest="as_json", action="store_true",
                            help="Print {username, created, password, password_from_env} (for `make run`).")

    def handle(self, *args, as_json: bool = False, **options):
        users = get_user_model()
        username = os.environ.get("SWARM_ADMIN_USER", "admin")
        from_env = bool(os.environ.get("SWARM_ADMIN_PASSWORD"))
        existing = users.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            self._report(as_json, username=existing.get_username(), created=False, password=None, from_env=False)
            return
        password = os.environ.get("SWARM_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email=os.environ.get("SWARM_ADMIN_EMAIL", ""),
                                       password=password)
        self._report(as_json, username=username, created=True, password=None if from_env else password,
                     from_env=from_env)

    def _report(self, as_json: bool, *, username: str, created: bool, password: str | None, from_env: bool):
        if as_json:
            self.stdout.write(json.dumps({"username": username, "created": created, "password": password,
                                          "password_from_env": from_env}))
        elif not created:
            self.stdout.write(f"[swarm] admin user {username} exists; reset its password with "
                              f"`.venv/bin/python manage.py changepassword {username}`")
        else:
            shown = password or "(from SWARM_ADMIN_PASSWORD)"
            self.stdout.write(f"[swarm] created admin user  username: {username}  password: {shown}")

