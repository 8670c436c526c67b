"""Outbound webhooks (orders/outbound/): endpoints, events, deliveries and their attempts, and the beat
schedule of their sweep (every 60 s: events nobody fanned out, deliveries due)."""

import django.db.models.deletion
import orders.models
from django.db import migrations, models


SWEEP = "orders: webhook deliveries sweep"


def create_schedule(apps, schema_editor):
    from django.utils import timezone

    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=SWEEP,
        defaults={
            "task": "orders.tasks.webhook_sweep_task",
            "interval": every,
            "enabled": True,
            "description": "Fan out outbound events left unsent; hand out webhook deliveries that are due.",
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def delete_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('orders', '0003_saga_charge_params'),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.CreateModel(
            name='WebhookEndpoint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('url', models.URLField(max_length=2000, unique=True)),
                ('secret', models.CharField(blank=True, default=orders.models.new_endpoint_secret, help_text="Signs this endpoint's deliveries. Blank: CARTFLOW_WEBHOOK_SIGNING_SECRET.", max_length=200)),
                ('event_types', models.JSONField(blank=True, default=list, help_text='The event types it receives; empty: every type.')),
                ('active', models.BooleanField(default=True, help_text='An inactive endpoint gets no new events and no retries.')),
                ('description', models.CharField(blank=True, default='', max_length=200)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'ordering': ['url'],
            },
        ),
        migrations.CreateModel(
            name='OutboundEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('public_id', models.CharField(default=orders.models.new_event_id, editable=False, max_length=40, unique=True)),
                ('type', models.CharField(choices=[('order.confirmed', 'order.confirmed'), ('order.fulfilled', 'order.fulfilled'), ('order.cancelled', 'order.cancelled'), ('order.refunded', 'order.refunded'), ('payment.failed', 'payment.failed'), ('checkout.expired', 'checkout.expired')], max_length=32)),
                ('key', models.CharField(help_text='An order has one event per key: a change written twice announces itself once.', max_length=80)),
                ('order_snapshot', models.JSONField(help_text="The order's row as the change left it.")),
                ('data', models.JSONField(blank=True, default=dict, help_text="More members of the body's data (a refund).")),
                ('body', models.TextField(blank=True, default='', help_text='The JSON delivered, rendered once at fan-out.')),
                ('created_at', models.DateTimeField()),
                ('fanned_out_at', models.DateTimeField(blank=True, null=True)),
                ('order', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='outbound_events', to='orders.order')),
            ],
            options={
                'ordering': ['-id'],
            },
        ),
        migrations.CreateModel(
            name='WebhookDelivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('url', models.URLField(max_length=2000)),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('delivered', 'Delivered'), ('parked', 'Parked')], default='pending', max_length=16)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('next_attempt_at', models.DateTimeField(blank=True, help_text='When it is due; an attempt in flight moves it past its timeout.', null=True)),
                ('give_up_at', models.DateTimeField(help_text='A failure after this parks the delivery.')),
                ('last_status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('last_error', models.TextField(blank=True, default='')),
                ('delivered_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('event', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='orders.outboundevent')),
                ('endpoint', models.ForeignKey(blank=True, help_text='Empty for a URL from CARTFLOW_WEBHOOK_ENDPOINTS.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='deliveries', to='orders.webhookendpoint')),
            ],
            options={
                'verbose_name_plural': 'webhook deliveries',
                'ordering': ['-id'],
            },
        ),
        migrations.CreateModel(
            name='WebhookDeliveryAttempt',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.PositiveIntegerField()),
                ('at', models.DateTimeField()),
                ('signed_at', models.PositiveBigIntegerField(help_text="The signature's t (unix seconds).")),
                ('duration_ms', models.PositiveIntegerField()),
                ('status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('error', models.CharField(blank=True, default='', max_length=500)),
                ('response_head', models.CharField(blank=True, default='', max_length=512)),
                ('delivery', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='attempt_log', to='orders.webhookdelivery')),
            ],
            options={
                'ordering': ['delivery_id', 'number'],
            },
        ),
        migrations.AddIndex(
            model_name='outboundevent',
            index=models.Index(condition=models.Q(('fanned_out_at__isnull', True)), fields=['created_at'], name='outbound_event_unsent'),
        ),
        migrations.AddConstraint(
            model_name='outboundevent',
            constraint=models.UniqueConstraint(fields=('order', 'key'), name='outbound_event_once_per_key'),
        ),
        migrations.AddIndex(
            model_name='webhookdelivery',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['next_attempt_at'], name='webhook_delivery_due'),
        ),
        migrations.AddConstraint(
            model_name='webhookdelivery',
            constraint=models.UniqueConstraint(fields=('event', 'url'), name='webhook_delivery_once_per_url'),
        ),
        migrations.RunPython(create_schedule, delete_schedule),
    ]
