"""Forms of the reviewer and admin pages (input validation only; services write)."""

from __future__ import annotations

from typing import Any

from django import forms

from labelapp.datasets.exports import FORMATS, KINDS
from labelapp.models import Label
from labelapp.services.gold import GOLD_CHOICES
from labelapp.services.reviews import REVIEW_NOTE_MAX_CHARS

GOLD_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie"}


class ReviewForm(forms.Form):
    state = forms.ChoiceField(
        choices=[
            (Label.ReviewState.ACCEPTED, "Accept"),
            (Label.ReviewState.REJECTED, "Reject"),
        ]
    )
    note = forms.CharField(required=False, max_length=REVIEW_NOTE_MAX_CHARS)


class BulkAcceptForm(forms.Form):
    min_gold_accuracy = forms.FloatField(
        required=False,
        min_value=0,
        max_value=100,
        label="only annotators with gold accuracy of at least (%)",
    )


class GoldForm(forms.Form):
    gold_choice = forms.ChoiceField(
        choices=[("", "Not gold"), *((c, GOLD_LABELS[c]) for c in GOLD_CHOICES)],
        required=False,
    )


class ExportForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[
            ("preferences", "Preference pairs (TRL format)"),
            ("sft", "SFT examples (best of each round)"),
            ("labels", "Raw labels"),
        ]
    )
    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS], initial="jsonl")
    shape = forms.ChoiceField(
        choices=[("messages", "Conversations (messages)"), ("strings", "Strings")],
        initial="messages",
        label="Text shape",
    )
    min_agreement = forms.FloatField(
        required=False,
        min_value=0.0,
        max_value=1.0,
        help_text="Preferences: drop pairs whose label agreement is below this.",
    )
    reveal_annotators = forms.BooleanField(
        required=False, help_text="Labels: usernames instead of pseudonyms."
    )

    def clean_kind(self) -> str:
        kind = self.cleaned_data["kind"]
        assert kind in KINDS
        return kind

    def job_params(self) -> dict[str, Any]:
        """The Job params (see labelapp.datasets.export_jobs.JOB_OPTION_FIELDS)."""
        data = self.cleaned_data
        params: dict[str, Any] = {
            "kind": data["kind"],
            "format": data["format"],
            "messages": data["shape"] == "messages",
            "reveal_annotators": bool(data["reveal_annotators"]),
        }
        if data.get("min_agreement") is not None:
            params["min_agreement"] = data["min_agreement"]
        return params


class RankingGoldForm(forms.Form):
    """The ranking review page's gold buttons: make the ranking shown the item's
    gold order, or stop the item being gold."""

    MARK = "mark"
    UNMARK = "unmark"
    action = forms.ChoiceField(
        choices=[(MARK, "Make this ranking the gold order"), (UNMARK, "Unmark gold")]
    )
