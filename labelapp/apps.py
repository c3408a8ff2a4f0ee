from django.apps import AppConfig


class LabelappConfig(AppConfig):
    name = "labelapp"
    verbose_name = "Pairloop labelling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the queue's SQL drift check (it needs loaded apps).
        import labelapp.queue.checks  # noqa: F401
