"""gunicorn config for the baseline server: swaps in the naive queue query."""


def post_worker_init(worker) -> None:
    from bench.naive_queue import install

    install()
