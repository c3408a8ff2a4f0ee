"""create_user NAME --role annotator|reviewer|admin [--project ID] [--password PW]
[--token]: make (or update) a user, optionally a project member; print an API token."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

from labelapp.models import Membership, Project


class Command(BaseCommand):
    help = "Create or update a user; with --token print an API token for scripts."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--role", choices=[r.value for r in Membership.Role], default="annotator"
        )
        parser.add_argument("--project", type=int, help="Make the user a member.")
        parser.add_argument("--password", help="Without it the user cannot log in.")
        parser.add_argument("--token", action="store_true", help="Print an API token.")

    @transaction.atomic
    def handle(self, *args, name: str, role: str, project: int | None, **opts) -> None:
        user, created = get_user_model().objects.get_or_create(username=name)
        # The admin role is global (staff + superuser); the others are per project.
        user.is_staff = user.is_superuser = role == Membership.Role.ADMIN
        if opts["password"]:
            user.set_password(opts["password"])
        elif created:
            user.set_unusable_password()
        user.save()
        if project is not None:
            try:
                target = Project.objects.get(pk=project)
            except Project.DoesNotExist:
                raise CommandError(f"Project {project} does not exist.") from None
            Membership.objects.update_or_create(
                project=target, user=user, defaults={"role": role}
            )
        verb = "Created" if created else "Updated"
        self.stderr.write(f"{verb} user {name!r} ({role}).")
        if opts["token"]:
            token, _ = Token.objects.get_or_create(user=user)
            self.stdout.write(token.key)
