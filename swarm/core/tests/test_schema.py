"""The OpenAPI schema renders and validates without warnings; /api/docs/ works offline."""
import re

import pytest
import yaml
from django.core.management import call_command
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db

REGISTRY_PATHS = {
    "/api/v1/bundles": {"post"},
    "/api/v1/bundles/{sha256}": {"get"},  # HEAD shares the path; spectacular never lists HEAD
    "/api/v1/tenants": {"get", "post"},
    "/api/v1/tenants/{slug}/workflows": {"get", "post"},
    "/api/v1/workflows/{workflow_id}": {"get"},
    "/api/v1/workflows/{workflow_id}/versions": {"get"},
    "/api/v1/workflows/{workflow_id}/active": {"get"},
    "/api/v1/workflows/{workflow_id}/versions/{version_id}/activate": {"post"},
    "/api/v1/workflows/{workflow_id}/rollback": {"post"},
}


def test_spectacular_validates_with_no_warnings(tmp_path):
    target = tmp_path / "schema.yml"
    # --fail-on-warn turns any warning or error spectacular emits into a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = yaml.safe_load(target.read_text())
    validate(schema)
    assert schema["openapi"].startswith("3.")


def test_every_operation_documents_the_error_shape_for_refused_callers(client):
    """Every view declares its errors with `error_responses(...)`, which always lists 401 and 403."""
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    error_ref = "#/components/schemas/Error"
    missing = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status in ("401", "403"):
                content = operation["responses"].get(status, {}).get("content", {})
                if content.get("application/json", {}).get("schema", {}).get("$ref") != error_ref:
                    missing.append(f"{method.upper()} {path} {status}")
    assert not missing, missing


def test_schema_endpoint_serves_a_valid_document(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    validate(schema)
    for path, methods in REGISTRY_PATHS.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), (path, set(schema["paths"][path]))
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerToken"] == {"type": "http", "scheme": "bearer",
                                      "description": schemes["bearerToken"]["description"]}


def test_schema_documents_errors_and_the_active_contract(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    active = schema["paths"]["/api/v1/workflows/{workflow_id}/active"]["get"]["responses"]
    assert {"200", "404"} <= set(active)
    ref = active["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][ref]["properties"]) == {
        "workflow_id", "version_id", "version", "bundle_url", "bundle_hash", "runtime", "entrypoint", "memory_mb",
        "timeout_sec", "deployed_at", "canary"}  # canary: the split, when one is active (issue 12)
    upload = schema["paths"]["/api/v1/bundles"]["post"]
    assert {"200", "201", "400", "401", "403", "404", "409", "413"} <= set(upload["responses"])
    assert "multipart/form-data" in upload["requestBody"]["content"]
    rollback = schema["paths"]["/api/v1/workflows/{workflow_id}/rollback"]["post"]["responses"]
    assert {"200", "404", "409"} <= set(rollback)


def test_api_docs_load_only_local_assets(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    urls += re.findall(r"""["'](https?://[^"']+)["']""", html)
    assert urls, html
    external = [url for url in urls if re.match(r"^(https?:)?//", url)]
    assert external == [], external
    assets = [url for url in urls if url.startswith("/static/")]
    assert any("swagger-ui" in url and url.endswith(".js") for url in assets), assets
    for url in assets:
        asset = client.get(url)
        assert asset.status_code == 200, url
        # WhiteNoise serves the file itself; read it so the response is closed.
        b"".join(asset.streaming_content) if asset.streaming else asset.content


def test_the_schema_says_null_where_null_is_answered(client):
    """An unassigned build answers `"drone": null`; a job made by an admin token may have no tenant."""
    components = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["components"]
    schemas = components["schemas"]
    for name, field in (("Build", "drone"), ("BuildDetail", "drone"), ("Attempt", "drone"), ("Job", "tenant")):
        assert schemas[name]["properties"][field].get("nullable") is True, (name, field)


def test_every_operation_documents_the_errors_of_the_layers_below_its_view(client):
    """400 from the strict input layer everywhere, 404 where the path has a parameter, 415 where a body is checked."""
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    missing = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            expected = {"400"} | ({"404"} if "{" in path else set())
            content = set(operation.get("requestBody", {}).get("content", {}))
            if method in ("post", "put", "patch", "delete") and (
                    not content or content <= {"application/json", "application/x-www-form-urlencoded",
                                               "multipart/form-data"}):
                if not (path.endswith("/commit") and method == "post"):  # an agent call that reads no body
                    expected.add("415")
            missing += [f"{method.upper()} {path} {status}" for status in sorted(expected - set(operation["responses"]))]
    assert not missing, missing
