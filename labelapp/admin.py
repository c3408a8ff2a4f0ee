import json

from django import forms
from django.contrib import admin

from labelapp import models
from labelapp.services.projects import SECRET_REFUSED, project_settings_problems


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    autocomplete_fields = ["user"]


class ProjectAdminForm(forms.ModelForm):
    """The sampler settings and the selection strategy are refused here as
    everywhere (the one validator in labelapp.services.projects): no secret reaches
    the database through the admin."""

    class Meta:
        model = models.Project
        # Every editable column; the inline edits the memberships.
        fields = [
            f.name
            for f in models.Project._meta.fields
            if f.editable and not f.auto_created
        ]

    def clean(self):
        cleaned = super().clean()
        sampler = {
            f: cleaned[f]
            for f in ("sampler_backend", "sampler_config", "selection_strategy")
            if f in cleaned and f not in self.errors
        }
        found = project_settings_problems(sampler, project=self.instance)
        for field, problems in found.items():
            for problem in problems:
                self.add_error(field, problem)
        if any(SECRET_REFUSED in p for p in found.get("sampler_config", [])):
            # The page shows the form again: not with the secret in it.
            self.data = self.data.copy()
            self.data["sampler_config"] = json.dumps(self.instance.sampler_config)
        return cleaned


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    form = ProjectAdminForm
    list_display = ["name", "overlap", "gold_rate", "retrain_threshold", "auto_rounds"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "paused"]
    list_filter = ["role", "paused", "project"]
    search_fields = ["user__username", "project__name"]


@admin.register(models.Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "project", "external_id", "created_at"]
    list_filter = ["project"]
    search_fields = ["external_id", "content_hash"]


@admin.register(models.Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "prompt", "origin", "model_ref", "reward"]
    list_filter = ["origin", "prompt__project"]
    search_fields = ["text", "model_ref"]
    raw_id_fields = ["prompt", "round", "reward_version"]


@admin.register(models.Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "origin",
        "status",
        "priority",
        "labels_count",
        "labels_required",
        "p_a",
        "agreement",
        "is_gold",
    ]
    list_filter = ["project", "origin", "status", "is_gold", "round"]
    raw_id_fields = ["prompt", "response_a", "response_b", "round"]
    search_fields = ["id"]


@admin.register(models.Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "annotator", "state", "swapped", "expires_at"]
    list_filter = ["state", "project"]
    search_fields = ["annotator__username"]
    raw_id_fields = ["comparison"]


@admin.register(models.Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "comparison",
        "annotator",
        "choice",
        "strength",
        "p_a",
        "source",
        "review_state",
        "duration_ms",
        "created_at",
    ]
    list_filter = ["choice", "review_state", "source", "comparison__project"]
    search_fields = ["annotator__username", "rationale"]
    raw_id_fields = ["comparison", "assignment"]


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "version", "status", "base_ref", "n_pairs"]
    list_filter = ["project", "kind", "status"]
    search_fields = ["base_ref", "artifact_path"]


@admin.register(models.Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "number", "status", "policy_ref", "created_at"]
    list_filter = ["project", "status"]


@admin.register(models.SFTExample)
class SFTExampleAdmin(admin.ModelAdmin):
    list_display = ["id", "round", "prompt", "reward"]
    raw_id_fields = ["round", "prompt", "response"]


@admin.register(models.Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "kind",
        "status",
        "progress",
        "message",
        "created_at",
    ]
    list_filter = ["kind", "status", "project"]
    search_fields = ["message", "error"]
