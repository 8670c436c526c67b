"""Create the django-celery-beat schedule that repairs flash-sale token pools from the database (every 30 s)."""

from django.db import migrations

TASK_NAME = "inventory: flash-sale pool sweep"
TASK = "inventory.tasks.flash_pool_sweep"
EVERY_SECONDS = 30


def create_schedule(apps, schema_editor):
    from django.utils import timezone

    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every, _ = IntervalSchedule.objects.get_or_create(every=EVERY_SECONDS, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=TASK_NAME,
        defaults={
            "task": TASK,
            "interval": every,
            "enabled": True,
            "description": "Re-open lost flash-sale pools, settle crashed holders, resync free tokens.",
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def delete_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("inventory", "0003_release_expired_schedule")]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
