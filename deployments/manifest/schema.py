"""The bundle-manifest schema (the JSON file beside this module), validation with JSON pointers, canonical JSON.

`validate_manifest` answers every violation, never only the first: JSON Schema (Draft 2020-12,
via `jsonschema`) for the shape, then what a schema cannot say — service ids unique, every
service dependency and every secret a service names exists, no binary path used twice.

`canonical_json` is the export form: keys sorted, `(",", ":")` separators, ASCII only (every
non-ASCII character escaped, so no Unicode normalisation can change the bytes), no trailing
newline. The same document always gives the same bytes, hence the same sha256.
"""
from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

from deployments.catalog.problems import pointer_of

SCHEMA_VERSION = "v0.1"
SCHEMA_FILE = Path(__file__).resolve().parent / "bundle-manifest-v0.1.json"
#: The name the API serves the schema under (phase 2: GET /api/v1/schemas/<name>).
SCHEMA_NAME = "bundle-manifest-v0.1.json"


@cache
def manifest_schema() -> dict:
    """The bundle-manifest JSON Schema, as shipped in the repository."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(manifest_schema())


def validate_manifest(document) -> list[dict]:
    """Every problem of a manifest as `{pointer, message, keyword}`, sorted by pointer; empty when it is valid."""
    errors = [{"pointer": pointer_of(error.absolute_path), "message": error.message, "keyword": error.validator}
              for error in _validator().iter_errors(document)]
    if not errors and isinstance(document, dict):
        errors = _cross_checks(document)
    return sorted(errors, key=lambda error: (error["pointer"], error["message"]))


def _cross_checks(document: dict) -> list[dict]:
    errors = []
    services = document.get("services", [])
    ids = [service["id"] for service in services]
    secret_ids = {secret["id"] for secret in document.get("secrets", [])}
    seen: set[str] = set()
    paths: dict[str, str] = {}
    for index, service in enumerate(services):
        if service["id"] in seen:
            errors.append({"pointer": pointer_of(["services", index, "id"]), "keyword": "unique",
                           "message": f"service id {service['id']!r} is used twice"})
        seen.add(service["id"])
        for position, dependency in enumerate(service.get("dependencies", [])):
            if dependency not in ids:
                errors.append({"pointer": pointer_of(["services", index, "dependencies", position]),
                               "keyword": "reference", "message": f"no service {dependency!r} in this manifest"})
            if dependency == service["id"]:
                errors.append({"pointer": pointer_of(["services", index, "dependencies", position]),
                               "keyword": "reference", "message": "a service cannot depend on itself"})
        for position, secret in enumerate(service.get("secrets", [])):
            if secret not in secret_ids:
                errors.append({"pointer": pointer_of(["services", index, "secrets", position]),
                               "keyword": "reference", "message": f"no secret {secret!r} in this manifest's secrets"})
        for platform, binary in service.get("binaries", {}).items():
            owner = paths.setdefault(f"{platform}:{binary['path']}", service["id"])
            if owner != service["id"]:
                errors.append({"pointer": pointer_of(["services", index, "binaries", platform, "path"]),
                               "keyword": "unique",
                               "message": f"{binary['path']!r} is also the {platform} binary of {owner!r}"})
    return errors


def canonical_json(document) -> bytes:
    """The canonical bytes of a JSON document (sorted keys, fixed separators, ASCII)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def canonical_sha256(document) -> str:
    """The sha256 of `canonical_json(document)`."""
    return hashlib.sha256(canonical_json(document)).hexdigest()
