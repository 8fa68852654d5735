"""The launcher publishes a running installation's services for other shells."""
from types import SimpleNamespace

from swarm.launcher import write_runtime_env


def test_runtime_env_names_embedded_services_and_forgets_them_at_stop(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARM_SECRET_KEY", "k" * 20)
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5999/swarm")
    monkeypatch.setenv("REDIS_URL", "redis://redis.internal:6379/0")  # configured, not embedded
    embedded_postgres = SimpleNamespace(url="postgresql://postgres@127.0.0.1:5999/swarm")

    env_file = write_runtime_env(tmp_path, [embedded_postgres])
    assert env_file.read_text().splitlines() == [
        "SWARM_SECRET_KEY=" + "k" * 20,
        "DATABASE_URL=postgresql://postgres@127.0.0.1:5999/swarm",
    ]
    assert env_file.stat().st_mode & 0o777 == 0o600

    write_runtime_env(tmp_path, [])
    assert env_file.read_text().splitlines() == ["SWARM_SECRET_KEY=" + "k" * 20]
