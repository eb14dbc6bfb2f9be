from django.core.management.base import BaseCommand, CommandError

from widgets.models import Widget


class Command(BaseCommand):
    help = (
        "Verify the ledger invariant: every widget's stock equals the sum of its movements "
        "and its newest movement's stock_after. Exits non-zero listing the widgets that break it."
    )

    def handle(self, *args, **options):
        broken = list(
            Widget.objects.ledger_mismatches().values_list("pk", "sku", "stock", "ledger_sum")[:50]
        )
        if broken:
            lines = [f"  widget {pk} ({sku}): stock {stock}, ledger {total}" for pk, sku, stock, total in broken]
            raise CommandError("Ledger invariant broken:\n" + "\n".join(lines))
        self.stdout.write(f"Ledger invariant holds for {Widget.objects.count()} widgets.")
