"""Recompute Comparison.mean_strength with the A/B-only rule.

Until now the stored aggregate averaged the strength of every non-rejected label,
ties and "both bad" included (the UI sends strength 1 for those), while the exports
averaged A and B labels only. ``labelapp.aggregation.aggregate_labels`` now uses the
A/B-only rule everywhere; this brings the stored values of existing comparisons in
line. The rule is restated here in SQL rather than imported, so the migration keeps
doing what it did when it was written.

It runs outside one big transaction, in batches of comparison ids, so no lock is
held on many rows at once on a large table. A label written during the migration
by this code computes its comparison's aggregates itself. Reversing is a no-op: the
old values are not worth keeping, and the rows stay valid either way.
"""

from django.db import migrations, transaction
from django.db.models import Avg, Exists, OuterRef, Subquery

BATCH = 2000


def recompute_mean_strength(apps, schema_editor):
    Comparison = apps.get_model("labelapp", "Comparison")
    Label = apps.get_model("labelapp", "Label")
    db = schema_editor.connection.alias
    mean_a_b = Subquery(
        Label.objects.using(db)
        .filter(comparison=OuterRef("pk"), choice__in=["a", "b"])
        .exclude(review_state="rejected")
        .values("comparison")
        .annotate(m=Avg("strength"))
        .values("m")
    )
    with_labels = (
        Comparison.objects.using(db)
        .filter(Exists(Label.objects.using(db).filter(comparison=OuterRef("pk"))))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    last = 0
    while True:
        ids = list(with_labels.filter(pk__gt=last)[:BATCH])
        if not ids:
            return
        with transaction.atomic(using=db):
            Comparison.objects.using(db).filter(pk__in=ids).update(
                mean_strength=mean_a_b
            )
        last = ids[-1]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("labelapp", "0003_job_kind_labels"),
    ]

    operations = [
        migrations.RunPython(
            recompute_mean_strength, migrations.RunPython.noop, elidable=True
        ),
    ]
