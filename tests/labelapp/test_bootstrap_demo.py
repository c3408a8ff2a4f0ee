"""The first-run demo project: two labels per pair, so agreement has data."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from labelapp.management.commands.bootstrap_demo import DEMO_PROJECT
from labelapp.models import Comparison, Project
from labelapp.services.projects import policy_config_problems


@pytest.mark.django_db(transaction=True)
def test_demo_pairs_need_two_labels(settings, tmp_path, capsys):
    settings.ARTIFACTS_DIR = tmp_path
    call_command("bootstrap_demo")
    out = capsys.readouterr().out
    assert "admin:     admin / " in out
    project = Project.objects.get(name=DEMO_PROJECT)
    assert 2 <= project.overlap <= 3
    # The demo turns the policy step too, with settings the API would accept.
    assert project.auto_policy and project.policy_min_examples >= 1
    assert policy_config_problems(project.policy_config) == []
    pairs = Comparison.objects.filter(project=project)
    assert pairs.exists()
    assert set(pairs.values_list("labels_required", flat=True)) == {project.overlap}
    call_command("bootstrap_demo")
    assert "accounts exist already" in capsys.readouterr().out
