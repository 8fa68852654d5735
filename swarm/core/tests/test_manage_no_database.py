"""`manage.py` without a reachable database says which one, where its address came from and how to start one."""
import os
import subprocess
import sys
from pathlib import Path

from swarm.embedded import free_port

BASE_DIR = Path(__file__).resolve().parents[3]


def run_manage(tmp_path, **env_overrides):
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "SWARM_VAR_DIR")}
    env.update(SWARM_VAR_DIR=str(tmp_path), SWARM_LOG_STREAM="0", **env_overrides)
    return subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "showmigrations", "builds"], cwd=BASE_DIR,
                          env=env, capture_output=True, text=True, timeout=120)


def test_configured_database_that_refuses_is_one_sentence_naming_it(tmp_path):
    port = free_port()
    result = run_manage(tmp_path, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/swarm")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: cannot reach the database at 127.0.0.1:{port}/swarm (DATABASE_URL): ")
    assert "make run" in result.stderr


def test_make_run_gone_names_its_env_file_and_says_to_start_it(tmp_path):
    port = free_port()
    (tmp_path / "swarm.env").write_text(f"DATABASE_URL=postgresql://postgres@127.0.0.1:{port}/swarm\n")
    result = run_manage(tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"at 127.0.0.1:{port}/swarm ({tmp_path / 'swarm.env'}, written by `make run`)" in result.stderr
    assert "Is `make run` still running?" in result.stderr
