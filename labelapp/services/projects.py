"""Writes of a project's settings, and the one validator of them.

The API's project serializer and the project settings page both ask
:func:`project_settings_problems` (and take their numeric bounds from
:data:`PROJECT_BOUNDS`), so a value is refused with the same words wherever it is
typed. :func:`project_update` writes a change and its effect on open work
(:func:`project_update_effects` says what that will be) in one transaction.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from labelapp import access
from labelapp.broker import publisher
from labelapp.errors import PermissionDenied, ValidationFailed
from labelapp.loop.policy_data import POLICY_EXTRAS, POLICY_RESERVED
from labelapp.loop.triggers import scoring_maybe_start
from labelapp.models import Assignment, Comparison, Membership, Project
from labelapp.tasknames import CHECK_TRIGGERS
from training.config import PolicyConfig, RewardConfig
from training.rejection import PAIR_STRATEGIES
from training.selection import STRATEGIES as SELECTION_STRATEGIES

# Bounds matching the database's CHECK constraints (labelapp.models
# Project.Meta.constraints) and the column types, so input the database would
# refuse is a field-level 400 instead of an IntegrityError. The API serializer's
# field bounds (and so its OpenAPI schema) are these.
PROJECT_BOUNDS: dict[str, dict[str, float]] = {
    "overlap": {"min_value": 1, "max_value": 100},
    "lease_seconds": {"min_value": 10, "max_value": 2**31 - 1},
    "undo_grace_seconds": {"min_value": 0, "max_value": 7 * 24 * 3600},
    "gold_rate": {"min_value": 0.0, "max_value": 1.0},
    "n_samples": {"min_value": 1, "max_value": 32767},
    "round_ranking_k": {"min_value": 0, "max_value": 9},  # a ranking's most
    "temperature": {"min_value": 0.0},
    "top_p": {"max_value": 1.0},  # and > 0: top_p_problems
}

# The settings a project admin edits (the page's form lists them in this order).
EDITABLE_FIELDS: tuple[str, ...] = (
    "name",
    "guidelines",
    "overlap",
    "lease_seconds",
    "undo_grace_seconds",
    "gold_rate",
    "gold_min_count",
    "gold_min_accuracy",
    "pause_flagged_annotators",
    "label_scale",
    "policy_ref",
    "reward_base_ref",
    "n_samples",
    "temperature",
    "top_p",
    "max_new_tokens",
    "pairs_per_prompt",
    "pair_mix",
    "round_ranking_k",
    "round_prompt_limit",
    "selection_strategy",
    "retrain_threshold",
    "auto_rounds",
    "promote_tolerance",
    "rm_config",
    "auto_policy",
    "policy_min_examples",
    "policy_config",
    "sampler_backend",
    "sampler_config",
)

# Set by Pairloop itself when it trains, not by the project's rm_config.
_RM_CONFIG_RESERVED = {"base", "init_from"}
_RM_CONFIG_EXTRA = {"warm_start": bool}  # Pairloop's own option (labelapp.loop)


def _type_problem(value: object, hint: str) -> str | None:
    """Why ``value`` does not fit the annotation ``hint`` (a dataclass field's type,
    as a string: the config modules use postponed annotations), or None."""
    options = [part.strip() for part in hint.split("|")]
    if value is None:
        return None if "None" in options else "must not be null"
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "tuple[float, ...]": lambda v: (
            isinstance(v, list)
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        ),
    }
    names = {"tuple[float, ...]": "a list of numbers", "float": "a number"}
    wanted = [o for o in options if o != "None"]
    if any(checks[o](value) for o in wanted if o in checks):
        return None
    return "must be " + " or ".join(names.get(o, f"a {o}") for o in wanted)


def rm_config_problems(value: object) -> list[str]:
    """``rm_config`` against training.config.RewardConfig: known keys, their types,
    then the dataclass's own range checks."""
    if not isinstance(value, dict):
        return ['Must be an object of RewardConfig settings (e.g. {"num_epochs": 2}).']
    hints = {
        f.name: str(f.type)
        for f in dataclasses.fields(RewardConfig)
        if f.name not in _RM_CONFIG_RESERVED
    }
    problems = []
    for key, item in value.items():
        if key in _RM_CONFIG_EXTRA:
            if not isinstance(item, _RM_CONFIG_EXTRA[key]):
                problems.append(f"{key}: must be a boolean")
        elif key not in hints:
            problems.append(
                f"{key}: unknown setting; known: "
                f"{', '.join(sorted([*hints, *_RM_CONFIG_EXTRA]))}"
            )
        elif problem := _type_problem(item, hints[key]):
            problems.append(f"{key}: {problem}")
    if not problems:
        options = {k: v for k, v in value.items() if k not in _RM_CONFIG_EXTRA}
        try:
            RewardConfig(**options)
        except (ValueError, TypeError) as exc:
            problems.append(str(exc))
    return problems


