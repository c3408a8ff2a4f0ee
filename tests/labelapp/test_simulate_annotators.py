"""simulate_annotators against a live server: stops on an empty queue, or with
--follow keeps labelling as new pairs arrive until its label or time limit."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from labelapp.models import Label
from tests.labelapp.conftest import make_comparisons, make_project


@pytest.fixture
def small_project(transactional_db):
    project = make_project(overlap=1, lease_seconds=600)
    make_comparisons(project, 2)
    return project


def _simulate(project, url, **kwargs) -> float:
    start = time.monotonic()
    call_command(
        "simulate_annotators",
        project=project.pk,
        annotators=2,
        oracle="length",
        url=url,
        **kwargs,
    )
    return time.monotonic() - start


def test_without_follow_it_stops_when_the_queue_is_empty(small_project, live_server):
    _simulate(small_project, live_server.url)
    assert Label.objects.filter(comparison__project=small_project).count() == 2


def test_follow_labels_the_next_rounds_pairs_until_the_label_budget(
    small_project, live_server, caplog
):
    def next_round() -> None:
        # What a round does after training: new pairs join the queue later.
        try:
            while Label.objects.filter(comparison__project=small_project).count() < 2:
                time.sleep(0.1)
            time.sleep(1.0)
            make_comparisons(small_project, 3, start=100)
        finally:
            connection.close()

    producer = threading.Thread(target=next_round)
    producer.start()
    with caplog.at_level(logging.INFO):
        took = _simulate(
            small_project,
            live_server.url,
            follow=True,
            max_labels=5,
            max_seconds=90,
            poll_seconds=0.2,
        )
    producer.join()
    assert Label.objects.filter(comparison__project=small_project).count() == 5
    assert took < 60  # stopped at the budget, not at the time limit
    # The simulator's HTTP calls are DEBUG detail, not INFO lines.
    assert not [
        r for r in caplog.records if r.name == "httpx" and r.levelno >= logging.INFO
    ]


def test_follow_stops_at_the_time_limit(small_project, live_server):
    took = _simulate(
        small_project, live_server.url, follow=True, max_seconds=3, poll_seconds=0.2
    )
    assert Label.objects.filter(comparison__project=small_project).count() == 2
    assert 2.5 < took < 30


def test_follow_needs_a_limit(small_project):
    with pytest.raises(CommandError, match="--follow needs a limit"):
        _simulate(small_project, "http://127.0.0.1:9", follow=True)


def test_a_server_that_is_not_there_is_a_clear_error(small_project):
    # Port 9 (discard) has nothing listening: the command names the URL and the
    # option instead of printing a thread's traceback and "0 labels".
    with pytest.raises(
        CommandError, match=r"cannot reach Pairloop at http://127\.0\.0\.1:9 .*--url"
    ):
        _simulate(small_project, "http://127.0.0.1:9")
    assert not Label.objects.exists()


def test_the_options_have_help(capsys):
    with pytest.raises(SystemExit):
        call_command("simulate_annotators", "--help")
    text = " ".join(capsys.readouterr().out.split())
    for needle in (
        "--oracle dataset[:FILE]|length|model:DIR",
        "the longer response",
        "Flip each choice with probability P",
        "The running web server",
        "Keep labelling through the rounds",
    ):
        assert needle in text
