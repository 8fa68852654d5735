"""Bundles are blobs identified by the sha256 of their bytes."""
from django.db import models

from bundles.keys import blob_key
from tenancy.scope import TenantScopedQuerySet


class BundleQuerySet(TenantScopedQuerySet):
    """The tenant scope, and the orphan sweep's question: which bundles does nothing use?"""

    def unreferenced(self):
        """Bundles no row points at: no workflow version, no payload version, nothing else.

        Every reverse relation is checked, so an app that stores its content
        as bundles (drones' payload versions) is safe from the orphan sweep
        without this app importing it (bundles ← workflows, bundles ← drones).
        """
        filters = {f"{relation.related_name or relation.name}__isnull": True
                   for relation in self.model._meta.related_objects}
        return self.filter(**filters)


class Bundle(models.Model):
    """A stored `.tar.gz`, shared by every version that uses the same bytes.

    A tenant sees a bundle when one of its workflow versions uses it (the path
    is multi-valued: one bundle, possibly several tenants).
    """

    sha256 = models.CharField(max_length=64, unique=True)
    size = models.BigIntegerField()
    member_count = models.IntegerField(default=0)
    unpacked_size = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "versions__workflow__tenant"
    objects = BundleQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"sha256:{self.sha256[:12]}… ({self.size} bytes)"

    @property
    def storage_key(self) -> str:
        """Where the blob lives in blob storage."""
        return blob_key(self.sha256)


class PendingBlob(models.Model):
    """A blob write in flight. The orphan sweep never touches these keys.

    Written (and committed) before the first byte goes to storage, deleted
    after the bundle row commits; one left behind by a crash goes stale and
    then stops protecting its key.
    """

    key = models.CharField(max_length=300, db_index=True)
    started_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key
