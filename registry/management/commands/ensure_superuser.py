"""Create the admin user from DJANGO_SUPERUSER_USERNAME / DJANGO_SUPERUSER_PASSWORD, once."""

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
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
        users.create_superuser(username=username, email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password=password)
        self.stdout.write(f"Created admin user {username!r}.")
