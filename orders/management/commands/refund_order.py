import getpass

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cartflow.problems import DomainError
from orders.refunds import order_refund, refund_summary
from payments.errors import PaymentProviderBusy, PaymentTransientError, RefundInProgress

# Exit status 75 (EX_TEMPFAIL in sysexits.h): nothing is wrong with the request, run it again shortly.
TRY_AGAIN = (RefundInProgress, PaymentTransientError, PaymentProviderBusy)


def minor_units(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(raw)
    return value


class Command(BaseCommand):
    help = (
        "Refund a confirmed or fulfilled order: all that is left, or --amount minor units; never more than was "
        "paid. Exits 1 when refused (nothing done), 75 when it should be run again (Stripe has not answered)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("order_id", help="the order's id (ord_…)")
        parser.add_argument("--amount", type=minor_units, help="minor units (cents); default: all that is left")
        parser.add_argument("--reason", default="", help="why, kept on the order with who ran the command")

    def handle(self, *args, **options) -> None:
        try:
            done = order_refund(
                order_id=options["order_id"],
                amount=options["amount"],
                reason=options["reason"],
                actor=f"manage.py refund_order ({_os_user()})",
            )
        except TRY_AGAIN as exc:
            raise CommandError(f"{exc.detail} (run the command again)", returncode=75) from exc
        except DomainError as exc:
            raise CommandError(exc.detail, returncode=1) from exc
        self.stdout.write(refund_summary(done))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown user"
