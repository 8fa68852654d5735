"""The packaging tests' world: the go-hello catalog, its Go source as a git repository, a local asset server."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

from builds.tests.factories import make_git_repo
from deployments import services

CATALOG = Path(__file__).parent / "package_catalog"
MAIN_GO = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from go-hello") }\n'
GO_MOD = "module example.com/gohello\n\ngo 1.19\n"


def go_hello_repo(path: Path) -> str:
    """A git repository holding the scenario's source as the catalog's `build.dir` expects it."""
    return make_git_repo(path, {"scenarios/go-hello/api/main.go": MAIN_GO, "scenarios/go-hello/api/go.mod": GO_MOD})


def go_hello_profile(tenant, *, assets=(), platforms=("linux-x64", "linux-arm64"), slug="go-hello"):
    """The current version of a go-hello profile on the local tier with the given assets in its settings."""
    imported = services.catalog_import_directory(path=str(CATALOG), actor="test", tenant=tenant)
    return services.profile_create(tenant=tenant, slug=slug, snapshot=imported.snapshot, scenario="go-hello",
                                   tier="local", actor="test",
                                   settings={"platforms": list(platforms), "assets": list(assets)})


class AssetServer:
    """A local HTTP server answering `body` on every path and counting the requests; `hang` never answers."""

    def __init__(self, body: bytes = b"", *, hang: bool = False):
        self.body, self.hits = body, 0
        if hang:
            self.socket = socket.socket()
            self.socket.bind(("127.0.0.1", 0))
            self.socket.listen(8)  # accepted by the kernel, never read or answered
            self.port = self.socket.getsockname()[1]
            self.server = None
            return
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                owner.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def asset(self, name: str, *, sha256: str | None = None, size: int | None = None) -> dict:
        return {"path": f"assets/{name}", "url": self.url(name),
                "sha256": sha256 or hashlib.sha256(self.body).hexdigest(),
                "size_bytes": len(self.body) if size is None else size}

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        else:
            self.socket.close()
