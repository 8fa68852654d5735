"""The bundle fetch (swarm_agent.boot.fetch): receive, hash and write on three threads, and its failures."""
import hashlib
import http.server
import os
import threading

import pytest

from swarm_agent.boot.fetch import CHUNK_BYTES, FetchError, fetch_to_file


class Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    declared: int | None = None

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(self.declared if self.declared is not None else len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(body: bytes, declared: int | None = None) -> str:
        handler = type("Bundle", (Handler,), {"body": body, "declared": declared})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/bundle.tar.gz"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES, 3 * CHUNK_BYTES + 12345, 20 * CHUNK_BYTES])
def test_every_byte_is_hashed_and_written_in_order(serve, tmp_path, size):
    body = os.urandom(size)
    target = tmp_path / "bundle"
    with open(target, "wb") as destination:
        result = fetch_to_file(serve(body), destination)
    assert result.size == size
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert target.read_bytes() == body


def test_a_connection_closed_early_is_an_error(serve, tmp_path):
    body = os.urandom(2 * CHUNK_BYTES)
    with open(tmp_path / "bundle", "wb") as destination, pytest.raises(FetchError):
        fetch_to_file(serve(body, declared=len(body) + 1000), destination, timeout=5)


def test_a_bundle_over_the_limit_is_refused(serve, tmp_path):
    with open(tmp_path / "bundle", "wb") as destination, pytest.raises(FetchError, match="larger than the limit"):
        fetch_to_file(serve(os.urandom(3 * CHUNK_BYTES)), destination, max_bytes=CHUNK_BYTES)


def test_a_failing_disk_is_reported_not_hung_on(serve, tmp_path):
    read_only = open(tmp_path / "bundle", "wb")  # noqa: SIM115 - closed below
    fd = os.open(tmp_path / "bundle", os.O_RDONLY)
    os.dup2(fd, read_only.fileno())  # writes to this "destination" now fail with EBADF
    os.close(fd)
    try:
        with pytest.raises(FetchError, match="Bad file descriptor"):
            fetch_to_file(serve(os.urandom(4 * CHUNK_BYTES)), read_only, timeout=5)
    finally:
        read_only.close()
