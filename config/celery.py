"""The Celery app. Queues and routes are declared once, in config/settings.py."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("pairloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["labelapp"])
