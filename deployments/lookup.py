"""Where the analyzer reads catalog entries: a snapshot in the database, or documents in memory.

The analyzer only ever asks for entries by key, a level of the graph at a time, so a
scenario's analysis reads its own closure (a few queries, one per level) rather than the
whole catalog; both lookups remember what they have read, so the extra analyses behind swap
suggestions read nothing twice.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class EntryLookup(Protocol):
    """Documents of a catalog snapshot by key (`resource:postgres`)."""

    snapshot_sha256: str

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        """The documents of those `keys` that the snapshot has (valid or invalid); absent keys are left out."""


class MemoryLookup:
    """Entries held in memory: a parsed tree (`parse_tree`) or a test's hand-written documents."""

    def __init__(self, entries: dict[str, dict], *, snapshot_sha256: str = "memory"):
        self.entries = entries
        self.snapshot_sha256 = snapshot_sha256
        self.requested = 0

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        found = {}
        for key in keys:
            self.requested += 1
            if key in self.entries:
                found[key] = self.entries[key]
        return found


class SnapshotLookup:
    """Entries of a stored `CatalogSnapshot`, read on demand in batches and remembered."""

    def __init__(self, snapshot):
        self.snapshot = snapshot
        self.snapshot_sha256 = snapshot.sha256
        self._found: dict[str, dict] = {}
        self._absent: set[str] = set()
        self.queries = 0

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        from deployments.models import CatalogEntry

        keys = set(keys)
        unknown = keys - self._found.keys() - self._absent
        if unknown:
            self.queries += 1
            rows = CatalogEntry.objects.filter(snapshot_id=self.snapshot.pk, key__in=sorted(unknown))
            for key, document in rows.values_list("key", "document"):
                self._found[key] = document
            self._absent |= unknown - self._found.keys()
        return {key: self._found[key] for key in keys if key in self._found}
