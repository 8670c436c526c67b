from django.core.management.base import BaseCommand

from inventory.services import reservations_release_expired


class Command(BaseCommand):
    help = "Release every HELD reservation past its expiry (what the beat task does) and print the holders."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--batch-size", type=int, default=500, help="Holders per query (default 500).")

    def handle(self, *args, **options) -> None:
        holders = reservations_release_expired(batch_size=options["batch_size"])
        for holder in holders:
            self.stdout.write(f"expired {holder}")
        self.stdout.write(self.style.SUCCESS(f"released {len(holders)} expired reservation(s)"))
