"""services.gold: the one gold rule, and the services that mark gold items."""

from __future__ import annotations

import pytest

from labelapp.errors import ValidationFailed
from labelapp.models import Comparison
from labelapp.services.gold import comparison_mark_gold, gold_choice_check
from tests.labelapp.conftest import make_comparisons

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("is_gold", "gold_choice", "error"),
    [
        (True, "a", None),
        (True, "b", None),
        (True, "tie", None),
        (True, "both_bad", "cannot be a gold answer"),
        (True, "", "needs an answer"),
        (False, "", None),
        (False, "a", "only a gold comparison has an answer"),
        (False, "both_bad", "only a gold comparison has an answer"),
    ],
)
def test_gold_choice_check(is_gold, gold_choice, error):
    if error is None:
        gold_choice_check(is_gold=is_gold, gold_choice=gold_choice)
        return
    with pytest.raises(ValidationFailed, match=error) as exc:
        gold_choice_check(is_gold=is_gold, gold_choice=gold_choice)
    assert str(exc.value).startswith("gold_choice: ")


def test_mark_gold_refuses_both_bad_and_unmarks(project):
    (comparison,) = make_comparisons(project, 1)
    with pytest.raises(ValidationFailed, match="gold_choice"):
        comparison_mark_gold(comparison=comparison, choice="both_bad", by=None)
    comparison.refresh_from_db()
    assert not comparison.is_gold
    marked = comparison_mark_gold(comparison=comparison, choice="tie", by=None)
    assert (marked.is_gold, marked.gold_choice) == (True, "tie")
    unmarked = comparison_mark_gold(comparison=comparison, choice="", by=None)
    assert (unmarked.is_gold, unmarked.gold_choice) == (False, "")
    assert Comparison.objects.get(pk=comparison.pk).gold_choice == ""
