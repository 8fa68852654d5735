"""The database functions are their `.sql` files (swarm/core/sql_files.py): files, migrations and database agree.

Three checks: every file's function is in the test database exactly as the
file writes it (both compared as `pg_get_functiondef` prints them, so
whitespace PostgreSQL keeps and the types it spells out count the same), the
newest migration that loads a file names the file's current sha256 (else an
installed database keeps the old function), and every `swarm_*` function in
the database has a file.
"""
from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader

from swarm.core.sql_files import RunSQLFile, sql_files

pytestmark = pytest.mark.django_db

FILES = sql_files()
SCRATCH_SCHEMA = "swarm_sql_file_check"


def _definitions(cursor, schema: str, function: str) -> list[str]:
    cursor.execute(
        "SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = %s ORDER BY p.oid", [schema, function])
    return [definition.replace(f"{schema}.", "", 1) for (definition,) in cursor.fetchall()]


def test_there_are_function_files():
    assert {file.function for file in FILES} >= {"swarm_agent_touch", "swarm_drone_leases_renew", "swarm_build_claim",
                                                 "swarm_drone_build_claim", "swarm_agent_build_claims",
                                                 "swarm_build_log_append", "swarm_agent_log_append"}


@pytest.mark.parametrize("file", FILES, ids=[file.path for file in FILES])
def test_the_database_holds_the_file_as_written(file):
    """The file, created afresh in a scratch schema, prints as the database's function does."""
    with connection.cursor() as cursor:
        [installed] = _definitions(cursor, "public", file.function)
        try:
            with transaction.atomic():
                cursor.execute(f"CREATE SCHEMA {SCRATCH_SCHEMA}")
                cursor.execute(f"SET LOCAL search_path = {SCRATCH_SCHEMA}, public")
                cursor.execute(file.text, None)
                [written] = _definitions(cursor, SCRATCH_SCHEMA, file.function)
                raise _RollBack
        except _RollBack:
            pass
    assert written == installed, f"{file.path} differs from the database's {file.function}: add a migration " \
                                 f"that loads it (python manage.py sql_file_hash {file.path})"


@pytest.mark.parametrize("file", FILES, ids=[file.path for file in FILES])
def test_the_newest_migration_loading_a_file_names_its_current_hash(file):
    loader = MigrationLoader(None, ignore_no_migrations=True)
    loads = []
    for key in loader.graph.leaf_nodes():
        for migration_key in loader.graph.forwards_plan(key):
            migration = loader.graph.nodes[migration_key]
            for operation in migration.operations:
                if isinstance(operation, RunSQLFile) and operation.path == file.path:
                    loads.append((migration_key, operation.sha256))
    assert loads, f"no migration loads {file.path}"
    ordered = list(dict.fromkeys(loads))
    newest_by_app = {}
    for (app, name), sha256 in ordered:
        newest_by_app[(app, file.path)] = (name, sha256)
    for (app, _), (name, sha256) in newest_by_app.items():
        assert sha256 == file.sha256, f"{app}.{name} loads {file.path} with an old sha256; add a migration " \
                                      f"(python manage.py sql_file_hash {file.path})"


def test_every_swarm_function_in_the_database_has_a_file():
    with connection.cursor() as cursor:
        cursor.execute("SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                       "WHERE n.nspname = 'public' AND p.proname LIKE 'swarm\\_%%'")
        in_database = {name for (name,) in cursor.fetchall()}
    assert in_database == {file.function for file in FILES}


class _RollBack(Exception):
    """Leaves the scratch schema's transaction, undoing it."""
