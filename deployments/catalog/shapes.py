"""The shapes of catalog files that Swarm reads, as JSON Schemas (Draft 2020-12).

Only the fields the deployment manager uses are constrained; everything else a Vrooli file
carries (`cli`, `lifecycle.setup`, `storage`, …) is allowed and ignored. A file that breaks
one of these shapes is reported with the JSON pointer of each violation
(docs/deployments.md#catalog-formats).
"""
from __future__ import annotations

from functools import cache

from jsonschema import Draft202012Validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"

_STRING_LIST = {"type": "array", "items": {"type": "string"}}

REQUIREMENTS = {
    "type": "object",
    "properties": {
        "ram_mb": {"type": "number", "minimum": 0},
        "disk_mb": {"type": "number", "minimum": 0},
        "cpu_cores": {"type": "number", "minimum": 0},
        "gpu": {"oneOf": [
            {"type": "boolean"},
            {"type": "object", "properties": {"required": {"type": "boolean"},
                                              "vram_mb": {"type": "number", "minimum": 0}}},
        ]},
        "gpu_vram_mb": {"type": "number", "minimum": 0},
    },
}

TIER_STATEMENT = {
    "type": "object",
    "properties": {
        "supported": {"type": "boolean"},
        "fitness_score": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
        "notes": {"type": "string"},
        "alternatives": _STRING_LIST,
        "requirements": REQUIREMENTS,
    },
}

SWAP_OPTION = {"oneOf": [
    {"type": "string", "minLength": 1},
    {"type": "object", "required": ["id"], "properties": {
        "id": {"type": "string", "minLength": 1}, "relationship": {"type": "string"}, "notes": {"type": "string"}}},
]}

DEPENDENCY_FEASIBILITY = {
    "type": "object",
    "properties": {
        "resource_type": {"type": "string"},
        "platform_support": {"type": "object", "additionalProperties": TIER_STATEMENT},
        "swappable_with": {"type": "array", "items": SWAP_OPTION},
        # The older `deployment.dependencies` draft nests the same fields one level down.
        "deployment": {"type": "object", "properties": {
            "platform_support": {"type": "object", "additionalProperties": TIER_STATEMENT},
            "swappable_with": {"type": "array", "items": SWAP_OPTION},
        }},
    },
}

_FEASIBILITY_MAP = {
    "type": "object",
    "properties": {
        "resources": {"type": "object", "additionalProperties": DEPENDENCY_FEASIBILITY},
        "scenarios": {"type": "object", "additionalProperties": DEPENDENCY_FEASIBILITY},
    },
}

SECRET_DECLARATION = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 200},
        "class": {"enum": ["infrastructure", "per_install_generated", "user_prompt", "remote_fetch"]},
        "classification": {"enum": ["infrastructure", "service", "user"]},
        "env": {"type": "string", "minLength": 1},
        "file": {"type": "string", "minLength": 1},
        "label": {"type": "string"},
        "description": {"type": "string"},
        "required": {"type": "boolean"},
        "validation_pattern": {"type": "string"},
        "default_hint": {"type": "string"},
        # The same shapes as the manifest's (deployments/manifest/bundle-manifest-v0.1.json#/$defs).
        "generator": {"$ref": "#/$defs/generator"},
        "remote": {"$ref": "#/$defs/remote"},
    },
    "allOf": [{"if": {"required": ["class"], "properties": {"class": {"const": "remote_fetch"}}},
               "then": {"required": ["remote"]}}],
}

SECRET_DESCRIPTOR = {
    "type": "object",
    "required": ["env"],
    "properties": {
        "env": {"type": "string", "minLength": 1},
        "label": {"type": "string"},
        "description": {"type": "string"},
        "classification": {"enum": ["infrastructure", "service", "user"]},
        "required": {"type": "boolean"},
        "default_hint": {"type": "string"},
        "obtain_url": {"type": "string"},
        "validation_pattern": {"type": "string"},
    },
}

CREDENTIALS = {
    "type": "object",
    "properties": {
        "env": {"type": "array", "items": {"oneOf": [{"type": "string", "minLength": 1}, SECRET_DESCRIPTOR]}},
        "descriptors": {"type": "array", "items": SECRET_DESCRIPTOR},
        "secret_ref": {"type": "string"},
    },
}

_SCALAR = {"type": ["string", "number", "boolean"]}

RUNTIME = {
    "type": "object",
    "properties": {"env": {"type": "object", "additionalProperties": _SCALAR}},
}

ENVIRONMENT_EXPORTS = {
    "type": "object",
    "properties": {
        "from_runtime_env": _STRING_LIST,
        "derived": {"type": "object", "additionalProperties": {
            "type": "object", "properties": {"template": {"type": "string"}}}},
    },
}

ASSET = {
    "type": "object",
    "required": ["path", "sha256", "size_bytes"],
    "properties": {
        "path": {"type": "string", "minLength": 1},
        "url": {"type": "string", "minLength": 1},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "size_bytes": {"type": "integer", "minimum": 0},
    },
}

