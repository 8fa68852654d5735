"""Coroutines from HTTP threads run on the server's loop (swarm/core/event_loop.py)."""
import asyncio
import threading

from conftest import server_loop_in_thread
from swarm.core import event_loop


def test_threads_hand_coroutines_to_the_server_loop_and_others_get_a_loop_of_their_own(monkeypatch):
    monkeypatch.setattr(event_loop, "_server_loop", None)
    monkeypatch.setattr(event_loop, "_server_thread", None)

    async def where(value):
        return value, threading.get_ident(), asyncio.get_running_loop()

    # No server: async_to_sync runs it (on a loop of its own).
    value, _, _ = event_loop.run_async(where, 1)
    assert value == 1

    with server_loop_in_thread() as (loop, loop_thread):
        results = []
        workers = [threading.Thread(target=lambda n=n: results.append(event_loop.run_async(where, n)))
                   for n in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(5)
        assert sorted(value for value, _, _ in results) == [0, 1, 2, 3]
        assert {thread for _, thread, _ in results} == {loop_thread.ident}
        assert {ran_on for _, _, ran_on in results} == {loop}
