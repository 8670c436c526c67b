from django.core.management.base import BaseCommand, CommandError

from cartflow.invariants import run_all


class Command(BaseCommand):
    help = "Check every CartFlow invariant; exit non-zero and list each violation when one fails."

    def handle(self, *args, **options) -> None:
        results = run_all()
        violations = [(name, v) for name, vs in results.items() for v in vs]
        for name, vs in results.items():
            self.stdout.write(f"{'FAIL' if vs else 'ok  '}  {name}")
        if violations:
            for name, v in violations:
                self.stderr.write(f"violation [{name}]: {v}")
            raise CommandError(f"{len(violations)} invariant violation(s)")
        self.stdout.write(self.style.SUCCESS(f"all {len(results)} invariants hold"))
