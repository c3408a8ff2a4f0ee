"""Tie and "both bad" labels have no strength: null the ones stored with one.

The compare page used to send strength 1 ("negligibly better / unsure") with them
because the API required a strength; nobody was asked. ``label_submit`` now stores
null for them. ``Comparison.mean_strength`` needs no change: it has averaged A and B
labels only since 0004. Batched by label id, outside one big transaction, as 0004
is. Reversing is a no-op: the old value (always the UI's 1) carried no answer.
"""

from django.db import migrations, transaction

BATCH = 5000


def null_strength_of_tie_and_both_bad(apps, schema_editor):
    Label = apps.get_model("labelapp", "Label")
    db = schema_editor.connection.alias
    todo = (
        Label.objects.using(db)
        .filter(choice__in=["tie", "both_bad"], strength__isnull=False)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    last = 0
    while True:
        ids = list(todo.filter(pk__gt=last)[:BATCH])
        if not ids:
            return
        with transaction.atomic(using=db):
            Label.objects.using(db).filter(pk__in=ids).update(strength=None)
        last = ids[-1]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("labelapp", "0009_comparison_origin_api"),
    ]

    operations = [
        migrations.RunPython(
            null_strength_of_tie_and_both_bad,
            migrations.RunPython.noop,
            elidable=True,
        ),
    ]
