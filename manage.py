#!/usr/bin/env python
"""Django's command-line utility for the Swarm control plane."""
import os
import sys


def main() -> None:
    """Run a management command with Swarm's settings; an unreachable database is one sentence, not a traceback."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swarm.settings")
    configured = "DATABASE_URL" in os.environ  # before the settings read var/swarm.env
    from django.core.management import execute_from_command_line
    from django.db.utils import OperationalError

    try:
        execute_from_command_line(sys.argv)
    except OperationalError as error:
        from swarm.core.database_hint import database_unreachable

        sys.stderr.write(database_unreachable(error, configured=configured) + "\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
