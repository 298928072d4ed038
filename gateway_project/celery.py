"""The Celery app. Workers: `celery -A gateway_project worker`; beat: `celery -A gateway_project beat`.

Configuration comes from Django's settings (the ``CELERY_`` names), beat's schedule included
(``CELERY_BEAT_SCHEDULE``: beat only sends ``federation.tasks.tick`` and ``discover_peers``; each
gateway's own intervals live on its row). Tasks are found in the installed apps' ``tasks`` modules.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

app = Celery("gateway_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
