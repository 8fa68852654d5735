"""Local fakes for what cannot run here, each speaking its real protocol on 127.0.0.1:
a Proxmox VE API (reboot endpoint, PVEAPIToken auth), a webhook receiver, and an SMTP server."""
from __future__ import annotations

import json
import re
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from swarm.embedded import free_port

REBOOT_PATH = re.compile(r"^/api2/json/nodes/(?P<node>[^/]+)/(?P<kind>lxc|qemu)/(?P<vmid>\d+)/status/reboot$")


class _Server:
    def __init__(self, handler_class):
        self.requests: list[dict] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        outer = self

        class Handler(handler_class):
            server_state = outer

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _ProxmoxHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        state = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        match = REBOOT_PATH.match(self.path)
        authorization = self.headers.get("Authorization", "")
        record = {"path": self.path, "authorization": authorization}
        if authorization != f"PVEAPIToken={state.token_id}={state.token_secret}":
            self._answer(401, {"data": None, "message": "authentication failure"})
            record["status"] = 401
        elif not match:
            self._answer(501, {"data": None, "message": f"Method 'POST {self.path}' not implemented"})
            record["status"] = 501
        else:
            upid = f"UPID:{match['node']}:0000ABCD:00000001:65000000:vzreboot:{match['vmid']}:{state.token_id}:"
            self._answer(200, {"data": upid})
            record.update(status=200, **match.groupdict())
        state.requests.append(record)

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeProxmox(_Server):
    """Proxmox VE's `POST /api2/json/nodes/<node>/<lxc|qemu>/<vmid>/status/reboot`, API-token auth."""

    def __init__(self, token_id: str = "swarm@pve!ladder", token_secret: str = "0e5a0f5e-secret"):
        self.token_id = token_id
        self.token_secret = token_secret
        super().__init__(_ProxmoxHandler)

    @property
    def reboots(self) -> list[dict]:
        return [request for request in self.requests if request.get("status") == 200]


class _WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server_state.requests.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                           "json": json.loads(body or b"null")})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class FakeWebhookReceiver(_Server):
    """Receives JSON webhooks (Slack-compatible `{"text": ...}`) and keeps them."""

    def __init__(self):
        super().__init__(_WebhookHandler)


class _MailSink:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "message": message_from_bytes(envelope.content)})
        return "250 Message accepted for delivery"


class FakeSmtpServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message."""

    def __init__(self):
        self.sink = _MailSink()
        self.port = free_port()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def messages(self) -> list[dict]:
        return self.sink.messages

    def stop(self) -> None:
        self.controller.stop()
