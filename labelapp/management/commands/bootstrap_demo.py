"""First-run set-up for `make run`: accounts and a demo project, created once."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from labelapp.datasets.importing import import_files
from labelapp.loop.triggers import round_start
from labelapp.models import Membership, Project

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "demo.jsonl"
DEMO_PROJECT = "Demo: helpful answers"


class Command(BaseCommand):
    help = "Create an admin, an annotator and a demo project on first run (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            self.stdout.write("accounts exist already; skipping first-run set-up")
            return
        admin_password = secrets.token_urlsafe(12)
        annotator_password = secrets.token_urlsafe(12)
        with transaction.atomic():
            admin = user_model.objects.create_superuser(
                "admin", "admin@example.com", admin_password
            )
            annotator = user_model.objects.create_user(
                "annotator", "annotator@example.com", annotator_password
            )
            project, _ = Project.objects.get_or_create(
                name=DEMO_PROJECT,
                defaults={
                    # Small enough that a new user sees the loop turn on a laptop
                    # CPU: 5 pairs labelled twice → train → a round of 5 prompts ×
                    # 4 samples. Two labels per pair (annotator and admin, or the
                    # simulated annotators) give the agreement metrics data.
                    "overlap": 2,
                    "retrain_threshold": 5,
                    "auto_rounds": True,
                    "n_samples": 4,
                    "max_new_tokens": 64,
                    "round_prompt_limit": 5,
                    "pairs_per_prompt": 2,
                    "rm_config": {"num_epochs": 3, "batch_size": 4, "max_length": 256},
                    # The policy step turns too, at tiny settings: after a round
                    # with 2 usable examples, one SFT epoch, evaluated on 3 held-out
                    # prompts x 4 samples, then 2 audit pairs in the queue.
                    "auto_policy": True,
                    "policy_min_examples": 2,
                    "policy_config": {
                        "sft_epochs": 1,
                        "batch_size": 2,
                        "max_length": 512,
                        "guard_margin": 0.1,
                        "eval_prompts": 3,
                        "eval_samples": 4,
                        "audit_pairs": 2,
                    },
                    "guidelines": (
                        "Pick the response that is **more helpful, correct and "
                        "honest**. Use *Tie* when they are equally good and *Both "
                        "bad* when neither is acceptable."
                    ),
                },
            )
            Membership.objects.get_or_create(
                project=project, user=admin, defaults={"role": Membership.Role.ADMIN}
            )
            Membership.objects.get_or_create(project=project, user=annotator)
            import_files(project=project, paths=[DEMO_FILE], make_pairs=True)
            # Round 0 starts at once (random pairs: no reward model yet), so the
            # jobs page shows the GPU queue working from the first minute.
            round_start(project=project, created_by=admin, if_active="return")
        self.stdout.write(
            "\nFirst run: accounts created (shown only this once)\n"
            f"  admin:     admin / {admin_password}\n"
            f"  annotator: annotator / {annotator_password}\n"
            f"  demo project: {project.name!r} (id {project.pk}); round 0 is running,\n"
            f"  see /projects/{project.pk}/jobs/ — label at /projects/{project.pk}/compare/\n"
        )
