"""gunicorn config for the baseline server: swaps in the naive queue query, and is
otherwise set up as the benchmark server (bench/gunicorn_bench.py)."""

from bench import gunicorn_bench


def post_worker_init(worker) -> None:
    from bench.naive_queue import install

    install()
    gunicorn_bench.post_worker_init(worker)
