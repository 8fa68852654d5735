"""The admin follows a build live in a real Chromium: its page (log, state, fields, attempts, buttons), the
builds list and the dashboard, all without a reload; and no table runs off the page."""
import re

import pytest

from builds.tests.factories import make_git_repo, make_job
from drones.tests.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.live]

def admin_login(page, base_url):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("ops", "ops@example.com", "correct-horse-battery")
    page.goto(f"{base_url}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}/admin/")


def test_build_page_tails_the_log_live_and_links_artifacts(builds_live_url, build_agent, tmp_path, browser_page):
    make_git_repo(tmp_path / "repo", {"README": "x\n"})
    job = make_job(name="browser-job", scm_url=f"file://{tmp_path / 'repo'}",
                   steps=["for i in 1 2 3 4 5; do echo tail-line-$i; sleep 0.4; done",
                          "mkdir -p out && echo report > out/report.txt"],
                   artifacts=["out/report.txt"])
    page = browser_page
    admin_login(page, builds_live_url)
    # Trigger from the admin, like an operator: select the job, run the "trigger" action.
    page.goto(f"{builds_live_url}/admin/builds/job/")
    page.check(f"input[name=_selected_action][value='{job.pk}']")
    page.select_option("select[name=action]", "trigger_builds")
    page.click("button[name=index]")
    page.click("text=browser-job #1")
    page.wait_for_selector("#build-log-connection:text('live')")
    assert page.text_content("#build-state") == "pending"
    assert page.query_selector("#build-cancel") is not None and page.query_selector("#build-retry") is None
    # The builds list and the dashboard, open in other tabs, are never reloaded either.
    builds_list = page.context.new_page()
    builds_list.goto(f"{builds_live_url}/admin/builds/build/")
    builds_list.wait_for_selector("#swarm-live-status:text('live')")
    dashboard = page.context.new_page()
    dashboard.goto(f"{builds_live_url}/admin/")
    dashboard.wait_for_selector("#swarm-live-status:text('live')")
    assert dashboard.text_content("[data-ci=queued]") == "1" and dashboard.text_content("[data-ci=success]") == "0"
    # Only now does a drone appear: everything after this arrives over the open WebSockets.
    build_agent("browser-drone")
    page.wait_for_function("() => document.querySelector('#build-log').textContent.includes('tail-line-1')",
                           timeout=30_000)
    page.wait_for_function("() => document.querySelector('#build-log').textContent.includes('tail-line-5')",
                           timeout=30_000)
    page.wait_for_function("() => document.querySelector('#build-state').textContent === 'success'", timeout=30_000)
    text = page.text_content("#build-log")
    assert text.index("tail-line-1") < text.index("tail-line-5")
    assert text.count("tail-line-3") == 1, "no byte doubled on the live tail"
    # The whole page follows the build to its end: no Cancel button, the final state in the fields, a finish
    # time (with seconds), the attempt closed — with the log still on the page, so nothing was reloaded.
    page.wait_for_selector("#build-retry", timeout=15_000)
    assert page.query_selector("#build-cancel") is None
    assert page.text_content(".field-state_cell .readonly").strip() == "success"
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", page.text_content(".field-finished .readonly"))
    assert "success" in page.text_content("#attempts-group") and "not yet" not in page.text_content("#attempts-group")
    assert "tail-line-5" in page.text_content("#build-log")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "the page is wider than the window"
    builds_list.wait_for_function(
        "() => [...document.querySelectorAll('#result_list tr')].some(r => r.innerText.includes('browser-job #1') && "
        "r.querySelector('.swarm-status').textContent === 'success')", timeout=15_000)
    assert builds_list.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    dashboard.wait_for_function("() => document.querySelector('[data-ci=success]').textContent === '1'", timeout=15_000)
    assert dashboard.text_content("[data-ci=queued]") == "0"
    assert dashboard.evaluate("SwarmLive.refreshes") >= 1 and builds_list.evaluate("SwarmLive.refreshes") >= 1
    page.reload()
    wait_until(lambda: "report.txt" in (page.text_content("#build-artifacts") or ""), timeout=10,
               message="the artifact row")
    with page.expect_download() as download_info:
        page.click("#build-artifacts a")
    assert open(download_info.value.path(), "rb").read() == b"report\n"
    assert page.query_selector("#build-retry") is not None and page.query_selector("#build-cancel") is None
