"""Forms of the project settings, members and upload pages: coercion only. The
settings' rules are the project service's (labelapp.services.projects), asked in
``ProjectForm.clean`` field by field, so the page refuses what the API refuses."""

from __future__ import annotations

from typing import Any

from django import forms

from labelapp.models import Membership, Project
from labelapp.services.projects import EDITABLE_FIELDS, project_settings_problems

ROLE_CHOICES = Membership.Role.choices
SECTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("Project", ("name", "guidelines")),
    (
        "Labelling",
        (
            "overlap",
            "lease_seconds",
            "label_scale",
            "gold_rate",
            "gold_min_count",
            "gold_min_accuracy",
            "pause_flagged_annotators",
        ),
    ),
    ("Models", ("policy_ref", "reward_base_ref")),
    (
        "Sampling",
        (
            "n_samples",
            "temperature",
            "top_p",
            "max_new_tokens",
            "pairs_per_prompt",
            "pair_mix",
            "round_prompt_limit",
        ),
    ),
    (
        "Retraining and the loop",
        ("retrain_threshold", "promote_tolerance", "auto_rounds", "rm_config"),
    ),
]
assert {f for _s, fs in SECTIONS for f in fs} == set(EDITABLE_FIELDS)


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = list(EDITABLE_FIELDS)
        widgets = {
            "guidelines": forms.Textarea(attrs={"rows": 10, "data-md-source": "1"}),
            "pair_mix": forms.Textarea(attrs={"rows": 3}),
            "rm_config": forms.Textarea(attrs={"rows": 3}),
        }
        labels = {
            "overlap": "Overlap k",
            "lease_seconds": "Lease length (seconds)",
            "n_samples": "Samples per prompt (N)",
            "top_p": "Top-p",
            "max_new_tokens": "Max new tokens",
            "policy_ref": "Policy model",
            "reward_base_ref": "Reward-model base",
            "auto_rounds": "Start a round automatically after each promotion",
            "rm_config": "Reward-model training settings (JSON)",
            "pair_mix": "Pair-selection mix (JSON)",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["rm_config"].required = False
        self.fields["guidelines"].required = False

    def clean_rm_config(self) -> Any:
        value = self.cleaned_data.get("rm_config")
        return {} if value in (None, "") else value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        present = {f: v for f, v in cleaned.items() if f not in self.errors}
        for field, problems in project_settings_problems(present).items():
            for problem in problems:
                self.add_error(field, problem)
        return cleaned

    def sections(self) -> list[tuple[str, list[forms.BoundField]]]:
        return [(title, [self[f] for f in fields]) for title, fields in SECTIONS]

    def validate_unique(self) -> None:
        # The name's uniqueness is the service's to answer, and the CHECK
        # constraints are its bounds (field by field, above), not ModelForm's
        # whole-form "constraint violated" message.
        pass


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=ROLE_CHOICES)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


class InviteForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)
    days = forms.IntegerField(min_value=1, max_value=90, initial=7)


class InviteAcceptForm(forms.Form):
    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, max_length=4096)
