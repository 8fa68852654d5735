"""Security headers on every response: nosniff, Referrer-Policy, a nonce CSP (admin, topology, terminal),
HSTS and secure cookies when served over HTTPS (SWARM_TLS); and, in a real Chromium, the console pages
run under that CSP without a single violation."""
from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from drones.tests.conftest import register_drone

pytestmark = pytest.mark.django_db

CSP_DIRECTIVES = {"default-src": "'self'", "object-src": "'none'", "frame-ancestors": "'none'",
                  "base-uri": "'self'", "form-action": "'self'"}


def _csp(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())


def _assert_common_headers(response) -> None:
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    csp = _csp(response)
    for directive, value in CSP_DIRECTIVES.items():
        assert csp[directive] == value, (directive, csp)
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"].split()


@pytest.fixture
def pages(admin_client_):
    from builds.services import build_trigger
    from builds.tests.factories import make_job

    drone, _ = register_drone("headers-1")
    build = build_trigger(job=make_job(name="headers"), trigger="api")
    return {
        "admin": "/admin/",
        "topology": reverse("admin:drones_drone_topology"),
        "terminal": reverse("admin:drones_drone_terminal", args=[drone.pk]),
        "build (an inline script)": reverse("admin:builds_build_change", args=[build.pk]),
    }


def test_api_response_carries_the_headers(admin_api):
    response = admin_api.get("/api/v1/tenants")
    assert response.status_code == 200
    _assert_common_headers(response)
    assert "Strict-Transport-Security" not in response  # plain HTTP: no HSTS


def test_admin_topology_and_terminal_pages_carry_the_headers_and_nonce_their_inline_scripts(admin_client_, pages):
    for name, path in pages.items():
        response = admin_client_.get(path)
        assert response.status_code == 200, (name, response.status_code)
        _assert_common_headers(response)
        nonce = re.search(r"'nonce-([^']+)'", _csp(response)["script-src"])
        inline = [tag for tag in re.findall(r"<script\b[^>]*>", response.content.decode())
                  if "src=" not in tag and 'type="application/json"' not in tag]
        for tag in inline:
            assert nonce and f'nonce="{nonce.group(1)}"' in tag, (name, tag)
        if name.startswith("build"):
            assert inline, "the build page's log tail is an inline script"


def test_every_inline_script_in_the_templates_has_the_nonce():
    from pathlib import Path

    from django.conf import settings

    root = Path(settings.BASE_DIR)
    templates = [*root.glob("templates/**/*.html"), *root.glob("*/templates/**/*.html")]
    assert len(templates) > 10
    offenders = [f"{template.relative_to(root)}: {tag}" for template in templates
                 for tag in re.findall(r"<script\b[^>]*>", template.read_text())
                 if "src=" not in tag and "request.csp_nonce" not in tag]
    assert not offenders, "inline scripts without nonce=\"{{ request.csp_nonce }}\": " + "; ".join(offenders)


def test_over_https_with_swarm_tls_hsts_and_secure_cookies(settings, operator):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    client = Client()
    page = client.get("/admin/login/", secure=True)
    assert page["Strict-Transport-Security"] == "max-age=31536000"
    assert page.cookies["csrftoken"]["secure"]
    token = page.cookies["csrftoken"].value
    logged_in = client.post("/admin/login/?next=/admin/", {"username": "operator", "password": "operator-pass-1",
                                                           "csrfmiddlewaretoken": token}, secure=True)
    assert logged_in.status_code == 302
    session = logged_in.cookies["sessionid"]
    assert session["secure"] and session["httponly"]
    # Over plain HTTP no HSTS is sent (browsers ignore it there anyway).
    assert "Strict-Transport-Security" not in client.get("/admin/login/")


def test_tls_settings_follow_swarm_tls():
    """SWARM_TLS=1 turns on HSTS and secure cookies; SWARM_TRUST_X_FORWARDED_PROTO trusts the proxy's header."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    script = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='swarm.settings'; django.setup();"
              "from django.conf import settings as s;"
              "print(s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
              " getattr(s, 'SECURE_PROXY_SSL_HEADER', None))")

    def settings_with(extra: dict) -> str:
        env = {key: value for key, value in os.environ.items()
               if key not in ("SWARM_TLS", "SWARM_TRUST_X_FORWARDED_PROTO")}
        env.update(extra)
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              cwd=settings.BASE_DIR, check=True).stdout.strip().splitlines()[-1]

    assert settings_with({"SWARM_TLS": "1", "SWARM_TRUST_X_FORWARDED_PROTO": "1"}) == \
        "31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https')"
    assert settings_with({}) == "0 False False None"


@pytest.mark.browser
@pytest.mark.live
def test_console_pages_run_under_the_csp_without_violations(live_url, browser_page, django_user_model):
    from drones.tests.test_admin_browser import _login

    register_drone("csp-1")
    page = browser_page
    violations = []
    page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                         "(window.__cspViolations = window.__cspViolations || []).push("
                         "e.violatedDirective + ' ' + e.blockedURI));")
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    _login(page, live_url)
    page.goto(f"{live_url}/admin/drones/drone/topology/")
    page.wait_for_function("() => window.swarmTopology && swarmTopology.nodeColour('csp-1') !== undefined")
    assert page.evaluate("window.__cspViolations || []") == []
    page.goto(f"{live_url}/admin/")
    assert page.evaluate("window.__cspViolations || []") == []
    page.goto(f"{live_url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info", timeout=20_000)
    assert page.evaluate("window.__cspViolations || []") == []
    assert violations == []


@pytest.mark.django_db(transaction=True)
def test_event_loop_answers_carry_the_same_headers_and_hsts_when_secure(settings):
    """A fast-path answer (swarm/core/fast_routes.py) has the headers Django's middleware gives its views."""
    from conftest import fast_route_call
    from swarm.core.fast_routes import FastRoutes
    from swarm.urls import FAST_ROUTES

    _, token = register_drone("headers-fast")
    settings.SWARM_FAST_PATH_HEADER = True
    routes = FastRoutes(FAST_ROUTES, fallback=None)

    def heartbeat(**headers):
        return fast_route_call(routes, "POST", "/api/v1/drones/heartbeat", token=token, body=b'{"metrics": {}}',
                               headers=headers)

    answer = heartbeat()
    assert answer["status"] == 200 and answer["headers"]["swarm-answered-by"] == "event-loop"
    view = Client().post("/api/v1/drones/heartbeat", {"metrics": {}}, content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {token}")
    for name in ("X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options", "Cross-Origin-Opener-Policy",
                 "Content-Security-Policy"):
        assert answer["headers"][name.lower()] == view[name], name
    _assert_common_headers({name.title(): value for name, value in answer["headers"].items()})
    assert "strict-transport-security" not in answer["headers"]  # plain HTTP: no HSTS

    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    secure = heartbeat(**{"X-Forwarded-Proto": "https"})
    assert secure["headers"]["strict-transport-security"] == "max-age=31536000" and not secure["django"]
    assert "strict-transport-security" not in heartbeat()["headers"]
    settings.SECURE_SSL_REDIRECT = True
    assert heartbeat()["django"], "plain HTTP under SECURE_SSL_REDIRECT is Django's (it redirects)"
