"""Unix-socket relays: the only way out of a network-isolated sandbox or microVM.

A sandbox started with `--unshare-net` has a loopback interface and nothing
else. For each endpoint the boot must reach (the control plane's metadata
service, the bundle store) the supervisor binds a unix socket into the
sandbox and relays every connection made to it to that one TCP upstream.
Inside a microVM the guest init runs the same relays, from unix sockets to
the addresses QEMU forwards (`guestfwd`) to those endpoints. The bytes are
relayed as they are (TLS stays end-to-end); the boot script maps `host:port`
to the socket path (`SWARM_HTTP_UNIX_SOCKETS`), so the Host header a
presigned URL signs stays the URL's own. The entrypoint can use the same
sockets, which lead only to endpoints that demand the execution's token or a
presigned URL.

Standard library only: the supervisor and the guest import it.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.parse
from pathlib import Path

logger = logging.getLogger(__name__)

BUFFER_BYTES = 1024 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}


def endpoint_of(url: str) -> tuple[str, int]:
    """(host, port) of a URL, with the scheme's default port."""
    parsed = urllib.parse.urlsplit(url)
    return parsed.hostname or "", parsed.port or DEFAULT_PORTS.get(parsed.scheme, 80)


class UnixSocketRelay:
    """Accepts on a unix socket and pipes each connection to one TCP upstream."""

    def __init__(self, path: Path, upstream: tuple[str, int]):
        self.path = Path(path)
        self.upstream = upstream
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        os.chmod(self.path, 0o666)
        self._listener.listen(64)
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name=f"relay-{upstream[0]}:{upstream[1]}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=15)
            upstream.settimeout(None)
        except OSError as exc:
            logger.warning("relay to %s:%s failed: %s", *self.upstream, exc)
            client.close()
            return
        backwards = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        backwards.start()
        _pipe(client, upstream)
        backwards.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        """Stop accepting; connections in flight finish on their own."""
        self._closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self.path.unlink(missing_ok=True)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    buffer = bytearray(BUFFER_BYTES)
    view = memoryview(buffer)
    try:
        while True:
            count = source.recv_into(view)
            if not count:
                break
            target.sendall(view[:count])
    except OSError:
        pass
    finally:
        # Pass the end of stream on; the caller closes both sockets once both directions ended.
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def distinct_endpoints(urls: list[str]) -> list[tuple[str, int]]:
    """The (host, port) endpoints of `urls`, each once, in order."""
    endpoints: list[tuple[str, int]] = []
    for url in urls:
        endpoint = endpoint_of(url)
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    return endpoints


def socket_map(endpoints: list[tuple[str, int]], directory: str) -> str:
    """The `SWARM_HTTP_UNIX_SOCKETS` value naming `<directory>/<index>.sock` for each endpoint."""
    return ",".join(f"{host}:{port}={directory}/{index}.sock" for index, (host, port) in enumerate(endpoints))


def start_relays(directory: Path, endpoints: list[tuple[str, int]],
                 upstreams: list[tuple[str, int]] | None = None) -> list[UnixSocketRelay]:
    """One relay `<directory>/<index>.sock` per endpoint, to that endpoint (or to `upstreams[index]`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    upstreams = upstreams or endpoints
    return [UnixSocketRelay(directory / f"{index}.sock", upstream) for index, upstream in enumerate(upstreams)]
