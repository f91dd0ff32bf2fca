"""The bridge from the engine's thread to the SSE response (`reference_worker/server/sse.py` EventChannel):
every event arrives, in order; the event loop is woken only for a reader that waits on an empty channel;
a wait that times out loses nothing that arrives after it."""

from __future__ import annotations

import asyncio
import threading
import time

from reference_worker.generation import CancelToken, EndEvent, GenerationRequest, StopReason, TokenEvent
from reference_worker.server.sse import EventChannel, start_job_thread


def test_events_from_a_thread_arrive_all_and_in_order():
    async def read_all(n: int) -> list[int]:
        channel = EventChannel(asyncio.get_running_loop())
        producer = threading.Thread(target=lambda: [channel.put(i) for i in range(n)])
        producer.start()
        seen: list[int] = []
        while len(seen) < n:
            if not await channel.wait(5.0):
                break
            seen += channel.take_ready()
        producer.join()
        return seen

    assert asyncio.run(read_all(20_000)) == list(range(20_000))


def test_the_loop_is_woken_only_for_a_waiting_reader(monkeypatch):
    async def count_wakes() -> tuple[int, int, list[int]]:
        loop = asyncio.get_running_loop()
        wakes = 0
        original = loop.call_soon_threadsafe

        def counted(*args):
            nonlocal wakes
            wakes += 1
            return original(*args)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
        channel = EventChannel(loop)
        for i in range(100):  # nobody waits: no wake-ups
            channel.put(i)
        before = wakes
        items = channel.take_ready()
        waiting = asyncio.ensure_future(channel.wait(5.0))
        await asyncio.sleep(0)  # the reader is now waiting on an empty channel
        threading.Thread(target=lambda: [channel.put(i) for i in (100, 101, 102)]).start()
        assert await waiting
        await asyncio.sleep(0.05)
        return before, wakes, items + channel.take_ready()

    before, after, items = asyncio.run(count_wakes())
    assert before == 0
    assert after == 1  # one wake-up for the three events that reached the waiting reader
    assert items == list(range(103))


def test_a_wait_that_times_out_loses_nothing_put_later():
    async def late() -> tuple[bool, bool, list[str]]:
        channel = EventChannel(asyncio.get_running_loop())
        timed_out = await channel.wait(0.01)
        threading.Thread(target=channel.put, args=("late",)).start()
        arrived = await channel.wait(5.0)
        return timed_out, arrived, channel.take_ready()

    assert asyncio.run(late()) == (False, True, ["late"])


def test_a_pause_lets_tokens_gather_and_ends_early_only_for_the_last_event():
    async def paused() -> tuple[float, float, list[str]]:
        loop = asyncio.get_running_loop()
        channel = EventChannel(loop)
        started = loop.time()
        loop.call_later(0.01, lambda: threading.Thread(target=channel.put, args=("token",)).start())
        await channel.pause(0.2)  # a token does not end the pause
        full = loop.time() - started
        started = loop.time()
        loop.call_later(
            0.01, lambda: threading.Thread(target=channel.put, args=("end",), kwargs={"urgent": True}).start()
        )
        await channel.pause(5.0)  # the job's last event does
        short = loop.time() - started
        return full, short, channel.take_ready()

    full, short, items = asyncio.run(paused())
    assert full >= 0.19 and short < 2.0
    assert items == ["token", "end"]


class _SlowToLetGo:
    """An engine whose generator takes a while to close after its last event (freeing a session)."""

    def generate(self, request, cancel):
        try:
            yield TokenEvent(0, 1, "a")
            yield EndEvent(tokens_out=1, stop_reason=StopReason.MAX_TOKENS, decode_time_ms=1, prompt_tokens=1)
        finally:
            time.sleep(0.05)


def test_the_terminal_event_comes_after_the_slot_is_free():
    """A client that sends its next job the moment it reads `end` must find the slot free."""

    async def stream() -> list[tuple[str, bool]]:
        channel = EventChannel(asyncio.get_running_loop())
        freed = threading.Event()
        request = GenerationRequest(job_id="j", prompt="p")
        start_job_thread(_SlowToLetGo(), request, CancelToken(), channel, freed.set)
        seen: list[tuple[str, bool]] = []
        while not seen or seen[-1][0] != "EndEvent":
            assert await channel.wait(5.0)
            seen += [(type(item).__name__, freed.is_set()) for item in channel.take_ready()]
        return seen

    assert asyncio.run(stream())[-1] == ("EndEvent", True)
