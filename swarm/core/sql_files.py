"""Database functions kept as `.sql` files beside the code that calls them, loaded by migrations.

A PL/pgSQL function written out inside a migration is a second copy of the
rule the Python next to it states, and nothing tells a reader which one the
database runs. So each function's source is one file, `<app>/sql/<name>.sql`
holding `CREATE OR REPLACE FUNCTION <name>(…)`, read where the code that
calls it lives, and loaded by a migration:

    operations = [RunSQLFile("builds/sql/swarm_build_claim.sql", sha256="9f2c…")]

Changing a function means editing its file *and* adding a migration that
loads it again with the file's new sha256, so every installation gets the
change on its next `migrate`. `swarm/core/tests/test_sql_files.py` holds the
three halves together: every file's function is in the database exactly as
written (compared through `pg_get_functiondef`), the newest migration that
loads a file names its current sha256 (`python manage.py sql_file_hash
<path>` prints it), and every `swarm_*` function in the database has a file.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from django.db.migrations.operations.base import Operation

#: The repository root: `.sql` paths in migrations are relative to it.
REPOSITORY = Path(__file__).resolve().parents[2]
#: Where the project keeps its function files: `<app>/sql/*.sql` for these apps.
SQL_APPS = ("swarm/core", "tenancy", "bundles", "workflows", "drones", "builds", "deployments")

_FUNCTION_NAME = re.compile(r"CREATE\s+OR\s+REPLACE\s+FUNCTION\s+([a-z_][a-z0-9_]*)\s*\(", re.IGNORECASE)


@dataclass(frozen=True)
class SQLFile:
    """One function source: its repository-relative path, the function it creates, and its text."""

    path: str
    function: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def sql_file(path: str) -> SQLFile:
    """Read a function file by its repository-relative path; it must create exactly the function it is named for."""
    text = (REPOSITORY / path).read_text()
    names = _FUNCTION_NAME.findall(text)
    stem = Path(path).stem
    if names != [stem]:
        raise ValueError(f"{path} must hold one CREATE OR REPLACE FUNCTION {stem}(…), found {names or 'none'}")
    return SQLFile(path=path, function=stem, text=text)


def sql_files() -> list[SQLFile]:
    """Every function file of the project, by path."""
    found = []
    for app in SQL_APPS:
        for file in sorted((REPOSITORY / app / "sql").glob("*.sql")):
            found.append(sql_file(str(file.relative_to(REPOSITORY))))
    return found


class RunSQLFile(Operation):
    """A migration step that (re)creates a database function from its `.sql` file.

    `sha256` records which content of the file this migration was written
    for; it is not checked at apply time (a fresh database runs every
    migration with today's files, and the last one leaves them as they are),
    but the test suite fails when a file changed without a newer migration
    loading it, so no installation keeps an old function.
    """

    reduces_to_sql = True
    reversible = True

    def __init__(self, path: str, *, sha256: str, reverse_sql: str = ""):
        self.path = path
        self.sha256 = sha256
        self.reverse_sql = reverse_sql

    def deconstruct(self):
        kwargs = {"sha256": self.sha256}
        if self.reverse_sql:
            kwargs["reverse_sql"] = self.reverse_sql
        return self.__class__.__name__, [self.path], kwargs

    def state_forwards(self, app_label, state):
        """Functions are not part of Django's model state."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        # params=None: the file is sent as it is, without placeholder parsing (a `%` stays a `%`).
        schema_editor.execute(sql_file(self.path).text, params=None)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if self.reverse_sql:
            schema_editor.execute(self.reverse_sql, params=None)

    def describe(self) -> str:
        return f"Create the database function in {self.path}"

    @property
    def migration_name_fragment(self) -> str:
        return f"sql_{Path(self.path).stem}"
