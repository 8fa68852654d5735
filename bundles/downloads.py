"""Short-lived download URLs: S3 presigned, or a signed control-plane URL on local storage."""
from __future__ import annotations

import hashlib
import hmac
import time

from django.conf import settings
from django.urls import reverse

from bundles.blobstore import BlobStore
from bundles.models import Bundle


def _signature(sha256: str, expires: int) -> str:
    message = f"bundle-download:{sha256}:{expires}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


def bundle_download_url(bundle: Bundle, *, ttl: int | None = None) -> str:
    """A URL anyone holding it may GET the blob from, until it expires."""
    ttl = settings.SWARM_DOWNLOAD_URL_TTL if ttl is None else ttl
    store = BlobStore()
    if store.is_s3:
        return store.presigned_url(bundle.storage_key, expires_in=ttl)
    expires = int(time.time()) + ttl
    path = reverse("bundle-download", kwargs={"sha256": bundle.sha256})
    return f"{settings.SWARM_PUBLIC_URL}{path}?expires={expires}&signature={_signature(bundle.sha256, expires)}"


def download_signature_valid(sha256: str, expires: str, signature: str) -> bool:
    """Whether a signed local download URL is genuine and not expired."""
    try:
        expires_at = int(expires)
    except (TypeError, ValueError):
        return False
    if expires_at < time.time():
        return False
    return hmac.compare_digest(_signature(sha256, expires_at), signature or "")
