"""Enumerations of the deployment manager."""
from django.db import models


class Tier(models.TextChoices):
    """Where a scenario is deployed. Vrooli's numbered spellings are read by `deployments.tiers.parse_tier`."""

    LOCAL = "local", "Local (the full stack on one machine)"
    DESKTOP = "desktop", "Desktop app (Windows, macOS, Linux)"
    MOBILE = "mobile", "Mobile app (Android, iOS)"
    SAAS = "saas", "SaaS (hosted, multi-tenant)"
    SERVER = "server", "Server (self-hosted, one machine)"
    ENTERPRISE = "enterprise", "Enterprise (appliance, air-gapped)"


class EntryKind(models.TextChoices):
    """What a catalog entry is."""

    SCENARIO = "scenario", "scenario"
    RESOURCE = "resource", "resource"


class FetchState(models.TextChoices):
    """Where a git catalog import stands."""

    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"


class SecretClass(models.TextChoices):
    """How a secret reaches an installed bundle (docs/deployments.md#secrets-plan)."""

    INFRASTRUCTURE = "infrastructure", "infrastructure (never in a bundle)"
    PER_INSTALL_GENERATED = "per_install_generated", "generated on each install"
    USER_PROMPT = "user_prompt", "asked of the user at install"
    REMOTE_FETCH = "remote_fetch", "fetched from a secret store at install"


#: Secret classes a manifest may carry: everything but infrastructure.
BUNDLE_SAFE_SECRET_CLASSES = (
    SecretClass.PER_INSTALL_GENERATED, SecretClass.USER_PROMPT, SecretClass.REMOTE_FETCH,
)


class Platform(models.TextChoices):
    """Build targets of a bundle's binaries (`<os>-<arch>`, as Vrooli's bundle.json names them)."""

    LINUX_X64 = "linux-x64", "Linux x86-64"
    LINUX_ARM64 = "linux-arm64", "Linux ARM64"
    DARWIN_X64 = "darwin-x64", "macOS x86-64"
    DARWIN_ARM64 = "darwin-arm64", "macOS ARM64"
    WIN_X64 = "win-x64", "Windows x86-64"
    WIN_ARM64 = "win-arm64", "Windows ARM64"
    ANDROID_ARM64 = "android-arm64", "Android ARM64"
    IOS_ARM64 = "ios-arm64", "iOS ARM64"


class PackageState(models.TextChoices):
    """Where a package run (or one platform of it) stands."""

    QUEUED = "queued", "queued"
    PROCURING = "procuring", "procuring assets"
    BUILDING = "building", "building"
    STAGING = "staging", "staging and registering"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELED = "canceled", "canceled"


#: A run or platform in one of these states changes no more.
PACKAGE_FINISHED = frozenset({PackageState.SUCCEEDED, PackageState.FAILED, PackageState.CANCELED})


class RegisterAs(models.TextChoices):
    """What a package run registers each platform's tarball as."""

    WORKFLOW = "workflow", "a workflow version"
    PAYLOAD = "payload", "a drone payload version"
