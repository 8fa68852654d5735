"""What a deployment profile version may say, checked before it is written; and diffs between versions.

A profile version's content is `{snapshot, scenario, tier, swaps, secrets, settings}`:

* `tier` — any accepted spelling, stored canonical;
* `swaps` — `{original: replacement}`; each must apply to the scenario's graph and name an entry
  the snapshot has (checked by walking the graph, `deployments.graph`);
* `secrets` — decisions by secret id: `{"class": per_install_generated | user_prompt | remote_fetch,
  "generator"?, "prompt"?, "remote"?, "target"?}`, the same shapes as the manifest's (one schema);
  never a value (a `value` key is refused);
* `settings` — `platforms`, `app`, `ipc`, `telemetry`, `ports`, `exclude_optional`, `assets`, `env`
  (`PROFILE_SETTINGS` below).
"""
from __future__ import annotations

import re
from functools import cache

from jsonschema import Draft202012Validator

from deployments.catalog.problems import pointer_of
from deployments.catalog.shapes import NAME_PATTERN
from deployments.errors import InvalidProfile
from deployments.manifest.schema import manifest_schema
from deployments.tiers import parse_tier


def _schemas() -> dict:
    definitions = manifest_schema()["$defs"]
    decision = {
        "type": "object",
        "additionalProperties": False,
        "required": ["class"],
        "properties": {
            "class": {"enum": ["per_install_generated", "user_prompt", "remote_fetch"]},
            "generator": {"$ref": "#/$defs/generator"},
            "prompt": {"$ref": "#/$defs/prompt"},
            "remote": {"$ref": "#/$defs/remote"},
            "target": {"$ref": "#/$defs/secret_target"},
            "description": {"type": "string"},
        },
        "allOf": [
            {"if": {"properties": {"class": {"const": "remote_fetch"}}}, "then": {"required": ["remote"]}},
        ],
    }
    secrets = {"$defs": definitions, "type": "object",
               "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$"}, "additionalProperties": decision}
    settings = {
        "$defs": definitions,
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "platforms": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"$ref": "#/$defs/platform"}},
            "app": {"type": "object", "additionalProperties": False, "properties": {
                "name": {"type": "string", "minLength": 1}, "version": {"type": "string", "minLength": 1},
                "description": {"type": "string"}}},
            "ipc": {"type": "object", "additionalProperties": False, "properties": {
                "host": {"type": "string", "minLength": 1}, "port": {"$ref": "#/$defs/port"},
                "auth_token_path": {"$ref": "#/$defs/relative_path"}}},
            "telemetry": {"type": "object", "additionalProperties": False, "properties": {
                "file": {"$ref": "#/$defs/relative_path"}, "upload_url": {"type": "string"}}},
            "ports": {"type": "object", "additionalProperties": False, "properties": {
                "default_range": {"$ref": "#/$defs/port_range"},
                "reserved": {"type": "array", "items": {"$ref": "#/$defs/port"}}}},
            "exclude_optional": {"type": "array", "uniqueItems": True, "items": {"$ref": "#/$defs/identifier"}},
            "assets": {"type": "array", "items": {
                "type": "object", "required": ["path", "sha256", "size_bytes"], "additionalProperties": False,
                "properties": {**definitions["asset"]["properties"], "service": {"$ref": "#/$defs/identifier"}}}},
            "env": {"type": "object", "additionalProperties": {"$ref": "#/$defs/env"}},
        },
    }
    return {"secrets": secrets, "settings": settings}


@cache
def _validators() -> dict[str, Draft202012Validator]:
    return {name: Draft202012Validator(schema) for name, schema in _schemas().items()}


def check_shape(name: str, value) -> None:
    """Refuse `secrets` or `settings` that break their schema, naming the first violation by JSON pointer."""
    errors = sorted(_validators()[name].iter_errors(value), key=lambda error: list(map(str, error.absolute_path)))
    if errors:
        error = errors[0]
        pointer = pointer_of([name, *error.absolute_path])
        raise InvalidProfile(f"{pointer}: {error.message}", field=pointer,
                             extra={"errors": [{"pointer": pointer_of([name, *e.absolute_path]), "message": e.message}
                                               for e in errors]})


def check_content(content: dict) -> dict:
    """The content with its tier made canonical; refuses malformed secrets decisions or settings.

    The swaps are checked against the graph by the caller (they need the catalog).
    """
    tier = parse_tier(content["tier"])
    if not isinstance(content.get("scenario"), str) or not re.fullmatch(NAME_PATTERN, content["scenario"]):
        raise InvalidProfile(f"{content.get('scenario')!r} is not a scenario name.", field="/scenario")
    swaps = content.get("swaps") or {}
    if not isinstance(swaps, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in swaps.items()):
        raise InvalidProfile("swaps maps a dependency's name to its replacement's name.", field="/swaps")
    secrets = content.get("secrets") or {}
    if isinstance(secrets, dict):
        for secret_id, decision in secrets.items():
            if isinstance(decision, dict) and "value" in decision:
                raise InvalidProfile(f"/secrets/{secret_id}/value: a profile records how a secret is provided, "
                                     f"never its value.", field=f"/secrets/{secret_id}/value")
    check_shape("secrets", secrets)
    settings = content.get("settings") or {}
    check_shape("settings", settings)
    return {**content, "tier": tier, "swaps": dict(sorted(swaps.items())), "secrets": secrets, "settings": settings}


def diff(older, newer, *, path: tuple = ()) -> list[dict]:
    """What changed from `older` to `newer` (JSON values): `[{pointer, op: add|remove|replace, old, new}]`.

    Objects are compared key by key (so `/swaps/postgres` or `/settings/platforms` is named),
    everything else as a whole value.
    """
    if isinstance(older, dict) and isinstance(newer, dict):
        changes = []
        for key in sorted(older.keys() | newer.keys()):
            if key not in newer:
                changes.append({"pointer": pointer_of([*path, key]), "op": "remove", "old": older[key], "new": None})
            elif key not in older:
                changes.append({"pointer": pointer_of([*path, key]), "op": "add", "old": None, "new": newer[key]})
            else:
                changes += diff(older[key], newer[key], path=(*path, key))
        return changes
    if older != newer:
        return [{"pointer": pointer_of(path), "op": "replace", "old": older, "new": newer}]
    return []
