"""`manage.py issue_join_token [--name N] [--expires-hours H] [--max-uses K] [--reuse]`: print a drone join token."""
from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from drones.services import join_token_issue, join_token_reuse


class Command(BaseCommand):
    help = ("Issue a drone join token and print only the token. "
            "--reuse prints the existing usable token of that name instead of issuing another (used by `make run`).")

    def add_arguments(self, parser):
        parser.add_argument("--name", default="join-token", help="a label shown in the admin")
        parser.add_argument("--expires-hours", type=float, help="expire after this many hours")
        parser.add_argument("--max-uses", type=int, help="allow this many registrations (default unlimited)")
        parser.add_argument("--reuse", action="store_true",
                            help="print the usable token of this name if there is one, else issue it (used by `make run`)")

    def handle(self, *args, name, expires_hours=None, max_uses=None, reuse=False, **options):
        if reuse:
            _, plaintext = join_token_reuse(name=name)
        else:
            expires_at = timezone.now() + timedelta(hours=expires_hours) if expires_hours else None
            _, plaintext = join_token_issue(name=name, expires_at=expires_at, max_uses=max_uses)
        self.stdout.write(plaintext)
