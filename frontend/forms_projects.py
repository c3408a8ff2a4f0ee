"""Forms of the project settings, members and upload pages: coercion only. The
settings' rules are the project service's (labelapp.services.projects), asked in
``ProjectForm.clean`` field by field, so the page refuses what the API refuses."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from labelapp.models import Membership, Project
from labelapp.services.projects import (
    EDITABLE_FIELDS,
    SECRET_REFUSED,
    project_settings_problems,
)

ROLE_CHOICES = Membership.Role.choices
SECTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("Project", ("name", "guidelines")),
    (
        "Labelling",
        (
            "overlap",
            "lease_seconds",
            "undo_grace_seconds",
            "label_scale",
            "gold_rate",
            "gold_min_count",
            "gold_min_accuracy",
            "pause_flagged_annotators",
            "selection_strategy",
        ),
    ),
    (
        "Models",
        ("policy_ref", "reward_base_ref", "sampler_backend", "sampler_config"),
    ),
    (
        "Sampling",
        (
            "n_samples",
            "temperature",
            "top_p",
            "max_new_tokens",
            "pairs_per_prompt",
            "pair_mix",
            "round_ranking_k",
            "round_prompt_limit",
        ),
    ),
    (
        "Retraining and the loop",
        ("retrain_threshold", "promote_tolerance", "auto_rounds", "rm_config"),
    ),
    ("Policy training", ("auto_policy", "policy_min_examples", "policy_config")),
]
assert {f for _s, fs in SECTIONS for f in fs} == set(EDITABLE_FIELDS)


class StrategyField(forms.CharField):
    """A selection strategy typed as its name (uncertainty) or a mix as a JSON
    object; the service's rules judge the value."""

    def __init__(self, *, encoder: Any = None, decoder: Any = None, **kwargs: Any):
        super().__init__(**kwargs)  # (the model's JSONField passes its codecs)

    def prepare_value(self, value: Any) -> Any:
        return value if isinstance(value, str) else json.dumps(value)

    def to_python(self, value: Any) -> Any:
        text = str(value or "").strip()
        if not text.startswith("{"):
            return text.strip('"')
        try:
            return json.loads(text)
        except ValueError:
            raise ValidationError("A mix must be a JSON object of weights.") from None


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = list(EDITABLE_FIELDS)
        field_classes = {"selection_strategy": StrategyField}
        widgets = {
            "guidelines": forms.Textarea(attrs={"rows": 10, "data-md-source": "1"}),
            "pair_mix": forms.Textarea(attrs={"rows": 3}),
            "rm_config": forms.Textarea(attrs={"rows": 3}),
            "policy_config": forms.Textarea(attrs={"rows": 3}),
            "sampler_config": forms.Textarea(attrs={"rows": 3}),
        }
        labels = {
            "overlap": "Overlap k",
            "lease_seconds": "Lease length (seconds)",
            "undo_grace_seconds": "Undo and edit window for annotators (seconds, "
            "0 = off)",
            "n_samples": "Samples per prompt (N)",
            "top_p": "Top-p",
            "max_new_tokens": "Max new tokens",
            "policy_ref": "Policy model",
            "reward_base_ref": "Reward-model base",
            "auto_rounds": "Start a round automatically after each promotion",
            "rm_config": "Reward-model training settings (JSON)",
            "pair_mix": "Pair-selection mix (JSON)",
            "round_ranking_k": "Ranking task per prompt: K samples (0 = pairs only)",
            "selection_strategy": "Queue order: random, uncertainty, disagreement, "
            'gap, or a mix as JSON ({"uncertainty": 0.5, "random": 0.5})',
            "auto_policy": "Train the policy automatically after a round",
            "policy_min_examples": "Usable examples needed to train the policy",
            "policy_config": "Policy training, guard and promotion settings (JSON)",
            "sampler_backend": "Sampler backend",
            "sampler_config": "Sampler settings (JSON; the API key by its "
            "environment variable's name, api_key_env)",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["rm_config"].required = False
        self.fields["policy_config"].required = False
        self.fields["sampler_config"].required = False
        self.fields["guidelines"].required = False

    def clean_rm_config(self) -> Any:
        value = self.cleaned_data.get("rm_config")
        return {} if value in (None, "") else value

    def clean_policy_config(self) -> Any:
        value = self.cleaned_data.get("policy_config")
        return {} if value in (None, "") else value

    def clean_sampler_config(self) -> Any:
        value = self.cleaned_data.get("sampler_config")
        return {} if value in (None, "") else value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        present = {f: v for f, v in cleaned.items() if f not in self.errors}
        # ModelForm copies the values onto the instance after clean(): it holds
        # the stored settings here, against which a one-field change is checked.
        found = project_settings_problems(present, project=self.instance)
        for field, problems in found.items():
            for problem in problems:
                self.add_error(field, problem)
        if any(SECRET_REFUSED in p for p in found.get("sampler_config", [])):
            # The page shows the form again: not with the secret in it.
            self.data = self.data.copy()
            self.data["sampler_config"] = json.dumps(self.instance.sampler_config)
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
