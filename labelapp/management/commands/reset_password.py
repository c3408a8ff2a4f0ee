"""reset_password USER [--password PW]: give a user a new password (a lost one from
the first run of `make run`, for instance) and print it."""

from __future__ import annotations

import secrets

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Set a new password for a user and print it (random unless --password)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="The account, e.g. admin or annotator.")
        parser.add_argument(
            "--password", help="The new password; without it a random one is made."
        )

    def handle(self, *args: object, username: str, **opts: object) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get(username=username)
        except user_model.DoesNotExist:
            known = ", ".join(
                user_model.objects.order_by("username").values_list(
                    "username", flat=True
                )[:10]
            )
            raise CommandError(
                f"no user {username!r}" + (f" (users: {known})" if known else "")
            ) from None
        password = str(opts.get("password") or secrets.token_urlsafe(12))
        user.set_password(password)
        user.save(update_fields=["password"])
        if apps.is_installed("axes"):
            # A lost password often comes with a locked-out account.
            from axes.utils import reset

            reset(username=username)
        self.stdout.write(f"{username} / {password}")
