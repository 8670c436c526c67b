from django.core.management.base import BaseCommand, CommandParser

from orders.management.money import command_actor, run_operation
from orders.refunds import order_refund, refund_summary


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
        done = run_operation(
            lambda: order_refund(
                order_id=options["order_id"],
                amount=options["amount"],
                reason=options["reason"],
                actor=command_actor("refund_order"),
            )
        )
        self.stdout.write(refund_summary(done))
