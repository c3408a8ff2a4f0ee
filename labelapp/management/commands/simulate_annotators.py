"""Simulated annotators that label through the HTTP API exactly as the browser does.

    python manage.py simulate_annotators --project ID --annotators 8 \
        --oracle dataset[:FILE]|length|model:DIR [--noise 0.1] [--url URL]

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

Oracle = Callable[[list[dict], str, str], float]  # → probability A is preferred


def length_oracle(conversation: list[dict], a: str, b: str) -> float:
    return 1.0 if len(a) > len(b) else 0.0 if len(b) > len(a) else 0.5


def dataset_oracle(path: str | None) -> tuple[Oracle, Counter]:
    stats: Counter = Counter()
    table: dict[tuple[str, str], float] = {}
    if path:
        from training.data import read_pairs

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
        parser.add_argument("--project", type=int, required=True)
        parser.add_argument("--annotators", type=int, default=8)
        parser.add_argument("--oracle", default="dataset")
        parser.add_argument("--noise", type=float, default=0.0)
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--max-labels", type=int, default=0, help="0 = until done")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--timeout", type=float, default=600.0)

    def handle(self, *args: object, **opts: object) -> None:
        try:
            project = Project.objects.get(pk=opts["project"])
        except Project.DoesNotExist:
            raise CommandError(f"no project with id {opts['project']}") from None
        if not 0.0 <= opts["noise"] <= 1.0:
            raise CommandError(f"--noise={opts['noise']} must be in [0, 1]")
        if opts["annotators"] < 1:
            raise CommandError("--annotators must be at least 1")
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
            rng = random.Random(opts["seed"] * 1000 + i)
            deadline = time.monotonic() + opts["timeout"]
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
                        return
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
