from datetime import UTC, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from payments.reconciliation import payments_reconcile


def _since(raw: str | None):
    if raw is None:
        return timezone.now() - timedelta(hours=24)
    if raw == "all":
        return None
    value = parse_datetime(raw) or parse_datetime(f"{raw}T00:00:00")
    if value is None:
        raise CommandError(f"--since {raw!r} is not an ISO 8601 date or datetime")
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value


class Command(BaseCommand):
    help = (
        "Compare every payment updated since --since with its PaymentIntent in Stripe, repair drift (sync, "
        "refund a charge on a cancelled order) and print a table. Exits 1 when something needs a human."
    )

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument(
            "--since",
            help="ISO 8601 date/datetime (UTC when no offset); default: the last 24 hours; 'all' for every payment.",
        )

    def handle(self, *args, **options) -> None:
        report = payments_reconcile(since=_since(options["since"]))
        self.stdout.write(report.as_table())
        if report.needs_human:
            raise CommandError("some payments need a human (see the table above)", returncode=1)
        self.stdout.write(self.style.SUCCESS("payments and Stripe agree" if not report.rows else "drift repaired"))
