import json
import sys

from django.core.management.base import BaseCommand, CommandError

from inventory.catalog import CatalogImportError, catalog_import, catalog_rows_parse


class Command(BaseCommand):
    help = 'Upsert products by sku from a JSON list of {"sku", "name", "price", "currency", "onHand"} (FILE or -).'

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("file", help="path to a JSON file, or - for standard input")

    def handle(self, *args, **options) -> None:
        path = options["file"]
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        try:
            rows = catalog_rows_parse(data=data)
            created, updated = catalog_import(rows=rows)
        except CatalogImportError as exc:
            for index, reason in exc.problems:
                self.stderr.write(f"row {index}: {reason}" if index >= 0 else reason)
            raise CommandError(f"{len(exc.problems)} bad row(s); nothing was written") from None
        self.stdout.write(self.style.SUCCESS(f"imported {len(rows)} rows: {created} created, {updated} updated"))
