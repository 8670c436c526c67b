"""The Celery app: broker on Redis, beat on django-celery-beat's database scheduler."""

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cartflow.settings")

app = Celery("cartflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _tracing(**_kwargs) -> None:  # noqa: ANN003
    from cartflow.tracing import install_tracing

    install_tracing("cartflow-worker")
