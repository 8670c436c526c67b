from django.core.management.base import BaseCommand

from inventory.catalog import catalog_seed_demo


class Command(BaseCommand):
    help = "Load the demo catalog (idempotent: existing products are left as they are)."

    def handle(self, *args, **options) -> None:
        created, kept = catalog_seed_demo()
        self.stdout.write(self.style.SUCCESS(f"demo catalog: {created} created, {kept} already there"))
