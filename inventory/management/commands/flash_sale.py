"""`manage.py flash_sale start|stop|status SKU`: put a product into (or out of) flash-sale mode."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cartflow.problems import DomainError
from inventory.flashsale import flash_pool_state, flash_sale_start, flash_sale_stop
from inventory.models import Product


class Command(BaseCommand):
    help = "start: flag the product and open its token pool with its available stock; stop: close it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["start", "stop", "status"])
        parser.add_argument("sku")

    def handle(self, *args: object, action: str, sku: str, **options: object) -> None:
        product_id = Product.objects.filter(sku=sku).values_list("id", flat=True).first()
        if product_id is None:
            raise CommandError(f"no product with sku {sku!r}")
        try:
            if action == "start":
                state = flash_sale_start(product_id=product_id)
                self.stdout.write(f"{sku}: flash sale on, {state.free} tokens free, {state.inflight} in flight")
            elif action == "stop":
                flash_sale_stop(product_id=product_id)
                self.stdout.write(f"{sku}: flash sale off, pool closed")
            else:
                state = flash_pool_state(product_id=product_id)
                if state is None:
                    self.stdout.write(f"{sku}: no pool")
                else:
                    self.stdout.write(f"{sku}: {state.free} free, {state.inflight} in flight, {state.queued} queued")
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
