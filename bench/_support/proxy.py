"""A byte-counting HTTP proxy in front of one upstream (S3), for the boot benchmarks' "one download" figures."""
from __future__ import annotations

import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = ("connection", "keep-alive", "transfer-encoding", "proxy-connection")


class CountingProxy:
    """Relays every request to `upstream`, counting GETs (whose path contains `count_marker`) and their bytes.

    `keep_host=True` passes the client's Host header on: an S3 URL presigned
    *for the proxy's address* (the control plane configured with the proxy
    as its endpoint) then still verifies upstream. With False the upstream's
    own host is sent, for URLs presigned for the upstream and rewritten to
    the proxy by the caller.
    """

    def __init__(self, upstream: str, *, keep_host: bool = False, count_marker: str = ""):
        self.requests = 0
        self.bytes_sent = 0
        origin = urllib.parse.urlsplit(upstream)
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {name: value for name, value in self.headers.items()
                           if name.lower() not in HOP_BY_HOP and (keep_host or name.lower() != "host")}
                counted = self.command == "GET" and count_marker in self.path
                if counted:
                    with lock:
                        outer.requests += 1
                connection = http.client.HTTPConnection(origin.hostname, origin.port, timeout=120)
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                if response.getheader("Content-Length") is None:
                    data = response.read()
                    self.send_header("Content-Length", str(len(data)))
                    chunks = [data]
                else:
                    chunks = iter(lambda: response.read(1024 * 1024), b"")
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(chunk)
                    if counted:
                        with lock:
                            outer.bytes_sent += len(chunk)
                connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
