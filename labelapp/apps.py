from django.apps import AppConfig
from django.core import checks


class LabelappConfig(AppConfig):
    name = "labelapp"
    verbose_name = "Pairloop labelling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from labelapp.queue.checks import queue_sql_drift  # needs loaded apps

        checks.register(queue_sql_drift)
