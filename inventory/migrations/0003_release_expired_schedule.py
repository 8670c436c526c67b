"""Create the django-celery-beat schedule that releases expired reservations.

Every CARTFLOW_RELEASE_INTERVAL_SECONDS (read when the migration runs; default 60). Re-running it with a
different setting updates the interval of the same PeriodicTask (one row, found by name).
"""

from django.db import migrations

TASK_NAME = "inventory: release expired reservations"
TASK = "inventory.tasks.release_expired_reservations"


def create_schedule(apps, schema_editor):
    from django.conf import settings
    from django.utils import timezone

    interval_seconds = int(getattr(settings, "CARTFLOW_RELEASE_INTERVAL_SECONDS", 60) or 60)
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every, _ = IntervalSchedule.objects.get_or_create(every=interval_seconds, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=TASK_NAME,
        defaults={"task": TASK, "interval": every, "enabled": True, "description": "Release HELD stock past expiry."},
    )
    # Historical models send no signals: bump the change marker so a running beat reloads its schedule.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def delete_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0002_reservation_stockadjustment"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
