"""`bundle.json`: its JSON Schema (shipped beside this package), assembly from a profile version, canonical export.

    assembled = assemble_manifest(content=version.content(), lookup=..., analysis_for=..., profile=..., version=...)
    assembled.canonical, assembled.sha256          # the same version always gives the same bytes
    validate_manifest(document)                    # [{pointer, message, keyword}]
"""
from deployments.manifest.assemble import AssembledManifest, assemble_manifest
from deployments.manifest.schema import (
    SCHEMA_FILE,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    canonical_json,
    canonical_sha256,
    manifest_schema,
    validate_manifest,
)

__all__ = [
    "SCHEMA_FILE", "SCHEMA_NAME", "SCHEMA_VERSION", "AssembledManifest", "assemble_manifest", "canonical_json",
    "canonical_sha256", "manifest_schema", "validate_manifest",
]
