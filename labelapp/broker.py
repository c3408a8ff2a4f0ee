"""Sending Celery tasks by name, failing fast when the broker is down.

Domain code never waits on the broker: a label that completes a comparison, or an
admin starting a job, must answer in milliseconds even when Redis is gone. Celery's
``send_task`` on its pooled connection retries the connection (about 0.6 s with the
default policy, longer with a slow DNS or a dead host) before it fails; here every
publish goes over one connection of our own with no retries and short socket
timeouts, and a failure is logged and reported, never raised. What is lost is
recovered by beat: the periodic trigger check and the reaper, which re-sends pending
jobs whose message never reached a worker (``labelapp.jobs.jobs_reap_stale``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

from celery import current_app

log = logging.getLogger(__name__)

# Seconds: a healthy Redis answers in well under a millisecond on the same network.
CONNECT_TIMEOUT = 0.5
SOCKET_TIMEOUT = 0.5


class Publisher:
    """Publishes tasks by name on one reused, non-retrying broker connection.

    ``app`` defaults to Celery's current app (config.celery's, set when Django loads
    the ``config`` package), so labelapp never imports ``config.celery``.
    """

    def __init__(self, app: Any = None) -> None:
        self._app = app
        self._conn: Any = None
        self._lock = threading.Lock()  # a kombu connection is not thread-safe

    @property
    def app(self) -> Any:
        return self._app or current_app

    def send(
        self, name: str, args: Sequence[Any] = (), countdown: float | None = None
    ) -> bool:
        """Send task ``name``; False (and a warning in the log) when the broker
        could not take it."""
        with self._lock:
            try:
                if self._conn is None:
                    options = dict(self.app.conf.broker_transport_options or {})
                    options.update(
                        max_retries=0,  # kombu: fail on the first refused connect
                        socket_connect_timeout=CONNECT_TIMEOUT,
                        socket_timeout=SOCKET_TIMEOUT,
                    )
                    self._conn = self.app.connection_for_write(
                        transport_options=options
                    )
                self.app.send_task(
                    name,
                    args=list(args),
                    countdown=countdown,
                    connection=self._conn,
                    retry=False,
                )
                return True
            except Exception as exc:  # broker down, refused, timed out, DNS, ...
                log.warning("could not send task %s%s: %s", name, list(args), exc)
                self._reset()
                return False

    def reset(self) -> None:
        """Drop the connection (tests that repoint the broker; after a fork)."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to free
                self._conn.release()
            self._conn = None


publisher = Publisher()
