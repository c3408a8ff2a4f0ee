"""Load driver for bench/queue_bench.py, run as its own process: simulated annotators
(next -> label) over keep-alive HTTP/1.1 connections, one per annotator, on one
asyncio event loop with raw sockets (no HTTP client library: httpx cost ~1.5-2 ms of
CPU per label, as much as the server's share of the budget; this costs a fraction).

    python bench/queue_driver.py open|closed --port P --project ID --seconds S \\
        [--rate LABELS_PER_S] [--seed N] < tokens (one per line)

Prints one JSON object: next_ms and label_ms latency lists, labels, empty, errors,
elapsed, and the driver's own CPU seconds (so the bench can charge it per label).

open: every annotator works its own arrival slots (one label every
len(tokens)/rate seconds, phase-shifted); `next` latency is counted from the slot's
scheduled time, so a server that falls behind is charged for its backlog (no
coordinated omission). closed: each annotator labels back to back until time is up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

CHOICES = ("a", "b", "tie", "both_bad")
# Per request, as httpx's timeout was: the naive baseline's requests can queue for
# minutes on 1M comparisons; they are counted as errors of the baseline instead.
TIMEOUT = 30.0


class Annotator:
    """One annotator's keep-alive connection. A connection the server closed between
    requests (keep-alive timeout) is reopened and the request re-sent: both requests
    are safe to repeat (`next` returns the lease already held, `label` carries an
    idempotency key)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.auth = f"Authorization: Token {token}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, body: bytes = b"") -> tuple[int, bytes]:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + self.auth
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        for attempt in range(2):
            if self.writer is None:
                await self._connect()
            try:
                self.writer.write(request)
                return await asyncio.wait_for(self._response(), TIMEOUT)
            except TimeoutError:
                self.writer.close()  # the answer may still come: not on this socket
                self.writer = None
                raise
            except (ConnectionError, asyncio.IncompleteReadError):
                self.writer.close()
                self.writer = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _response(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.writer.close()
            self.writer = None
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Stats:
    def __init__(self) -> None:
        self.next_ms: list[float] = []
        self.label_ms: list[float] = []
        self.labels = 0
        self.empty = 0
        self.errors: list[str] = []


async def one_label(
    who: Annotator, project: int, rng: random.Random, stats: Stats, t_sched: float
) -> bool:
    """next then label; False when there was nothing to label or a request failed."""
    try:
        status, body = await who.post(f"/api/v1/projects/{project}/next/")
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        stats.errors.append(f"next: {type(exc).__name__}: {exc}")
        return False
    t_next = time.perf_counter()
    if status == 204:
        stats.empty += 1
        return False
    if status != 200:
        stats.errors.append(f"next {status} {body[:100]!r}")
        return False
    assignment_id = json.loads(body)["assignment_id"]
    payload = json.dumps(
        {
            "choice": rng.choice(CHOICES),
            "strength": rng.randint(1, 4),
            "duration_ms": rng.randint(1000, 60000),
            "idempotency_key": f"bench-{assignment_id}",
        }
    ).encode()
    t1 = time.perf_counter()
    try:
        status, body = await who.post(
            f"/api/v1/assignments/{assignment_id}/label/", payload
        )
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        stats.errors.append(f"label: {type(exc).__name__}: {exc}")
        return False
    t2 = time.perf_counter()
    stats.next_ms.append((t_next - t_sched) * 1000)
    if status == 201:
        stats.labels += 1
        stats.label_ms.append((t2 - t1) * 1000)
    else:
        stats.errors.append(f"label {status} {body[:100]!r}")
    return True


async def open_loop(args, tokens: list[str], stats: Stats) -> None:
    start = time.perf_counter() + 0.5
    period = len(tokens) / args.rate

    async def annotator(i: int, token: str) -> None:
        rng = random.Random(args.seed + i)
        who = Annotator(args.port, token)
        k = 0
        try:
            while True:
                t_sched = start + i / args.rate + k * period
                if t_sched > start + args.seconds:
                    return
                delay = t_sched - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await one_label(who, args.project, rng, stats, t_sched)
                k += 1
        finally:
            who.close()

    await asyncio.gather(*(annotator(i, t) for i, t in enumerate(tokens)))


async def closed_loop(args, tokens: list[str], stats: Stats) -> None:
    stop_at = time.perf_counter() + args.seconds

    async def annotator(i: int, token: str) -> None:
        rng = random.Random(args.seed + i)
        who = Annotator(args.port, token)
        try:
            while time.perf_counter() < stop_at:
                if not await one_label(
                    who, args.project, rng, stats, time.perf_counter()
                ):
                    if stats.errors:
                        return
                    await asyncio.sleep(0.05)
        finally:
            who.close()

    await asyncio.gather(*(annotator(i, t) for i, t in enumerate(tokens)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["open", "closed"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--project", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--rate", type=float, default=100.0, help="labels/s (open)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tokens = sys.stdin.read().split()
    stats = Stats()
    cpu0, t0 = time.process_time(), time.perf_counter()
    run = open_loop if args.mode == "open" else closed_loop
    asyncio.run(run(args, tokens, stats))
    elapsed = time.perf_counter() - t0 - (0.5 if args.mode == "open" else 0.0)
    json.dump(
        {
            "next_ms": stats.next_ms,
            "label_ms": stats.label_ms,
            "labels": stats.labels,
            "empty": stats.empty,
            "errors": stats.errors,
            "elapsed": elapsed,
            "cpu": time.process_time() - cpu0,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
