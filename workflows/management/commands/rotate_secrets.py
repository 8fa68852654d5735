"""`manage.py rotate_secrets`: re-encrypt every tenant secret with the first key of SWARM_SECRETS_KEYS."""
from django.core.management.base import BaseCommand, CommandError

from workflows.services.secrets import tenant_secrets_rotate


class Command(BaseCommand):
    help = ("Re-encrypt all tenant secrets with the first key in SWARM_SECRETS_KEYS. Keep the old key in the "
            "list until this has run, then remove it.")

    def handle(self, *args, **options):
        try:
            count = tenant_secrets_rotate()
        except ValueError as exc:
            raise CommandError(f"{exc}; nothing was changed") from exc
        self.stdout.write(f"re-encrypted {count} secret(s) with the current key")
