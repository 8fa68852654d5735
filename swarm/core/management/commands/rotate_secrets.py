"""`manage.py rotate_secrets [--dry-run] [--batch-size N]`: re-encrypt every stored secret with the first key."""
from django.core.management.base import BaseCommand, CommandError

from swarm.core.services import secrets_rotate


class Command(BaseCommand):
    help = ("Re-encrypt every stored secret (every encrypted column: tenant secrets, job credentials, secret env "
            "vars and webhook secrets, hypervisor tokens, join tokens) with the first key in SWARM_SECRETS_KEYS. "
            "Keep the old key in the list until this has run without error, then remove it. Values no key "
            "decrypts are left unchanged and listed; the command then exits non-zero.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true",
                            help="count what would be re-encrypted and list undecryptable values; change nothing")
        parser.add_argument("--batch-size", type=int, default=500, help="rows locked and written per transaction")

    def handle(self, *args, dry_run=False, batch_size=500, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        report = secrets_rotate(dry_run=dry_run, batch_size=batch_size)
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        for column in report.columns:
            self.stdout.write(f"{column.label}: {verb} {column.reencrypted}, already current {column.current}, "
                              f"undecryptable {len(column.undecryptable)}")
        self.stdout.write(f"{verb} {report.reencrypted} secret(s) with the current key"
                          f"{' (dry run: nothing changed)' if dry_run else ''}")
        if report.undecryptable:
            for where in report.undecryptable:
                self.stderr.write(f"undecryptable, left unchanged: {where}")
            raise CommandError(
                f"{len(report.undecryptable)} stored secret(s) cannot be decrypted with any key and were left "
                "unchanged (listed above). Put the key they were written with back into SWARM_SECRETS_KEYS and "
                "run this again, or enter those secrets again.")
