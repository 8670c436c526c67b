"""The Celery app: broker on Redis, beat on django-celery-beat's database scheduler."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init
from django.db import close_old_connections

from cartflow.tracing import install_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cartflow.settings")

app = Celery("cartflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _tracing(**_kwargs) -> None:  # noqa: ANN003
    install_tracing("cartflow-worker")


@task_prerun.connect
@task_postrun.connect
def _recycle_db_connections(task=None, **_kwargs) -> None:  # noqa: ANN001, ANN003
    """Around each task, what Django does around each request: keep the connection while CONN_MAX_AGE
    allows, close it if it broke (a PostgreSQL restart), health-check it before the next query.

    Celery's Django fixup would instead close every connection before and after every task unless
    CELERY_DB_REUSE_MAX is set (cartflow/settings.py sets it): a new PostgreSQL backend per task, which
    was a fifth of the worker's CPU in the spread-checkout profile. Eager tasks run inside the caller's
    transaction and are left alone, as the fixup leaves them."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()
