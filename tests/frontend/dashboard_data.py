"""A small but realistic project for the reviewer/admin page tests and screenshots:
four annotators (one careless: fast, left-biased, wrong on gold), two rejection-
sampling rounds with rewards, two reward-model versions with training metrics,
imported comparisons and gold items. Deterministic (seeded)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from labelapp.models import (
    Comparison,
    Label,
    Membership,
    ModelVersion,
    Project,
    Prompt,
    Response,
    Round,
    content_hash,
    text_hash,
)
from labelapp.services.aggregates import comparison_aggregate_refresh

PASSWORD = "dash-password-7Qx"
P_A = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": None}
QUESTIONS = [
    "How do I reverse a list in Python?",
    "Explain what a **hash map** is in two sentences.",
    "Write a haiku about unit tests.",
    "What is the difference between `git merge` and `git rebase`?",
    "Give me three tips for a first marathon.",
    "Why is the sky blue?",
]
RATIONALES = [
    "A answers the question; B drifts off topic.",
    "B has a working code example.",
    "Both fine, B is shorter.",
    "",
    "",
]


@dataclass
class DemoProject:
    project: Project
    admin: Any
    reviewer: Any
    annotators: list[Any]
    careless: Any
    outsider: Any
    comparisons: list[Comparison] = field(default_factory=list)
    gold: list[Comparison] = field(default_factory=list)


def _user(name: str, password: str | None) -> Any:
    return get_user_model().objects.create_user(username=name, password=password)


def _response(prompt: Prompt, text: str, **kwargs: Any) -> Response:
    return Response.objects.create(
        prompt=prompt, text=text, text_hash=text_hash(text), **kwargs
    )


def _prompt(project: Project, question: str) -> Prompt:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": question},
    ]
    prompt, _ = Prompt.objects.get_or_create(
        project=project,
        content_hash=content_hash(messages),
        defaults={"messages": messages},
    )
    return prompt


def _label(
    rng: random.Random,
    comparison: Comparison,
    user: Any,
    truth: str,
    *,
    careless: bool,
    when: Any,
) -> Label:
    """An unsaved label (the builder bulk-creates them)."""
    swapped = rng.random() < 0.5
    if careless:
        # Picks the left side most of the time, whatever it shows.
        left = rng.random() < 0.8
        choice = ("b" if swapped else "a") if left else ("a" if swapped else "b")
        duration = rng.randint(900, 2500)
    else:
        roll = rng.random()
        other = "b" if truth == "a" else "a"
        choice = truth if roll < 0.82 else ("tie" if roll < 0.9 else other)
        duration = rng.randint(6000, 45000)
    return Label(
        comparison=comparison,
        annotator=user,
        choice=choice,
        strength=rng.randint(1, 4) if choice in ("a", "b") else None,
        p_a=P_A[choice],
        rationale="" if careless else rng.choice(RATIONALES),
        duration_ms=duration,
        shown_swapped=swapped,
        created_at=when,
    )


def build_demo_project(
    *, name: str = "Helpfulness demo", password: str | None = None, seed: int = 7
) -> DemoProject:
    rng = random.Random(seed)
    now = timezone.now()
    project = Project.objects.create(
        name=name,
        overlap=3,
        gold_min_count=2,
        gold_min_accuracy=0.7,
        guidelines="Prefer the **more helpful** answer.",
    )
    admin = _user("admin", password)
    reviewer = _user("reviewer", password)
    names = ["alice", "bob", "carol", "dave"]
    annotators = [_user(n, password) for n in names]
    outsider = _user("outsider", password)
    Membership.objects.create(project=project, user=admin, role="admin")
    Membership.objects.create(project=project, user=reviewer, role="reviewer")
    for user in annotators:
        Membership.objects.create(project=project, user=user)
    careless = annotators[-1]

    versions = []
    for v in (1, 2):
        history = [
            {"step": s * 10, "loss": round(0.7 * (0.93 ** (s * v)) + 0.05 * v, 4)}
            for s in range(1, 13)
        ]
        versions.append(
            ModelVersion.objects.create(
                project=project,
                version=v,
                base_ref="builtin:minilm-l6",
                status="promoted" if v == 2 else "ready",
                n_pairs=40 * v,
                metrics={
                    "history": history,
                    "eval": {
                        "accuracy": 0.61 + 0.08 * v,
                        "accuracy_ci95": [0.5 + 0.05 * v, 0.75 + 0.08 * v],
                    },
                },
            )
        )
    # Two policy versions: v1 promoted (RM and humans agree), v2 refused.
    for v, (rm, human, gain, status) in {
        1: ((0.64, 0.55, 0.72), (0.6, 0.39, 0.78), 0.21, "promoted"),
        2: ((0.52, 0.43, 0.61), (0.35, 0.18, 0.57), 0.02, "ready"),
    }.items():
        ModelVersion.objects.create(
            project=project,
            kind=ModelVersion.Kind.POLICY,
            version=v,
            base_ref="builtin:smollm2-135m-instruct",
            status=status,
            metrics={
                "eval": {
                    "win": dict(
                        zip(("win_rate", "ci_low", "ci_high"), rm, strict=True)
                    ),
                    "reward_gain": gain,
                },
                "audit": {
                    "human": dict(
                        zip(("rate", "ci_low", "ci_high"), human, strict=True)
                    )
                },
            },
        )
    demo = DemoProject(project, admin, reviewer, annotators, careless, outsider)

    labels: list[Label] = []

    def add(comparison: Comparison, truth: str, labellers: list[Any]) -> None:
        for i, user in enumerate(labellers):
            when = now - timedelta(days=rng.randint(0, 9), minutes=i)
            labels.append(
                _label(
                    rng, comparison, user, truth, careless=user == careless, when=when
                )
            )
        demo.comparisons.append(comparison)

    for number, mv in ((1, versions[0]), (2, versions[1])):
        rnd = Round.objects.create(
            project=project,
            number=number,
            policy_ref="builtin:smollm2-135m-instruct",
            reward_version=mv,
            status="done",
            stats={"diversity": {"distinct_1": 0.4 + 0.05 * number, "distinct_2": 0.7}},
        )
        for q in QUESTIONS:
            prompt = _prompt(project, f"{q} (round {number})")
            responses = [
                _response(
                    prompt,
                    f"Answer {k} to *{q}*\n\n" + "More detail. " * rng.randint(1, 12),
                    origin="round",
                    round=rnd,
                    reward=rng.gauss(0.3 * number, 1.0),
                    reward_version=mv,
                    token_count=rng.randint(20, 200),
                )
                for k in range(4)
            ]
            ranked = sorted(responses, key=lambda r: -r.reward)
            for strategy, pair in (
                ("best_vs_runner_up", ranked[:2]),
                ("best_vs_random", [ranked[0], rng.choice(ranked[2:])]),
            ):
                ra, rb = sorted(pair, key=lambda r: r.pk)
                comparison = Comparison.objects.create(
                    project=project,
                    prompt=prompt,
                    response_a=ra,
                    response_b=rb,
                    origin="round",
                    round=rnd,
                    strategy=strategy,
                    labels_required=3,
                )
                truth = "a" if ra.reward > rb.reward else "b"
                add(comparison, truth, rng.sample(annotators, 3))

    # Imported comparisons; the first four are gold, and the careless annotator
    # labels all of those.
    for i in range(6):
        prompt = _prompt(project, f"Imported question {i}: what does `x += 1` do?")
        ra = _response(prompt, "It adds one to `x`.\n\n```python\nx = x + 1\n```")
        rb = _response(prompt, f"It does nothing useful ({i}).")
        comparison = Comparison.objects.create(
            project=project,
            prompt=prompt,
            response_a=ra,
            response_b=rb,
            labels_required=3,
            is_gold=i < 4,
            gold_choice="a" if i < 4 else "",
        )
        others = [u for u in annotators if u != careless]
        labellers = [careless, *rng.sample(others, 2)] if i < 4 else others
        add(comparison, "a", labellers)
        if i < 4:
            # Three of the four gold answers wrong: the careless annotator is
            # flagged (25% < 70% on 4 >= 2 gold labels) whatever the seed.
            wrong = i < 3
            careless_label = labels[-3]
            careless_label.choice = "b" if wrong else "a"
            careless_label.p_a = 0.0 if wrong else 1.0
            careless_label.strength = 2
            demo.gold.append(comparison)

    # bulk_create stamps auto_now_add fields with now (on the objects too): keep the
    # intended times and write them back afterwards, spread over ten days.
    whens = [label.created_at for label in labels]
    Label.objects.bulk_create(labels)
    for label, when in zip(labels, whens, strict=True):
        label.created_at = when
    Label.objects.bulk_update(labels, ["created_at"])
    counts: dict[int, int] = {}
    for label in labels:
        counts[label.comparison_id] = counts.get(label.comparison_id, 0) + 1
    for comparison in demo.comparisons:
        comparison.labels_count = counts[comparison.pk]
        comparison.status = "complete"
        comparison.completed_at = now
        comparison_aggregate_refresh(comparison)
    Comparison.objects.bulk_update(
        demo.comparisons, ["labels_count", "status", "completed_at"]
    )
    return demo
