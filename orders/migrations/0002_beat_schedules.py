"""Beat schedules: recover stuck sagas and re-enqueue unprocessed outbox events, every 60 s."""

from django.db import migrations

TASKS = {
    "orders: recover sagas": ("orders.tasks.recover_sagas_task", "Resume or compensate sagas stopped mid-step."),
    "orders: outbox sweep": ("orders.tasks.outbox_sweep_task", "Re-enqueue outbox events left unprocessed."),
}


def create_schedules(apps, schema_editor):
    from django.utils import timezone

    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    for name, (task, description) in TASKS.items():
        PeriodicTask.objects.update_or_create(
            name=name, defaults={"task": task, "interval": every, "enabled": True, "description": description}
        )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def delete_schedules(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=list(TASKS)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, delete_schedules)]
