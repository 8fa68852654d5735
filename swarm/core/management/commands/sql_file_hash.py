"""`manage.py sql_file_hash <path>…`: the sha256 a migration's RunSQLFile names for a function file."""
from django.core.management.base import BaseCommand, CommandError

from swarm.core.sql_files import sql_file


class Command(BaseCommand):
    help = "Print RunSQLFile(...) lines, with their current sha256, for database function files (see swarm/core/sql_files.py)."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="repository-relative paths, e.g. builds/sql/swarm_build_claim.sql")

    def handle(self, *args, **options):
        for path in options["paths"]:
            try:
                file = sql_file(path)
            except (OSError, ValueError) as error:
                raise CommandError(str(error)) from error
            self.stdout.write(f'RunSQLFile("{file.path}", sha256="{file.sha256}"),')
