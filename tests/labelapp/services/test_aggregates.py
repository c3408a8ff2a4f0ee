"""services.aggregates: aggregates over non-rejected labels (refresh on review:
test_reviews.py)."""

from __future__ import annotations

import importlib

import pytest

from labelapp.models import Comparison, Label
from labelapp.services.aggregates import aggregate_labels
from tests.labelapp.conftest import make_comparisons, make_user


@pytest.mark.parametrize(
    ("labels", "p_a", "majority", "agreement", "strength", "both_bad"),
    [
        ([], None, "", None, None, 0),
        ([("a", 1.0, 4), ("a", 1.0, 2), ("b", 0.0, 3)], 2 / 3, "a", 2 / 3, 3.0, 0),
        # Only A and B labels carry a strength: ties and "both bad" must not pull
        # mean_strength (all labels would give 2.5, 2.0 and 1.0 here).
        ([("tie", 0.5, 4), ("b", 0.0, 1)], 0.25, "", 0.5, 1.0, 0),
        ([("tie", 0.5, 1), ("a", 1.0, 4), ("b", 0.0, 2)], 0.5, "", 1 / 3, 3.0, 0),
        ([("both_bad", None, 1), ("both_bad", None, 1), ("a", 1.0, 4)], 1.0,
         "both_bad", 2 / 3, 4.0, 2),
        ([("both_bad", None, 1)], None, "both_bad", 1.0, None, 1),
        ([("tie", 0.5, 1), ("tie", 0.5, 3)], 0.5, "tie", 1.0, None, 0),
        ([("a", 0.8, 3), ("b", 0.3, None)], 0.55, "", 0.5, 3.0, 0),  # soft imports
    ],
)  # fmt: skip
def test_aggregate_labels(labels, p_a, majority, agreement, strength, both_bad):
    agg = aggregate_labels(labels)
    assert agg.p_a == (pytest.approx(p_a) if p_a is not None else None)
    assert agg.majority == majority
    assert agg.agreement == (pytest.approx(agreement) if agreement else None)
    assert agg.mean_strength == strength
    assert agg.both_bad_count == both_bad
    assert agg.n_labels == len(labels)
    assert agg.n_preference == len(labels) - both_bad


def test_aggregate_labels_takes_any_iterable() -> None:
    agg = aggregate_labels(
        iter([("a", 1.0, 3), ("a", 1.0, 4), ("both_bad", None, None)])
    )
    assert agg.p_a == 1.0 and agg.majority == "a"
    assert agg.agreement == pytest.approx(2 / 3) and agg.mean_strength == 3.5


def test_migration_recomputes_stored_mean_strength(project, monkeypatch):
    """0004 brings mean_strength stored under the old all-labels rule in line with
    aggregate_labels; comparisons without labels are left alone."""
    from types import SimpleNamespace

    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module(
        "labelapp.migrations.0004_mean_strength_a_b_only"
    )
    mixed, ties_only, unlabelled = make_comparisons(project, 3)
    users = [make_user(project=project) for _ in range(4)]
    rows = [
        (mixed, users[0], "a", 1.0, 4, "pending"),
        (mixed, users[1], "tie", 0.5, 1, "accepted"),
        (mixed, users[2], "both_bad", None, 1, "pending"),
        (mixed, users[3], "b", 0.0, 1, "rejected"),
        (ties_only, users[0], "tie", 0.5, 1, "pending"),
    ]
    for comparison, user, choice, p_a, strength, state in rows:
        Label.objects.create(
            comparison=comparison,
            annotator=user,
            choice=choice,
            p_a=p_a,
            strength=strength,
            review_state=state,
        )
    # What the old rule stored (all non-rejected labels with a strength).
    Comparison.objects.filter(pk=mixed.pk).update(mean_strength=2.0)
    Comparison.objects.filter(pk__in=[ties_only.pk, unlabelled.pk]).update(
        mean_strength=1.0
    )
    monkeypatch.setattr(migration, "BATCH", 1)  # every comparison its own batch
    migration.recompute_mean_strength(apps, SimpleNamespace(connection=connection))
    stored = dict(Comparison.objects.values_list("pk", "mean_strength"))
    assert stored[mixed.pk] == 4.0
    assert stored[ties_only.pk] is None
    assert stored[unlabelled.pk] == 1.0
