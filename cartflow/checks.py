"""System check: every beat schedule in the database names a task the Celery app registers.

Beat sends a scheduled task by the name stored in its PeriodicTask row; a worker that has no task of that
name drops the message ("Received unregistered task"), so a renamed task silently stops a job. This check
makes ``manage.py check`` (and every command that runs system checks, ``migrate`` included) fail instead.

- ``cartflow.E001``: an enabled PeriodicTask names a task the Celery app does not register.
- ``cartflow.E002``: a schedule the migrations create (``EXPECTED_SCHEDULES``) is missing or runs
  another task.
- ``cartflow.W002``: such a schedule exists but is disabled (an operator may pause a job in the admin).

It queries the default database only when it runs, never at import. It says nothing while the database
is unreachable or has unapplied migrations: ``migrate`` runs system checks before it migrates, and the
migration that creates or renames a schedule must be able to run.
"""

from __future__ import annotations

from django.core.checks import Error, Warning, register
from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django_celery_beat.models import PeriodicTask

from cartflow.celery import app

TAG = "celery_beat"

# PeriodicTask name → task, as created by inventory/migrations/0003 and 0004, orders/migrations/0002, 0004
# and 0006, and payments/migrations/0002. A migration that renames or adds a schedule updates this table too.
EXPECTED_SCHEDULES: dict[str, str] = {
    "inventory: release expired reservations": "inventory.tasks.release_expired_reservations",
    "inventory: flash-sale pool sweep": "inventory.tasks.flash_pool_sweep",
    "orders: recover sagas": "orders.tasks.recover_sagas_task",
    "orders: outbox sweep": "orders.tasks.outbox_sweep_task",
    "orders: webhook deliveries sweep": "orders.tasks.webhook_sweep_task",
    "orders: settle due authorizations": "orders.tasks.authorizations_settle_task",
    "payments: reconcile with Stripe": "payments.tasks.reconcile_payments_task",
}


def registered_task_names() -> set[str]:
    """The tasks a worker of this code base registers: the task modules it imports, then the registry.

    Not ``app.loader.import_default_modules()``: its ``import_modules`` signal makes Celery's Django fixup
    run the system checks, this one included (a worker and beat run them at startup too)."""
    app.autodiscover_tasks(force=True)  # every installed app's tasks module, as the worker imports them
    for module in app.loader.default_modules:  # CELERY_IMPORTS / CELERY_INCLUDE, if any
        app.loader.import_task_module(module)
    return set(app.tasks.keys())


def _database_ready() -> bool:
    connection = connections["default"]
    try:
        executor = MigrationExecutor(connection)
        return not executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError:
        return False


@register(TAG)
def check_beat_schedules(app_configs=None, **kwargs) -> list:  # noqa: ANN001 - Django's check signature
    if not _database_ready():
        return []
    try:
        rows = list(PeriodicTask.objects.values_list("name", "task", "enabled"))
    except DatabaseError:
        return []
    registered = registered_task_names()
    problems: list = []
    for name, task, enabled in rows:
        if enabled and task not in registered:
            problems.append(
                Error(
                    f"Beat schedule {name!r} names task {task!r}, which the Celery app does not register.",
                    hint="Rename the task back, or add a migration that points the PeriodicTask at its new name.",
                    obj=name,
                    id="cartflow.E001",
                )
            )
    found = {name: (task, enabled) for name, task, enabled in rows}
    for name, task in EXPECTED_SCHEDULES.items():
        if name not in found or found[name][0] != task:
            seen = f"it runs {found[name][0]!r}" if name in found else "there is no such PeriodicTask"
            problems.append(
                Error(
                    f"Expected beat schedule {name!r} → {task!r} is missing: {seen}.",
                    hint="Run manage.py migrate; if the schedule was renamed on purpose, update "
                    "cartflow.checks.EXPECTED_SCHEDULES in the same change.",
                    obj=name,
                    id="cartflow.E002",
                )
            )
        elif not found[name][1]:
            problems.append(
                Warning(
                    f"Beat schedule {name!r} is disabled: {task!r} does not run.",
                    hint="Enable it in the admin (Periodic tasks) unless it is paused on purpose.",
                    obj=name,
                    id="cartflow.W002",
                )
            )
    return problems
