import getpass

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cartflow.problems import DomainError
from orders.cancellation import cancel_summary, order_cancel_paid
from payments.errors import PaymentProviderBusy, PaymentTransientError, RefundInProgress

# Exit status 75 (EX_TEMPFAIL in sysexits.h): the cancellation is started; run the command again to finish it.
TRY_AGAIN = (RefundInProgress, PaymentTransientError, PaymentProviderBusy)


class Command(BaseCommand):
    help = (
        "Cancel a paid order (confirmed or fulfilled): refund what is left or void the authorization, put the "
        "stock back (unless --no-restock), order cancelled. Safe to run again. Exits 1 when refused, 75 when it "
        "should be run again to finish."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("order_id", help="the order's id (ord_…)")
        parser.add_argument("--no-restock", action="store_true", help="leave the stock as it is (goods not returned)")
        parser.add_argument("--reason", default="", help="why, kept on the order with who ran the command")

    def handle(self, *args, **options) -> None:
        try:
            done = order_cancel_paid(
                order_id=options["order_id"],
                restock=not options["no_restock"],
                reason=options["reason"],
                actor=f"manage.py cancel_order ({_os_user()})",
            )
        except TRY_AGAIN as exc:
            raise CommandError(f"{exc.detail} (run the command again)", returncode=75) from exc
        except DomainError as exc:
            raise CommandError(exc.detail, returncode=1) from exc
        self.stdout.write(cancel_summary(done))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown user"
