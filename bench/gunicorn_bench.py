"""gunicorn config for the benchmark server (bench/queue_bench.py): load and warm the
app in each worker before it takes requests, then freeze the heap."""

from __future__ import annotations

import gc


def post_worker_init(worker) -> None:
    # Django builds the URLconf (and so imports every view, serializer and DRF)
    # on the first request; do it now, with the task module label_submit
    # imports on a comparison's completion, so no measured request pays for it.
    from django.urls import get_resolver

    import labelapp.tasks  # noqa: F401

    get_resolver().url_patterns  # noqa: B018
    # Move the ~160k objects made at import time to the permanent generation:
    # the collector stops re-scanning them, and a full collection stops costing
    # ~80 ms (a latency spike every few hundred requests) on a 2-core machine.
    gc.collect()
    gc.freeze()