def policy_config_problems(value: object) -> list[str]:
    """``policy_config`` against PolicyConfig's fields and the extras of labelapp.loop.policy."""
    if not isinstance(value, dict):
        return ['Must be an object of policy settings (e.g. {"mode": "sft"}).']
    hints = {
        f.name: str(f.type)
        for f in dataclasses.fields(PolicyConfig)
        if f.name not in POLICY_RESERVED
    }
    problems = []
    for key, item in value.items():
        if key in POLICY_EXTRAS:
            kind, _ = POLICY_EXTRAS[key]
            if (isinstance(item, bool) and kind is not bool) or not isinstance(
                item, kind
            ):
                wanted = "a boolean" if kind is bool else "a number"
                wanted = "an integer" if kind is int else wanted
                problems.append(f"{key}: must be {wanted}")
            elif kind is int and item < 0:
                problems.append(f"{key}: must be >= 0")
        elif key not in hints:
            known = ", ".join(sorted([*hints, *POLICY_EXTRAS]))
            problems.append(f"{key}: unknown setting; known: {known}")
        elif problem := _type_problem(item, hints[key]):
            problems.append(f"{key}: {problem}")
    if problems:
        return problems
    if value.get("eval_prompts", 1) < 1 or value.get("eval_samples", 1) < 1:
        problems.append("eval_prompts and eval_samples must be >= 1")
    lo, hi = value.get("length_ratio_min", 0.8), value.get("length_ratio_max", 1.25)
    if not 0 < lo <= hi:
        problems.append("length_ratio_min must be > 0 and <= length_ratio_max")
    options = {k: v for k, v in value.items() if k not in POLICY_EXTRAS}
    if options.get("restart_from") == "latest":
        options["latest"] = "(the promoted policy)"
    try:
        PolicyConfig(**options)
    except (ValueError, TypeError) as exc:
        problems.append(str(exc))
    return problems


def _weight_problems(value: dict, known: tuple[str, ...], what: str) -> list[str]:
    """A mix {name: weight}: known names, finite weights >= 0, not all 0."""
    problems = []
    for key, weight in value.items():
        if key not in known:
            problems.append(f"{key}: unknown {what}; known: {', '.join(known)}")
        elif (
            not isinstance(weight, int | float)
            or isinstance(weight, bool)
            or not math.isfinite(weight)
            or weight < 0
        ):
            problems.append(f"{key}: the weight must be a number >= 0")
    if not problems and not sum(value.values()) > 0:
        problems.append("the weights must not all be 0")
    return problems


def pair_mix_problems(value: object) -> list[str]:
    """``pair_mix`` against training.rejection.RoundConfig: known strategies with
    finite weights >= 0, not all 0."""
    if not isinstance(value, dict):
        return [
            "Must be an object of strategy weights, e.g. "
            '{"best_vs_runner_up": 0.5, "random": 0.5}.'
        ]
    return _weight_problems(value, PAIR_STRATEGIES, "strategy")


def selection_strategy_problems(value: object) -> list[str]:
    """``selection_strategy``: a name of training.selection.STRATEGIES, or a mix of
    them with finite weights >= 0, not all 0 (what order_pool accepts)."""
    if isinstance(value, str):
        if value in SELECTION_STRATEGIES:
            return []
        return [f"Must be one of: {', '.join(SELECTION_STRATEGIES)}, or a mix."]
    if not isinstance(value, dict):
        return [
            f"Must be a strategy ({', '.join(SELECTION_STRATEGIES)}) or a mix of "
            'them, e.g. {"uncertainty": 0.5, "random": 0.5}.'
        ]
    return _weight_problems(value, SELECTION_STRATEGIES, "strategy")


# --- the sampler backend and its settings --------------------------------------------

SAMPLER_BACKENDS: tuple[str, ...] = tuple(Project.SamplerBackend.values)

