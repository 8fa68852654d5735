"""The sentence `manage.py` prints when the database cannot be reached: which one, why, and how to start one."""
from __future__ import annotations


def database_unreachable(error: Exception, *, configured: bool) -> str:
    """Name the database, where its address came from, the driver's reason and the fix.

    `configured` says whether DATABASE_URL was in the environment before the
    settings read `var/swarm.env` (which `make run` fills while it runs).
    """
    from django.conf import settings
    from django.db import connection

    params = connection.settings_dict
    where = f"{params.get('HOST') or 'localhost'}:{params.get('PORT') or 5432}/{params.get('NAME')}"
    runtime_env = settings.RUNTIME_ENV_FILE
    from_runtime_env = not configured and _names_database(runtime_env)
    if configured:
        source = "DATABASE_URL"
        fix = "Check DATABASE_URL, or unset it and start the embedded services with `make run`."
    elif from_runtime_env:
        source = f"{runtime_env}, written by `make run`"
        fix = "Is `make run` still running? Start it again (`make run`) in another shell."
    else:
        source = "the default: DATABASE_URL is not set and `make run` is not running"
        fix = ("Start `make run` in another shell (it starts an embedded PostgreSQL and tells manage.py where "
               "it is), or set DATABASE_URL.")
    reason = " ".join(str(error).split()) or type(error).__name__
    return f"error: cannot reach the database at {where} ({source}): {reason}\n{fix}"


def _names_database(env_file) -> bool:
    try:
        return any(line.startswith("DATABASE_URL=") for line in env_file.read_text().splitlines())
    except OSError:
        return False
