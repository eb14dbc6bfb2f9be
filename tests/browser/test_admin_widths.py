"""The admin's widget list and ledger fit a 1366 px wide screen (the most common laptop
width): no horizontal scrolling, every column header in view, SKUs on one line."""

import pytest

from tests.browser.conftest import log_in_to_admin, screenshot
from widgets import services
from widgets.models import Category

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

WIDTH = 1366

MEASURE = """() => {
    const table = document.querySelector('#result_list');
    const results = table.closest('.results');  // the admin scrolls the table inside this
    const headers = [...table.querySelectorAll('thead th')].map(th => ({
        text: th.innerText.trim(), right: th.getBoundingClientRect().right,
    }));
    const skus = [...table.querySelectorAll('tbody .field-sku a, tbody .field-widget_sku a')];
    return {
        pageWidth: document.documentElement.scrollWidth,
        viewport: window.innerWidth,
        tableRight: table.getBoundingClientRect().right,
        hiddenByScrolling: results.scrollWidth - results.clientWidth,
        headers: headers,
        wrappedSkus: skus.filter(a => a.getClientRects().length > 1).map(a => a.innerText),
        skuCount: skus.length,
    };
}"""


def realistic_widgets(user):
    fasteners = Category.objects.create(name="Fasteners and fixings", slug="fasteners")
    widgets = []
    for n, name in enumerate(
        [
            "Stainless steel hex bolt M8 x 40 mm, A2-70",
            "Zinc-plated wing nut M10 (pack of 25)",
            "Heavy-duty galvanised shelf bracket 300 mm",
        ]
    ):
        widget = services.create_widget(
            sku=f"WGT-{100042 + n:06d}",
            name=name,
            category=fasteners,
            price="1234.50",
            stock=1200,
            reorder_level=250,
        )
        services.adjust_stock(
            widget_id=widget.pk,
            delta=-17,
            reason="sold",
            user=user,
            note="Order 2026-11-1042 for Northwind Traders, collected at the counter",
        )
        widgets.append(widget)
    return widgets


@pytest.mark.parametrize(
    "path, last_columns",
    [
        ("/admin/widgets/widget/", ["UPDATED AT"]),
        ("/admin/widgets/stockmovement/", ["CREATED BY", "NOTE"]),
    ],
    ids=["widgets", "ledger"],
)
def test_changelist_fits_1366_pixels(browser_page, admin_user, path, last_columns):
    realistic_widgets(admin_user)
    page = browser_page
    page.set_viewport_size({"width": WIDTH, "height": 768})
    log_in_to_admin(page, admin_user)

    page.goto(page.url_for(path))
    sizes = page.evaluate(MEASURE)
    screenshot(page, "width-" + path.strip("/").replace("/", "-"))

    assert sizes["pageWidth"] <= sizes["viewport"] == WIDTH, sizes
    assert sizes["tableRight"] <= WIDTH and sizes["hiddenByScrolling"] == 0, sizes
    headers = {h["text"].upper(): h["right"] for h in sizes["headers"]}
    for column in last_columns:
        assert column in headers and headers[column] <= WIDTH, sizes
    assert sizes["skuCount"] >= 3 and sizes["wrappedSkus"] == [], sizes
