from django.core.management.base import BaseCommand, CommandError

from widgets.models import Widget


class Command(BaseCommand):
    help = (
        "Verify the ledger invariant: every widget's stock equals the sum of its movements "
        "and its newest movement's stock_after; and that no widget has more units reserved "
        "than in stock. Exits non-zero listing the widgets that break either."
    )

    def handle(self, *args, **options):
        broken = list(Widget.objects.ledger_mismatches().values_list("pk", "sku", "stock", "ledger_sum")[:50])
        if broken:
            lines = [f"  widget {pk} ({sku}): stock {stock}, ledger {total}" for pk, sku, stock, total in broken]
            raise CommandError("Ledger invariant broken:\n" + "\n".join(lines))
        over = list(
            Widget.objects.filter(pk__in=Widget.objects.over_reserved().values("pk"))
            .with_availability()
            .values_list("pk", "sku", "stock", "reserved")[:50]
        )
        if over:
            lines = [f"  widget {pk} ({sku}): stock {stock}, reserved {reserved}" for pk, sku, stock, reserved in over]
            raise CommandError("More reserved than in stock:\n" + "\n".join(lines))
        self.stdout.write(f"Ledger invariant holds for {Widget.objects.count()} widgets; none is over-reserved.")
