"""gunicorn config for the plain-view server of bench/queue_bench.py ``--ablate plain``:
bench/gunicorn_bench.py's warm-up, with the URLconf that routes next and label to the
plain Django views in bench/plain_views.py (run with the fast lane off)."""

from __future__ import annotations

from bench.gunicorn_bench import post_worker_init as _warm


def post_worker_init(worker) -> None:
    from django.conf import settings

    # Before the warm-up builds the resolver; each request reads it from settings.
    settings.ROOT_URLCONF = "bench.plain_views"
    _warm(worker)
