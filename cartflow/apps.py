from django.apps import AppConfig


class CartflowConfig(AppConfig):
    name = "cartflow"
    verbose_name = "CartFlow"

    def ready(self) -> None:
        # In ready(): the check imports django_celery_beat's models, which need the app registry loaded.
        from cartflow import checks  # noqa: F401 - registers the beat schedule check (no queries on import)
