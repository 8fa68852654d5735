"""Deployment tiers: their names and spellings, their resource budgets, their default platforms.

Six tiers: `local, desktop, mobile, saas, server, enterprise`. Vrooli numbers five of them
(`tier-1-local`, `tier-2-desktop`, `tier-3-mobile`, `tier-4-saas`, `tier-5-enterprise`, as its
service.json schema and deployment docs write them); `server` has no Vrooli number and is spelled
`tier-6-server` here. A numbered spelling must carry its tier's number, so a typo such as
`tier-2-local` is refused instead of silently meaning one of two tiers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from deployments.choices import Platform, Tier
from deployments.errors import UnknownTier

TIERS: tuple[str, ...] = tuple(Tier.values)

#: The number of each tier in its `tier-<n>-<name>` spelling.
TIER_NUMBERS = {"local": 1, "desktop": 2, "mobile": 3, "saas": 4, "enterprise": 5, "server": 6}

_NUMBERED = re.compile(r"tier-(\d+)-([a-z]+)")


def tier_spellings(tier: str) -> tuple[str, str]:
    """The two accepted spellings of a tier: its name and `tier-<n>-<name>`."""
    return tier, f"tier-{TIER_NUMBERS[tier]}-{tier}"


def accepted_tier_spellings() -> list[str]:
    """Every spelling `parse_tier` accepts, for error messages and docs."""
    return [spelling for tier in TIERS for spelling in tier_spellings(tier)]


def tier_or_none(value) -> str | None:
    """The canonical tier for a spelling (`desktop`, `Desktop`, `tier-2-desktop`), or None when it is none."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in TIER_NUMBERS:
        return text
    match = _NUMBERED.fullmatch(text)
    if match and match.group(2) in TIER_NUMBERS and int(match.group(1)) == TIER_NUMBERS[match.group(2)]:
        return match.group(2)
    return None


def parse_tier(value, *, field: str = "tier") -> str:
    """The canonical tier for a spelling; `UnknownTier` (naming what is accepted) otherwise."""
    tier = tier_or_none(value)
    if tier is None:
        raise UnknownTier(
            f"{value!r} is not a deployment tier; use one of {', '.join(TIERS)} "
            f"(or {', '.join(tier_spellings(t)[1] for t in TIERS)}).",
            field=field, extra={"accepted": accepted_tier_spellings()},
        )
    return tier


@dataclass(frozen=True)
class TierBudget:
    """What one installation of a tier can be expected to give a bundle.

    `gpu` is `yes` (there is one), `maybe` (some installs have one: a GPU-only dependency
    scores at most 0.5) or `no`.
    """

    ram_mb: int
    disk_mb: int
    cpu_cores: float
    gpu: str
    #: The score of a dependency about which nothing (catalog, defaults) says anything for this
    #: tier: a full stack runs nearly anything; a desktop or phone bundle is a claim to verify.
    unknown_score: float


TIER_BUDGETS: dict[str, TierBudget] = {
    "local": TierBudget(ram_mb=32_768, disk_mb=512_000, cpu_cores=16, gpu="maybe", unknown_score=0.9),
    "desktop": TierBudget(ram_mb=8_192, disk_mb=20_480, cpu_cores=4, gpu="maybe", unknown_score=0.6),
    "mobile": TierBudget(ram_mb=2_048, disk_mb=2_048, cpu_cores=2, gpu="no", unknown_score=0.4),
    "saas": TierBudget(ram_mb=65_536, disk_mb=1_048_576, cpu_cores=32, gpu="maybe", unknown_score=0.8),
    "server": TierBudget(ram_mb=65_536, disk_mb=1_048_576, cpu_cores=32, gpu="maybe", unknown_score=0.8),
    "enterprise": TierBudget(ram_mb=262_144, disk_mb=4_194_304, cpu_cores=128, gpu="yes", unknown_score=0.8),
}

#: Platforms a profile builds for when its settings name none.
DEFAULT_PLATFORMS: dict[str, tuple[str, ...]] = {
    "local": (Platform.LINUX_X64,),
    "desktop": (Platform.LINUX_X64, Platform.DARWIN_ARM64, Platform.WIN_X64),
    "mobile": (Platform.ANDROID_ARM64, Platform.IOS_ARM64),
    "saas": (Platform.LINUX_X64, Platform.LINUX_ARM64),
    "server": (Platform.LINUX_X64, Platform.LINUX_ARM64),
    "enterprise": (Platform.LINUX_X64,),
}
