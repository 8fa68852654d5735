"""Every environment variable the settings read is documented in the README's table."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def settings_variables() -> set[str]:
    source = (ROOT / "swarm" / "settings.py").read_text()
    return set(re.findall(r'[Ee]nv(?:\(\))?(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]+)"', source))


def test_settings_read_the_environment():
    assert {"DATABASE_URL", "REDIS_URL", "SWARM_S3_BUCKET", "SWARM_VAR_DIR"} <= settings_variables()


def test_every_setting_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"[A-Z][A-Z0-9_]{3,}", readme))
    missing = sorted(settings_variables() - documented)
    assert not missing, f"settings missing from the README's configuration table: {missing}"