#: Fields both formats may carry (Swarm's extensions and the resource fields of a legacy
#: `resources/<name>/.vrooli/service.json`).
_COMMON = {
    "requirements": REQUIREMENTS,
    "swappable_with": {"type": "array", "items": SWAP_OPTION},
    "secrets": {"type": "array", "items": SECRET_DECLARATION},
    "assets": {"type": "array", "items": ASSET},
    "runs_as": {"enum": ["service", "library", "remote", "host"]},
    "runtime": RUNTIME,
    "credentials": CREDENTIALS,
    "environment_exports": ENVIRONMENT_EXPORTS,
    "version": {"type": "string"},
}

_DEPENDENCY = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "enabled": {"type": "boolean"},
        "required": {"type": "boolean"},
        "version": {"type": "string"},
        "versionRange": {"type": "string"},
        "purpose": {"type": "string"},
        "description": {"type": "string"},
    },
}

_DEPENDENCY_MAP = {"type": "object", "propertyNames": {"pattern": NAME_PATTERN}, "additionalProperties": _DEPENDENCY}

SERVICE_JSON = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Vrooli .vrooli/service.json, as Swarm reads it",
    "type": "object",
    "properties": {
        **_COMMON,
        "service": {"type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "string"}, "displayName": {"type": "string"},
            "description": {"type": "string"}, "type": {"type": "string"}}},
        "dependencies": {"type": "object", "properties": {
            "resources": _DEPENDENCY_MAP, "scenarios": _DEPENDENCY_MAP}},
        "tier_feasibility": {"type": "object", "properties": {"dependencies": _FEASIBILITY_MAP}},
        "deployment": {"type": "object", "properties": {
            "tiers": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "status": {"enum": ["ready", "limited", "blocked"]},
                "fitness_score": {"type": "number", "minimum": 0, "maximum": 1},
                "notes": {"type": "string"},
                "constraints": _STRING_LIST,
                "secrets": {"type": "array", "items": {"type": "object", "required": ["secret_id"], "properties": {
                    "secret_id": {"type": "string", "minLength": 1},
                    "classification": {"enum": ["infrastructure", "service", "user"]},
                    "label": {"type": "string"}, "description": {"type": "string"},
                    "required": {"type": "boolean"}, "default_hint": {"type": "string"}}}},
            }}},
            "dependencies": _FEASIBILITY_MAP,
        }},
        "ports": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "env_var": {"type": "string"},
            "range": {"type": "string", "pattern": r"^\s*\d{1,5}\s*-\s*\d{1,5}\s*$"},
            "port": {"type": ["integer", "string"]},
        }}},
        "components": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "role": {"type": "string"},
            "build": {"type": "object", "properties": {"kind": {"type": "string"}, "dir": {"type": "string"}}},
            "run": {"type": "object", "properties": {"port": {"type": "string"}, "argv": _STRING_LIST,
                                                      "cwd": {"type": "string"}}},
        }}},
        "lifecycle": {"type": "object", "properties": {"health": {"type": "object", "properties": {
            "checks": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "type": {"type": "string"}, "target": {"type": "string"},
                "timeout": {"type": "integer", "minimum": 0}, "interval": {"type": "integer", "minimum": 0}}}},
        }}}},
        "environment": {"type": "object", "additionalProperties": _SCALAR},
    },
}

RESOURCE_JSON = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Vrooli resources/<name>/resource.json, as Swarm reads it",
    "type": "object",
    "properties": {
        **_COMMON,
        "name": {"type": "string"},
        "display_name": {"type": "string"},
        "description": {"type": "string"},
        "driver": {"type": "string"},
        "bundling": {"type": "string"},
        "portability_tier": {"type": "string"},
        "platforms": {"type": "object", "additionalProperties": {"type": "string"}},
        "dependencies": _STRING_LIST,
        "orchestration": {"type": "object", "properties": {
            "dependencies": _STRING_LIST, "optional_dependencies": _STRING_LIST}},
        "deployment": {"type": "object", "properties": {"profiles": {
            "type": "object", "additionalProperties": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {
                    "support": {"type": "string"}, "reason": {"type": "string"},
                    "limitations": _STRING_LIST}}}}}},
        "ports": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "container": {"type": "integer"}, "host": {"type": "integer"}}}},
        "health_checks": {"type": "array", "items": {"type": "object", "properties": {
            "type": {"type": "string"}, "target": {"type": "string"},
            "interval_seconds": {"type": "number", "minimum": 0},
            "timeout_seconds": {"type": "number", "minimum": 0}}}},
    },
}


@cache
def validator(schema_name: str) -> Draft202012Validator:
    """The (cached) validator of `service.json` or `resource.json`."""
    from deployments.manifest.schema import manifest_schema

    schema = {**{"service.json": SERVICE_JSON, "resource.json": RESOURCE_JSON}[schema_name],
              "$defs": manifest_schema()["$defs"]}
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)
