"""The drones admin in a real Chromium: health badge, latency, cards, join token bootstrap command."""
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from drones.models import Drone, EscalationEvent
from drones.services import join_token_issue
from drones.tests.conftest import register_drone

pytestmark = [pytest.mark.browser, pytest.mark.live]

def _login(page, live_url):
    get_user_model().objects.create_superuser("operator", "op@example.test", "correct horse battery")
    page.goto(f"{live_url}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.wait_for_selector("#content")


def test_drones_admin_shows_badges_latency_cards_and_history(live_url, browser_page):
    healthy, _ = register_drone("browser-ok", labels=["linux", "x86_64"])
    critical, _ = register_drone("browser-bad", drone_type="lxc")
    Drone.objects.filter(pk=healthy.pk).update(ping_latency_ms=3.5, last_heartbeat_at=timezone.now())
    Drone.objects.filter(pk=critical.pk).update(escalation_level=4, ping_latency_ms=None)
    EscalationEvent.objects.create(drone=critical, level=4, action="alert_admin", result="ok",
                                   detail="email to ops@example.test")
    _, plaintext = join_token_issue(name="browser-join")
    page = browser_page
    _login(page, live_url)

    cards = page.locator("#drones-fleet-cards")
    assert cards.locator("[data-card=healthy]").inner_text() == "1"
    assert cards.locator("[data-card=critical]").inner_text() == "1"
    assert cards.locator("[data-card=latency]").inner_text() == "3.5 ms"

    page.goto(f"{live_url}/admin/drones/drone/")
    ok_row = page.locator("tr", has_text="browser-ok")
    assert ok_row.locator(".drone-health-l0").inner_text() == "L0 healthy"
    assert "3.5 ms" in ok_row.inner_text()
    assert "x86_64" in ok_row.inner_text()
    bad_badge = page.locator("tr", has_text="browser-bad").locator(".drone-health-l4")
    assert bad_badge.inner_text() == "L4 critical"
    assert "rgb(207, 34, 46)" in bad_badge.evaluate("el => getComputedStyle(el).backgroundColor")

    # The pause action through the admin changes the drone.
    page.locator("tr", has_text="browser-ok").locator("input[type=checkbox]").check()
    page.select_option("select[name=action]", "pause")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist")
    assert Drone.objects.get(pk=healthy.pk).status == "paused"

    page.goto(f"{live_url}/admin/drones/drone/{critical.pk}/change/")
    assert "email to ops@example.test" in page.locator("#escalation_events-group").inner_text()

    token_id = __import__("drones.models", fromlist=["JoinToken"]).JoinToken.objects.get(name="browser-join").pk
    page.goto(f"{live_url}/admin/drones/jointoken/{token_id}/change/")
    command = page.locator(f"#bootstrap-command-{token_id}").input_value()
    assert command.startswith("curl -fsS ") and plaintext in command and command.endswith("| sh")
