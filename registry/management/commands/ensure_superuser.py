"""Create the admin user from DJANGO_SUPERUSER_USERNAME / DJANGO_SUPERUSER_PASSWORD, once."""

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from registry.audit import AuditedCommand


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = "Create a superuser from DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD if it does not exist."

    def handle(self, *args: Any, **options: Any) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        users = get_user_model().objects
        if not username or not password:
            if not users.filter(is_superuser=True).exists():
                self.stdout.write(
                    "No admin user yet. Create one with `.venv/bin/python manage.py createsuperuser`, or start with "
                    "DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD set."
                )
            return
        if users.filter(username=username).exists():
            self.stdout.write(f"Admin user {username!r} exists; left unchanged.")
            return
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "")
        model = get_user_model()
        try:  # the same validators as the admin's password forms (AUTH_PASSWORD_VALIDATORS)
            validate_password(password, model(**{model.USERNAME_FIELD: username, "email": email}))
        except ValidationError as exc:
            raise CommandError(
                "DJANGO_SUPERUSER_PASSWORD is not accepted: " + " ".join(exc.messages) + " Choose another one."
            ) from None
        users.create_superuser(username=username, email=email, password=password)
        self.stdout.write(f"Created admin user {username!r}.")
