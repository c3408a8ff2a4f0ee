"""Simulated annotators that label through the HTTP API exactly as the browser does.

    python manage.py simulate_annotators --project ID --annotators 8 \
        --oracle dataset[:FILE]|length|model:DIR [--noise 0.1] [--url URL] \
        [--follow --max-labels N | --max-seconds S]

Without ``--follow`` each simulated annotator stops when the queue has nothing left
for it. With ``--follow`` they wait for the next round's pairs (polling every
``--poll-seconds``) and keep labelling until ``--max-labels`` labels are in or
``--max-seconds`` have passed (one of the two is required).

Oracles (which response a simulated person prefers):

* ``dataset[:FILE]`` — the preference recorded in a pair file (any format
  ``python -m training train-rm`` reads) when the served pair appears in it; pairs it
  does not contain fall back to ``length``. Without FILE, only ``length`` answers.
* ``length`` — prefers the longer response (a simple, learnable preference for demos
  and tests).
* ``model:DIR`` — prefers the response a reward-model version scores higher.

``--noise p`` flips a choice with probability p. Accounts ``sim-1`` … ``sim-N`` are
created (annotators of the project, with API tokens) if missing.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import httpx
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from labelapp.models import Membership, Project
from training.formats import read_pairs

Oracle = Callable[[list[dict], str, str], float]  # → probability A is preferred


class _HttpCallsAtDebug(logging.Filter):
    """httpx logs every request at INFO; for a simulator that is DEBUG detail."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def quiet_http_log(verbosity: int) -> None:
    """Show httpx's per-request lines (as DEBUG) only at ``--verbosity 2`` or more."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _HttpCallsAtDebug) for f in httpx_log.filters):
        httpx_log.addFilter(_HttpCallsAtDebug())
    httpx_log.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)


def length_oracle(conversation: list[dict], a: str, b: str) -> float:
    return 1.0 if len(a) > len(b) else 0.0 if len(b) > len(a) else 0.5


def dataset_oracle(path: str | None) -> tuple[Oracle, Counter]:
    stats: Counter = Counter()
    table: dict[tuple[str, str], float] = {}
    if path:
        for pair in read_pairs([path]):
            table[(pair.response_a, pair.response_b)] = pair.p_a
            table[(pair.response_b, pair.response_a)] = 1.0 - pair.p_a

    def oracle(conversation: list[dict], a: str, b: str) -> float:
        if (a, b) in table:
            stats["dataset"] += 1
            return table[(a, b)]
        stats["length fallback"] += 1
        return length_oracle(conversation, a, b)

    return oracle, stats


def model_oracle(model_dir: str) -> Oracle:
    from training.scoring import RewardScorer

    scorer = RewardScorer(model_dir)
    lock = threading.Lock()

    def oracle(conversation: list[dict], a: str, b: str) -> float:
        with lock:  # one model shared by the annotator threads
            ra, rb = scorer([conversation, conversation], [a, b])
        return 1.0 if ra > rb else 0.0 if rb > ra else 0.5

    return oracle


class Command(BaseCommand):
    help = "Label a project's queue with simulated annotators over the HTTP API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="Project id.")
        parser.add_argument(
            "--annotators",
            type=int,
            default=8,
            help="How many simulated people (accounts sim-1 … sim-N) label at once.",
        )
        parser.add_argument(
            "--oracle",
            default="dataset",
            metavar="dataset[:FILE]|length|model:DIR",
            help=(
                "Who is preferred: 'dataset:FILE' the preference a pair file "
                "records (other pairs fall back to 'length'), 'length' the longer "
                "response, 'model:DIR' the response a reward model scores higher. "
                "Default: dataset (without FILE: length)."
            ),
        )
        parser.add_argument(
            "--noise",
            type=float,
            default=0.0,
            metavar="P",
            help="Flip each choice with probability P (0..1), like a careless "
            "annotator. Default 0.",
        )
        parser.add_argument(
            "--url",
            default=os.environ.get("PAIRLOOP_URL") or "http://127.0.0.1:8000",
            help="The running web server the labels go to, over the HTTP API "
            "(default: $PAIRLOOP_URL, which ./pairloop manage sets to where the "
            "running `make run` serves, else http://127.0.0.1:8000).",
        )
        parser.add_argument(
            "--follow",
            action="store_true",
            help="Keep labelling through the rounds: when the queue is empty, wait "
            "for new pairs instead of stopping. Needs --max-labels or --max-seconds.",
        )
        parser.add_argument(
            "--max-labels",
            type=int,
            default=0,
            metavar="N",
            help="Stop after N labels in all (0: no limit).",
        )
        parser.add_argument(
            "--max-seconds",
            type=float,
            default=0.0,
            metavar="S",
            help="Stop after S seconds (0: no limit; without --follow, --timeout).",
        )
        parser.add_argument(
            "--poll-seconds",
            type=float,
            default=2.0,
            help="With --follow: how often an idle annotator asks again (default 2).",
        )
        parser.add_argument("--seed", type=int, default=0, help="Random seed.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=600.0,
            help="Without --follow: give up after this many seconds (default 600).",
        )

    def handle(self, *args: object, **opts: object) -> None:
        try:
            project = Project.objects.get(pk=opts["project"])
        except Project.DoesNotExist:
            raise CommandError(f"no project with id {opts['project']}") from None
        if not 0.0 <= opts["noise"] <= 1.0:
            raise CommandError(f"--noise={opts['noise']} must be in [0, 1]")
        if opts["annotators"] < 1:
            raise CommandError("--annotators must be at least 1")
        if opts["max_labels"] < 0 or opts["max_seconds"] < 0:
            raise CommandError("--max-labels and --max-seconds must be 0 or more")
        follow = bool(opts["follow"])
        if follow and not (opts["max_labels"] or opts["max_seconds"]):
            raise CommandError(
                "--follow needs a limit: --max-labels N or --max-seconds S"
            )
        if opts["poll_seconds"] <= 0:
            raise CommandError("--poll-seconds must be more than 0")
        quiet_http_log(int(opts.get("verbosity", 1)))
        limit_s = opts["max_seconds"] or (0 if follow else opts["timeout"])
        started = time.monotonic()
        deadline = started + limit_s if limit_s else float("inf")
        kind, _, arg = str(opts["oracle"]).partition(":")
        stats: Counter = Counter()
        if kind == "dataset":
            oracle, stats = dataset_oracle(arg or None)
        elif kind == "length":
            oracle = length_oracle
        elif kind == "model" and arg:
            oracle = model_oracle(arg)
        else:
            raise CommandError(
                f"--oracle={opts['oracle']!r}: use dataset[:FILE], length or model:DIR"
            )
        tokens = self._accounts(project, opts["annotators"])
        budget = [opts["max_labels"] or 10**12]
        lock = threading.Lock()
        counts: Counter = Counter()
        errors: list[str] = []

        def annotate(i: int, token: str) -> None:
            try:
                label_loop(i, token)
            except httpx.HTTPError as exc:
                errors.append(
                    f"cannot reach Pairloop at {opts['url']} ({exc}); is it running "
                    "there? Give its address with --url"
                )

        def label_loop(i: int, token: str) -> None:
            rng = random.Random(opts["seed"] * 1000 + i)
            headers = {"Authorization": f"Token {token}"}
            with httpx.Client(
                base_url=opts["url"], headers=headers, timeout=30
            ) as http:
                while time.monotonic() < deadline:
                    with lock:
                        if budget[0] <= 0:
                            return
                        budget[0] -= 1
                    r = http.post(f"/api/v1/projects/{project.pk}/next/")
                    if r.status_code == 204:
                        with lock:
                            budget[0] += 1  # nothing was labelled
                        if not follow:
                            return
                        # The next round's pairs come after training: wait.
                        time.sleep(
                            max(
                                0.0,
                                min(opts["poll_seconds"], deadline - time.monotonic()),
                            )
                        )
                        continue
                    if r.status_code != 200:
                        errors.append(f"next: {r.status_code} {r.text[:200]}")
                        return
                    item = r.json()
                    p_a = oracle(
                        item["prompt"]["messages"], item["a"]["text"], item["b"]["text"]
                    )
                    choice = "a" if rng.random() < p_a else "b"
                    if p_a == 0.5 and rng.random() < 0.2:
                        choice = "tie"
                    if (
                        opts["noise"]
                        and rng.random() < opts["noise"]
                        and choice != "tie"
                    ):
                        choice = "b" if choice == "a" else "a"
                    body = {
                        "choice": choice,
                        "strength": rng.randint(1, 4),
                        "duration_ms": rng.randint(2000, 20000),
                        "idempotency_key": uuid.uuid4().hex,
                    }
                    url = f"/api/v1/assignments/{item['assignment_id']}/label/"
                    r = http.post(url, json=body)
                    if r.status_code not in (200, 201):
                        errors.append(f"label: {r.status_code} {r.text[:200]}")
                        return
                    with lock:
                        counts["labels"] += 1

        threads = [
            threading.Thread(target=annotate, args=(i, tok), daemon=True)
            for i, tok in enumerate(tokens)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        summary = f"{counts['labels']} labels by {len(tokens)} simulated annotators"
        summary += f" in {time.monotonic() - started:.0f} s"
        if stats:
            summary += " (" + ", ".join(f"{k}: {v}" for k, v in stats.items()) + ")"
        self.stdout.write(summary)
        if errors:
            raise CommandError("; ".join(errors[:5]))

    def _accounts(self, project: Project, n: int) -> list[str]:
        user_model = get_user_model()
        tokens = []
        for i in range(1, n + 1):
            user, created = user_model.objects.get_or_create(username=f"sim-{i}")
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            Membership.objects.get_or_create(project=project, user=user)
            tokens.append(Token.objects.get_or_create(user=user)[0].key)
        return tokens
