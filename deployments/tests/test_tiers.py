"""Tier names: the six tiers, Vrooli's numbered spellings, and a clear refusal of anything else."""
import pytest

from deployments.errors import UnknownTier
from deployments.tiers import TIER_BUDGETS, TIERS, accepted_tier_spellings, parse_tier, tier_or_none


def test_the_six_tiers():
    assert TIERS == ("local", "desktop", "mobile", "saas", "server", "enterprise")
    assert set(TIER_BUDGETS) == set(TIERS)


@pytest.mark.parametrize(("spelling", "tier"), [
    ("local", "local"), ("Desktop", "desktop"), (" mobile ", "mobile"),
    ("tier-1-local", "local"), ("tier-2-desktop", "desktop"), ("tier-3-mobile", "mobile"),
    ("tier-4-saas", "saas"), ("tier-5-enterprise", "enterprise"), ("tier-6-server", "server"),
    ("TIER-2-DESKTOP", "desktop"),
])
def test_accepted_spellings(spelling, tier):
    assert parse_tier(spelling) == tier


@pytest.mark.parametrize("spelling", ["tier-2-local", "cloud", "tier-7-moon", "", "tier-2", None, 3, "desk top"])
def test_unknown_tier_is_refused_naming_what_is_accepted(spelling):
    assert tier_or_none(spelling) is None
    with pytest.raises(UnknownTier) as refused:
        parse_tier(spelling, field="tier")
    assert refused.value.code == "unknown_tier"
    assert refused.value.field == "tier"
    assert "local, desktop, mobile, saas, server, enterprise" in refused.value.detail
    assert refused.value.extra["accepted"] == accepted_tier_spellings()
    assert "tier-2-desktop" in refused.value.extra["accepted"]
