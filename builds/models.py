"""Build models (filled in by the builds issue)."""
