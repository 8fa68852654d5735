"""Provisioning a new drone: the agent package served by the control plane and the bootstrap script."""
from __future__ import annotations

import base64
import functools
import hashlib
import io
import re
import shlex
import tarfile
import tomllib
import zipfile
from pathlib import Path

from django.conf import settings

AGENT_SOURCE_DIR = Path(settings.BASE_DIR) / "agent"
EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", "build", "dist"}


def agent_version() -> str:
    """The agent's version from its pyproject.toml."""
    text = (AGENT_SOURCE_DIR / "pyproject.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else "0"


def _agent_files() -> list[Path]:
    files = []
    for path in sorted(AGENT_SOURCE_DIR.rglob("*")):
        relative = path.relative_to(AGENT_SOURCE_DIR)
        if any(part in EXCLUDED_PARTS or part.endswith(".egg-info") for part in relative.parts):
            continue
        if path.is_file() and not path.name.endswith((".pyc", ".pyo")):
            files.append(path)
    return files


def _fingerprint() -> tuple:
    return tuple((str(path), path.stat().st_mtime_ns, path.stat().st_size) for path in _agent_files())


@functools.lru_cache(maxsize=2)
def _package_for(fingerprint: tuple) -> tuple[bytes, str]:
    version = agent_version()
    root = f"swarm-agent-{version}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in _agent_files():
            info = archive.gettarinfo(str(path), arcname=f"{root}/{path.relative_to(AGENT_SOURCE_DIR).as_posix()}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            with path.open("rb") as handle:
                archive.addfile(info, handle)
    return buffer.getvalue(), version


def agent_package_bytes() -> tuple[bytes, str]:
    """The agent source tree as a pip-installable .tar.gz (rebuilt when a file changes) and its version."""
    return _package_for(_fingerprint())


def _pyproject() -> dict:
    return tomllib.loads((AGENT_SOURCE_DIR / "pyproject.toml").read_text())["project"]


def wheel_filename() -> str:
    """`swarm_agent-<version>-py3-none-any.whl`: the name pip needs to see on the downloaded file."""
    project = _pyproject()
    return f"{project['name'].replace('-', '_')}-{project['version']}-py3-none-any.whl"


@functools.lru_cache(maxsize=2)
def _wheel_for(fingerprint: tuple) -> bytes:
    project = _pyproject()
    distribution = f"{project['name'].replace('-', '_')}-{project['version']}"
    dist_info = f"{distribution}.dist-info"
    metadata = [f"Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}",
                f"Summary: {project.get('description', '')}",
                f"Requires-Python: {project.get('requires-python', '>=3.11')}"]
    metadata += [f"Requires-Dist: {requirement}" for requirement in project.get("dependencies", [])]
    entry_points = "[console_scripts]\n" + "".join(
        f"{name} = {target}\n" for name, target in project.get("scripts", {}).items())
    generated = {
        f"{dist_info}/METADATA": "\n".join(metadata) + "\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: swarm.drones.provisioning\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": entry_points,
        f"{dist_info}/top_level.txt": "swarm_agent\n",
    }
    records, buffer = [], io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        def add(name: str, data: bytes) -> None:
            wheel.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{name},sha256={digest},{len(data)}")

        for path in _agent_files():
            relative = path.relative_to(AGENT_SOURCE_DIR).as_posix()
            if relative.startswith("swarm_agent/"):
                add(relative, path.read_bytes())
        for name, text in generated.items():
            add(name, text.encode())
        records.append(f"{dist_info}/RECORD,,")
        wheel.writestr(zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(2020, 1, 1, 0, 0, 0)),
                       "\n".join(records) + "\n")
    return buffer.getvalue()


def agent_wheel_bytes() -> tuple[bytes, str]:
    """The agent as a pure-Python wheel built from agent/ (no build step on the drone) and its file name."""
    return _wheel_for(_fingerprint()), wheel_filename()


BOOTSTRAP_TEMPLATE = r"""#!/bin/sh
# Swarm drone bootstrap: installs swarm-agent from this control plane into a
# virtualenv and starts it, which registers this machine as a drone.
# Environment overrides: SWARM_DRONE_NAME, SWARM_AGENT_DIR, SWARM_PYTHON,
# SWARM_AGENT_LABELS (comma separated), SWARM_AGENT_PIP_ARGS,
# SWARM_AGENT_NO_START=1 (install only), SWARM_AGENT_SYSTEMD=1 (install the unit).
set -eu
SERVER={server}
JOIN_TOKEN={token}
AGENT_DIR="${{SWARM_AGENT_DIR:-$HOME/.swarm-agent}}"
PYTHON="${{SWARM_PYTHON:-python3}}"
NAME="${{SWARM_DRONE_NAME:-$(hostname)}}"
WHEEL={wheel}
mkdir -p "$AGENT_DIR/state"
echo "[swarm] downloading the agent from $SERVER"
if command -v curl >/dev/null 2>&1; then
    curl -fsS "$SERVER/api/v1/provision/agent.whl?token=$JOIN_TOKEN" -o "$AGENT_DIR/$WHEEL"
else
    wget -q -O "$AGENT_DIR/$WHEEL" "$SERVER/api/v1/provision/agent.whl?token=$JOIN_TOKEN"
fi
if [ ! -x "$AGENT_DIR/venv/bin/python" ]; then
    "$PYTHON" -m venv "$AGENT_DIR/venv"
fi
echo "[swarm] installing swarm-agent into $AGENT_DIR/venv"
# shellcheck disable=SC2086
"$AGENT_DIR/venv/bin/python" -m pip install --quiet ${{SWARM_AGENT_PIP_ARGS:-}} "$AGENT_DIR/$WHEEL"
set -- run --server "$SERVER" --join-token "$JOIN_TOKEN" --state-dir "$AGENT_DIR/state" --name "$NAME"
if [ -n "${{SWARM_AGENT_LABELS:-}}" ]; then
    set -- "$@" --labels "$SWARM_AGENT_LABELS"
fi
if [ "${{SWARM_AGENT_SYSTEMD:-0}}" = "1" ]; then
    printf '%s\n' "SWARM_AGENT_ARGS=$*" > /etc/default/swarm-agent
    cat > /etc/systemd/system/swarm-agent.service <<UNIT
[Unit]
Description=Swarm drone agent
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile=/etc/default/swarm-agent
ExecStart=$AGENT_DIR/venv/bin/swarm-agent \$SWARM_AGENT_ARGS
Restart=always
RestartSec=5
KillMode=mixed

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now swarm-agent
    echo "[swarm] swarm-agent installed as a systemd service"
    exit 0
fi
if [ "${{SWARM_AGENT_NO_START:-0}}" = "1" ]; then
    echo "[swarm] installed; start with: $AGENT_DIR/venv/bin/swarm-agent $*"
    exit 0
fi
echo "[swarm] starting swarm-agent as $NAME"
exec "$AGENT_DIR/venv/bin/swarm-agent" "$@"
"""


def bootstrap_script(*, server_url: str, join_token: str) -> str:
    """The shell script `GET /provision/bootstrap` serves (values shell-quoted)."""
    server = getattr(settings, "SWARM_PUBLIC_URL", "") or server_url
    return BOOTSTRAP_TEMPLATE.format(server=shlex.quote(server), token=shlex.quote(join_token),
                                     wheel=shlex.quote(wheel_filename()))


def bootstrap_command(*, join_token: str) -> str:
    """The one-liner an operator pastes on a new machine."""
    url = f"{settings.SWARM_PUBLIC_URL}/api/v1/provision/bootstrap?token={join_token}"
    return f"curl -fsS {shlex.quote(url)} | sh"