# The openai backend's settings: training.sampling.OpenAISampler's keyword arguments
# (make_sampler's "openai" branch), with ``model`` for the served model's name and
# ``api_key_env`` — the NAME of the worker's environment variable holding the key —
# in place of the key itself, which is never stored (nor shown on a page).
SAMPLER_CONFIG_TYPES: dict[str, dict[str, str]] = {
    "transformers": {},
    "vllm": {},
    "openai": {
        "base_url": "str",
        "model": "str",
        "api_key_env": "str",
        "mode": "str",
        "timeout_s": "float",
        "max_retries": "int",
        "max_concurrency": "int",
    },
}
assert set(SAMPLER_CONFIG_TYPES) == set(SAMPLER_BACKENDS)
# Bounds, inclusive: an unbounded timeout or retry count turns an outage into a hang
# (timeout_s must also be > 0: a timeout of 0 fails every request).
SAMPLER_TIMEOUT_MAX_S = 3600.0
SAMPLER_INT_RANGES: dict[str, tuple[int, int]] = {
    "max_retries": (0, 10),
    "max_concurrency": (1, 256),
}
SAMPLER_MODES = ("chat", "completions")
_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number"}
_SECRET_NAME = re.compile(
    r"api[_-]?key|token|secret|passw(or)?d|authorization|bearer|credential", re.I
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_SAMPLER_TEXT = 300  # Response.model_ref's length: the model name lands there
# Every refusal of a secret says this (the settings page, seeing it, does not show
# the posted value again).
SECRET_REFUSED = "secrets are not stored"


def _looks_secret(value: object) -> bool:
    # OpenAI-style keys (sk-…), a pasted Authorization header, Hugging Face tokens.
    return isinstance(value, str) and value.strip().lower().startswith(
        ("sk-", "bearer ", "hf_")
    )


def sampler_config_problems(backend: object, config: object) -> list[str]:
    """Why ``config`` is not a valid ``sampler_config`` for ``backend`` (empty when
    it is). The one validator of the sampler settings: the API serializer, the
    project settings page, the project service and the round itself ask it.

    Secrets are refused, never echoed: a key named like one (api_key, token,
    secret, password), a value that reads like one (``sk-…``, ``Bearer …``) or a
    base_url carrying credentials. The key belongs in the worker's environment;
    ``api_key_env`` names the variable.
    """
    if backend not in SAMPLER_CONFIG_TYPES:
        return [f"unknown sampler backend; choose one of {', '.join(SAMPLER_BACKENDS)}"]
    if not isinstance(config, dict):
        return ["Must be an object of the sampler backend's settings."]
    known = SAMPLER_CONFIG_TYPES[str(backend)]
    problems: list[str] = []
    for key, value in config.items():
        if _looks_secret(key):
            problems.append(
                f"a setting's name looks like a secret (not shown); {SECRET_REFUSED}"
            )
            continue
        if key != "api_key_env" and _SECRET_NAME.search(str(key)):
            problems.append(
                f"{key}: {SECRET_REFUSED}; put the key in the worker's "
                "environment and give that variable's name as api_key_env"
            )
            continue
        if _looks_secret(value):
            problems.append(
                f"{key}: the value looks like a secret (not shown); {SECRET_REFUSED}: "
                "name the environment variable holding it in api_key_env"
            )
            continue
        if key not in known:
            problems.append(
                f"{key}: unknown setting of the {backend} backend; "
                + (f"known: {', '.join(known)}" if known else "it takes none (send {})")
            )
            continue
        if _type_problem(value, known[key]):
            problems.append(f"{key}: must be {_TYPE_WORDS[known[key]]}")
            continue
        problems += _sampler_value_problems(key, value)
    if backend == "openai":
        for required in ("base_url", "model"):
            if required not in config:
                problems.append(f"{required}: required by the openai backend")
    return problems


def _sampler_value_problems(key: str, value: Any) -> list[str]:
    if key == "timeout_s":
        if math.isfinite(value) and 0 < value <= SAMPLER_TIMEOUT_MAX_S:
            return []
        return [f"timeout_s: must be a number > 0 and <= {SAMPLER_TIMEOUT_MAX_S:g}"]
    if key in SAMPLER_INT_RANGES:
        low, high = SAMPLER_INT_RANGES[key]
        if low <= value <= high:
            return []
        return [f"{key}: must be an integer from {low} to {high}"]
    if key == "mode" and value not in SAMPLER_MODES:
        return [f"mode: must be one of {', '.join(SAMPLER_MODES)}"]
    if key == "api_key_env" and not _ENV_NAME.fullmatch(value):
        return [
            "api_key_env: must be an environment variable's name (letters, digits "
            "and _, not starting with a digit), not the key itself"
        ]
    if key in ("model", "base_url") and not value.strip():
        return [f"{key}: must not be empty"]
    if key in ("model", "base_url") and len(value) > _MAX_SAMPLER_TEXT:
        return [f"{key}: at most {_MAX_SAMPLER_TEXT} characters"]
    if key == "base_url":
        try:
            url = urlsplit(value)
            url.port  # noqa: B018 — raises ValueError for a bad port
        except ValueError:
            return ["base_url: not a valid URL"]
        if url.scheme not in ("http", "https") or not url.hostname:
            return [
                "base_url: must be an http:// or https:// URL with a host, "
                "e.g. http://127.0.0.1:8000/v1"
            ]
        if url.username or url.password:
            return [
                "base_url: must not carry credentials (user:password@); "
                f"{SECRET_REFUSED}: name the environment variable in api_key_env"
            ]
    return []


def top_p_problems(value: float) -> list[str]:
    return [] if value > 0 else ["Ensure this value is greater than 0."]


def _bound_problems(field: str, value: object) -> list[str]:
    # The wording of DRF's min/max messages, so the page and the API read alike.
    bounds = PROJECT_BOUNDS.get(field, {})
    if not isinstance(value, int | float) or isinstance(value, bool):
        return []
    if "min_value" in bounds and value < bounds["min_value"]:
        return [f"Ensure this value is greater than or equal to {bounds['min_value']}."]
    if "max_value" in bounds and value > bounds["max_value"]:
        return [f"Ensure this value is less than or equal to {bounds['max_value']}."]
    return []


def project_settings_problems(
    values: dict[str, Any], *, project: Project | None = None
) -> dict[str, list[str]]:
    """Field -> problems for the given settings (only the fields present); empty
    when every value is acceptable. The one validator of project settings.

    ``sampler_config`` is checked against the backend it will run with: the one
    in ``values``, else ``project``'s (a change of either field alone is checked
    against the other's stored value)."""
    problems: dict[str, list[str]] = {}
    if "sampler_backend" in values or "sampler_config" in values:
        stored = project or Project()
        backend = values.get("sampler_backend", stored.sampler_backend)
        if backend not in SAMPLER_BACKENDS:
            problems["sampler_backend"] = [
                f"Must be one of: {', '.join(SAMPLER_BACKENDS)}."
            ]
        elif found := sampler_config_problems(
            backend, values.get("sampler_config", stored.sampler_config)
        ):
            problems["sampler_config"] = found
    for field, value in values.items():
        found = _bound_problems(field, value)
        if field == "name" and isinstance(value, str) and not value.strip():
            found.append("A project needs a name.")
        if field == "top_p" and isinstance(value, int | float) and not found:
            found += top_p_problems(value)
        if field == "pair_mix":
            found += pair_mix_problems(value)
        if field == "selection_strategy":
            found += selection_strategy_problems(value)
        if field == "rm_config":
            found += rm_config_problems(value)
        if field == "policy_config":
            found += policy_config_problems(value)
        if found:
            problems[field] = found
    return problems


def _check(values: dict[str, Any], *, project: Project | None = None) -> None:
    problems = project_settings_problems(values, project=project)
    if problems:
        raise ValidationFailed(
            "; ".join(f"{f}: {' '.join(p)}" for f, p in problems.items())
        )


def project_create_by(*, by: AbstractBaseUser, values: dict[str, Any]) -> Project:
    """Staff create projects; the creator becomes its admin member, so the project
    is visible to them and listed with a role (issue 18: an imported project was
    invisible until a membership was added by hand)."""
    if not access.can_create_projects(user=by):
        raise PermissionDenied("Only staff create projects.")
    values = {k: v for k, v in values.items() if k in EDITABLE_FIELDS}
    _check(values)
    name = str(values.pop("name", "")).strip()
    if Project.objects.filter(name=name).exists():
        raise ValidationFailed(f"a project named {name!r} exists already")
    with transaction.atomic():
        project = Project.objects.create(name=name, **values)
        Membership.objects.create(project=project, user=by, role=Membership.Role.ADMIN)
    return project


@dataclass
class Effects:
    """What a settings change will do to open work, before it is done."""

    reopen: int = 0  # complete comparisons a higher k reopens
    complete: int = 0  # open comparisons a lower k completes
    follow_k: int = 0  # comparisons whose labels_required follows k
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def needs_confirmation(self) -> bool:
        return bool(self.reopen or self.complete or self.follow_k)

    def summary(self) -> list[str]:
        lines = []
        if self.follow_k:
            lines.append(
                f"{self.follow_k} comparison{'s' * (self.follow_k != 1)} not "
                "retired will need the new number of labels."
            )
        if self.reopen:
            lines.append(
                f"{self.reopen} completed comparison{'s' * (self.reopen != 1)} "
                "will be reopened for more labels."
            )
        if self.complete:
            lines.append(
                f"{self.complete} open comparison{'s' * (self.complete != 1)} "
                "already have enough labels and will be completed."
            )
        return lines + self.notes


def _following(project: Project):
    # Comparisons made with the project's k follow a change of k; those given their
    # own labels_required (an audit pair, an API client's choice) keep it.
    return Comparison.objects.filter(
        project=project, labels_required=project.overlap
    ).exclude(status=Comparison.Status.RETIRED)


def project_update_effects(*, project: Project, changes: dict[str, Any]) -> Effects:
    effects = Effects()
    new_k = changes.get("overlap", project.overlap)
    if new_k != project.overlap:
        following = _following(project)
        effects.follow_k = following.count()
        if new_k > project.overlap:
            effects.reopen = following.filter(
                status=Comparison.Status.COMPLETE, labels_count__lt=new_k
            ).count()
        else:
            completing = following.filter(
                status=Comparison.Status.OPEN, labels_count__gte=new_k
            )
            effects.complete = completing.count()
            held = Assignment.objects.filter(
                comparison__in=completing,
                state=Assignment.State.LEASED,
                expires_at__gt=timezone.now(),
            ).count()
            if held:
                effects.notes.append(
                    f"{held} lease{'s' * (held != 1)} held on them will end: a label "
                    "sent for a completed comparison is refused."
                )
    lease = changes.get("lease_seconds", project.lease_seconds)
    if lease != project.lease_seconds:
        effects.notes.append(
            f"Leases already held keep their expiry; new leases last {lease} seconds."
        )
    gold = changes.get("gold_rate", project.gold_rate)
    if gold != project.gold_rate:
        effects.notes.append(
            f"From the next comparison served, {gold:.0%} will be gold items "
            "(where gold items are left)."
        )
    return effects


def _check_triggers(project_id: int) -> None:
    publisher.send(CHECK_TRIGGERS, args=[project_id])


def project_update(
    *, project: Project, by: AbstractBaseUser, changes: dict[str, Any]
) -> tuple[Project, Effects]:
    """Apply ``changes`` (validated here) and their effect on open work in one
    transaction, under the project's row lock (the importer and other settings
    changes take it too, so k cannot change under a concurrent import)."""
    if not access.can_admin(user=by, project=project):
        raise PermissionDenied("Only admins of a project change its settings.")
    changes = {k: v for k, v in changes.items() if k in EDITABLE_FIELDS}
    _check(changes, project=project)
    if "name" in changes:
        changes["name"] = str(changes["name"]).strip()
        if Project.objects.filter(name=changes["name"]).exclude(pk=project.pk).exists():
            raise ValidationFailed(
                f"a project named {changes['name']!r} exists already"
            )
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        if {"sampler_backend", "sampler_config"} & changes.keys():
            # Against the stored backend/config as locked: a concurrent change of
            # the other field may have landed since the check above.
            _check(changes, project=locked)
        effects = project_update_effects(project=locked, changes=changes)
        new_k = changes.get("overlap", locked.overlap)
        if new_k != locked.overlap:
            following = _following(locked)
            ids = list(following.values_list("pk", flat=True))
            # Lock the rows the queue writes (label.py updates them under the
            # same row lock), then set k, reopen or complete in one statement each.
            list(
                Comparison.objects.select_for_update()
                .filter(pk__in=ids)
                .values_list("pk", flat=True)
            )
            rows = Comparison.objects.filter(pk__in=ids)
            rows.update(labels_required=new_k)
            rows.filter(
                status=Comparison.Status.COMPLETE, labels_count__lt=F("labels_required")
            ).update(status=Comparison.Status.OPEN, completed_at=None)
            completed = rows.filter(
                status=Comparison.Status.OPEN, labels_count__gte=F("labels_required")
            ).update(status=Comparison.Status.COMPLETE, completed_at=timezone.now())
            if completed:
                # Completed comparisons count towards retraining, as when the k-th
                # label completes one (labelapp.queue.label); checked after commit.
                transaction.on_commit(lambda: _check_triggers(locked.pk), robust=True)
        new_strategy = "selection_strategy" in changes and (
            changes["selection_strategy"] != locked.selection_strategy
        )
        for field, value in changes.items():
            setattr(locked, field, value)
        locked.save(update_fields=list(changes) or None)
        if new_strategy:
            # Scores in the old strategy's order go at once (random order until
            # the new strategy's are written); the job writes them.
            Comparison.objects.filter(
                project=locked, selection_score__isnull=False
            ).update(selection_score=None)
            scoring_maybe_start(locked)
    return locked, effects
