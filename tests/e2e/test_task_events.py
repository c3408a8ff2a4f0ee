"""Issue 19 item 6: workers send Celery events, so a monitor such as Flower sees
the workers and every task's life (sent, received, started, succeeded)."""

from __future__ import annotations

import threading
import time

import pytest

from config.celery import app
from labelapp.tasknames import REAP_STALE_JOBS

pytestmark = pytest.mark.slow


def test_a_real_worker_sends_task_events_a_monitor_can_read(procs):
    seen: list[tuple[str, str]] = []
    ready = threading.Event()

    receivers: list = []

    def listen() -> None:
        # One subscription for the whole test (pub/sub drops what is published
        # while nobody listens); should_stop ends it.
        with app.connection_for_read() as conn:
            recv = app.events.Receiver(
                conn,
                handlers={"*": lambda e: seen.append((e["type"], e.get("name", "")))},
            )
            receivers.append(recv)
            ready.set()
            recv.capture(limit=None, timeout=None, wakeup=False)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(30)
    procs.start_worker()
    try:
        deadline = time.monotonic() + 150
        # worker-online may go out before the receiver's subscription is live;
        # heartbeats follow every couple of seconds.
        while not any(t in ("worker-online", "worker-heartbeat") for t, _ in seen):
            assert time.monotonic() < deadline, (seen, procs.log("worker")[-2000:])
            time.sleep(0.2)
        app.send_task(REAP_STALE_JOBS)
        while not any(t == "task-succeeded" for t, _ in seen):
            assert time.monotonic() < deadline, (seen, procs.log("worker")[-2000:])
            time.sleep(0.2)
    finally:
        for recv in receivers:
            recv.should_stop = True
        listener.join(10)
    types = [t for t, _ in seen]
    assert {"task-sent", "task-received", "task-started"} <= set(types)
    assert ("task-received", REAP_STALE_JOBS) in seen
