"""Create the hourly django-celery-beat task that captures or voids authorizations not captured in time."""

from django.db import migrations

TASK_NAME = "orders: settle due authorizations"
TASK = "orders.tasks.authorizations_settle_task"


def create_schedule(apps, schema_editor):
    from django.utils import timezone

    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.update_or_create(
        name=TASK_NAME,
        defaults={
            "task": TASK,
            "interval": hourly,
            "enabled": True,
            "description": "Capture (order confirmed) or void (checkout ended) authorizations older than "
            "CARTFLOW_CAPTURE_WITHIN_HOURS, before Stripe cancels them after 7 days.",
        },
    )
    # Historical models send no signals: bump the change marker so a running beat reloads its schedule.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def delete_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0005_order_payment_status_requires_capture"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
