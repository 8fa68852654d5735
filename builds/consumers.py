"""`/ws/builds/<id>/log/`: the admin's live log tail. Authenticates, checks access, forwards.

Staff users only (the admin session). On connect it sends the build's state
and the latest attempt's log so far; then every `build.log` group event
(emitted by `builds.events`) makes it read the new bytes from the database
and forward them, so the channel layer carries notices, never log bytes.
"""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from builds.events import build_group_name

#: The first message sends at most this much of an already long log (the tail).
INITIAL_TAIL_BYTES = 512 * 1024
MAX_MESSAGE_BYTES = 256 * 1024


@database_sync_to_async
def _visible_build(user, build_id: int):
    from builds.selectors import build_get
    from swarm.core.errors import NotFound
    from swarm.core.principals import principal_for_user

    principal = principal_for_user(user)
    if principal is None:
        return None
    try:
        return build_get(principal, build_id)
    except NotFound:
        return None


@database_sync_to_async
def _read(build_id: int, attempt_number: int | None, offset: int, limit: int):
    """(state, attempt number, attempt log size, bytes from offset) of a build."""
    from builds.models import Build, BuildAttempt
    from builds.services import attempt_log_iter

    build = Build.objects.filter(pk=build_id).only("state", "attempt_count").first()
    if build is None:
        return None, 0, 0, b""
    number = attempt_number or build.attempt_count
    attempt = BuildAttempt.objects.filter(build_id=build_id, number=number).first()
    if attempt is None:
        return build.state, number, 0, b""
    data = bytearray()
    if offset < attempt.log_size:
        for piece in attempt_log_iter(attempt=attempt, offset=offset):
            data += piece
            if len(data) >= limit:
                break
    return build.state, number, attempt.log_size, bytes(data[:limit])


class BuildLogConsumer(AsyncJsonWebsocketConsumer):
    """Streams one build's log and state changes to an admin page."""

    async def connect(self):
        self.build_id = int(self.scope["url_route"]["kwargs"]["build_id"])
        build = await _visible_build(self.scope.get("user"), self.build_id)
        if build is None:
            await self.close(code=4404)
            return
        self.group = build_group_name(self.build_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        state, number, size, _ = await _read(self.build_id, None, 0, 0)
        self.attempt = number
        self.offset = max(0, size - INITIAL_TAIL_BYTES)
        await self.send_json({"type": "state", "state": state, "attempt": number})
        await self._forward_new_bytes()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def _forward_new_bytes(self):
        while True:
            state, number, size, data = await _read(self.build_id, self.attempt, self.offset, MAX_MESSAGE_BYTES)
            if not data:
                return
            await self.send_json({"type": "log", "attempt": number, "offset": self.offset,
                                  "text": data.decode("utf-8", errors="replace")})
            self.offset += len(data)

    async def build_log(self, event):
        if event["attempt"] != self.attempt:
            return
        if event["log_size"] > self.offset:
            await self._forward_new_bytes()

    async def build_state(self, event):
        if event["attempt"] and event["attempt"] != self.attempt:
            await self._forward_new_bytes()  # whatever the previous attempt still had
            self.attempt = event["attempt"]
            self.offset = 0
        await self.send_json({"type": "state", "state": event["state"], "attempt": event["attempt"]})
        await self._forward_new_bytes()
