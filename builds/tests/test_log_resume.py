"""A wrong log offset → 416 with the server's Range, and the agent's streamer resumes with nothing lost or doubled.

The agent's real `LogStreamer` talks to the real server over HTTP; two faults
are injected: a response lost after the server stored the patch (the agent
sends it again, gets 416, skips ahead) and bytes the server lost (the agent
gets 416 with a smaller Range and sends them again).
"""
import asyncio
import hashlib
import os

import httpx
import pytest

from builds.models import BuildAttempt, BuildLogChunk
from builds.services import attempt_log_iter, build_trigger
from builds.tests.factories import make_job
from swarm_agent.builds.logstream import LogStreamer

pytestmark = pytest.mark.live


class LoseResponses(httpx.AsyncBaseTransport):
    """Forwards every request; for the listed PATCH numbers, drops the server's answer (a network fault)."""

    def __init__(self, lose: set[int]):
        self.inner = httpx.AsyncHTTPTransport()
        self.lose = lose
        self.patches = 0
        self.statuses: list[int] = []

    async def handle_async_request(self, request):
        response = await self.inner.handle_async_request(request)
        if request.method == "PATCH":
            self.patches += 1
            await response.aread()
            self.statuses.append(response.status_code)
            if self.patches in self.lose:
                raise httpx.ReadError("connection reset after the server answered", request=request)
        return response

    async def aclose(self):
        await self.inner.aclose()


def claimed_build(live_url):
    from builds.tests.factories import make_drone

    job = make_job()
    build = build_trigger(job=job, trigger="api")
    _, client = make_drone()
    headers = {"Authorization": f"Bearer {client.token}"}
    claim = httpx.post(f"{live_url}/api/v1/builds/request", json={"free_slots": 1}, headers=headers)
    assert claim.status_code == 201, claim.text
    assert httpx.put(f"{live_url}/api/v1/builds/{build.pk}/state", json={"state": "running"},
                     headers=headers).status_code == 200
    return build, headers


def stored_log(build) -> bytes:
    return b"".join(attempt_log_iter(attempt=BuildAttempt.objects.get(build=build, number=1)))


def test_lost_response_is_resumed_without_doubling(builds_live_url, tmp_path):
    build, headers = claimed_build(builds_live_url)
    pieces = [os.urandom(300_000) for _ in range(5)]
    transport = LoseResponses(lose={2})

    async def stream():
        async with httpx.AsyncClient(base_url=f"{builds_live_url}/api/v1", headers=headers,
                                     transport=transport) as api:
            streamer = LogStreamer(api, build.pk, tmp_path / "spool.log", max_patch_bytes=256 * 1024,
                                   flush_interval=0.01)
            for piece in pieces:
                streamer.write(piece)
                try:
                    await streamer.flush()
                except httpx.ReadError:
                    pass  # the shipper loop retries; here the next flush does
            await streamer.flush()
            return streamer

    streamer = asyncio.run(stream())
    expected = b"".join(pieces)
    assert 416 in transport.statuses, "the re-sent patch must have been refused with 416"
    assert streamer.resumes >= 1
    assert stored_log(build) == expected
    assert streamer.checksum == "sha256:" + hashlib.sha256(expected).hexdigest()
    response = httpx.put(f"{builds_live_url}/api/v1/builds/{build.pk}/state", headers=headers, json={
        "state": "success", "exit_code": 0, "log_bytesize": streamer.written, "log_checksum": streamer.checksum})
    assert response.status_code == 200 and response.json()["state"] == "success"
    attempt = BuildAttempt.objects.get(build=build, number=1)
    assert attempt.log_checksum == attempt.log_checksum_reported == streamer.checksum


def test_bytes_the_server_lost_are_sent_again(builds_live_url, tmp_path):
    build, headers = claimed_build(builds_live_url)
    first, second = os.urandom(200_000), os.urandom(200_000)

    def lose_last_chunk():
        """The server loses its last chunk (say, a restore from backup): it holds 100 000 bytes less."""
        from django.db import connection

        attempt = BuildAttempt.objects.get(build=build, number=1)
        last = BuildLogChunk.objects.filter(attempt=attempt).order_by("-offset").first()
        BuildAttempt.objects.filter(pk=attempt.pk).update(log_size=last.offset)
        last.delete()
        connection.close()

    async def stream():
        async with httpx.AsyncClient(base_url=f"{builds_live_url}/api/v1", headers=headers) as api:
            streamer = LogStreamer(api, build.pk, tmp_path / "spool.log", max_patch_bytes=100_000)
            streamer.write(first)
            await streamer.flush()
            await asyncio.to_thread(lose_last_chunk)
            streamer.write(second)
            await streamer.flush()
            return streamer

    streamer = asyncio.run(stream())
    assert streamer.resumes == 1
    assert stored_log(build) == first + second
    assert streamer.checksum == "sha256:" + hashlib.sha256(first + second).hexdigest()
