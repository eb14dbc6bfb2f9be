"""The read paths' shortcuts give the plain path's answers (widgets/api/views.py,
widgets/models.py ReservedUnits, widgets/api/fast_fields.py annotations).

The widget list and retrieve use one ``Widget.objects.with_availability()`` built once per
process and cloned per request; ``reserved`` must still be counted at each request's time,
and the answers must be what a queryset built for the request, serialized by plain DRF, gives.
"""

import contextlib
from datetime import timedelta

import pytest
from django.contrib import messages
from django.db import connection
from django.db.models import F, signals
from django.http import HttpResponse
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.functional import empty
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory
from rest_framework.utils.urls import remove_query_param, replace_query_param

from config.middleware import LazyMessageMiddleware
from widgets import services
from widgets.api.fast_fields import plain_drf
from widgets.api.serializers import WidgetSerializer
from widgets.models import Widget

pytestmark = pytest.mark.django_db

URL = "/api/widgets/"


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    return time_machine


def plain_answers():
    """Each widget as a queryset made now and plain DRF serialize it."""
    request = Request(APIRequestFactory().get(URL))
    with plain_drf():
        widgets = Widget.objects.with_availability().order_by("id")
        return {w["id"]: w for w in WidgetSerializer(widgets, many=True, context={"request": request}).data}


def served(client):
    listed = client.get(f"{URL}?limit=100&ordering=id").json()["results"]
    retrieved = [client.get(f"{URL}{w['id']}/").json() for w in listed]
    assert listed == retrieved
    return {w["id"]: w for w in listed}


def test_list_and_retrieve_answer_as_a_queryset_built_for_the_request(viewer, create_widget, clock):
    held, free = create_widget(stock=10), create_widget(stock=3)
    services.create_reservation(reference="order-1", items=[{"widget": held["id"], "quantity": 4}], ttl_seconds=60)
    services.create_reservation(reference="order-2", items=[{"widget": held["id"], "quantity": 1}], ttl_seconds=120)

    first = served(viewer)
    assert (first[held["id"]]["reserved"], first[held["id"]]["available"]) == (5, 5)
    assert first[free["id"]]["reserved"] == 0
    assert first == plain_answers()

    clock.shift(timedelta(seconds=60))  # order-1 expires: the same process counts it no more
    second = served(viewer)
    assert (second[held["id"]]["reserved"], second[held["id"]]["available"]) == (1, 9)
    assert second == plain_answers()

    clock.shift(timedelta(seconds=60))
    assert served(viewer)[held["id"]]["reserved"] == 0
    assert served(viewer) == plain_answers()


def test_a_widget_without_the_annotation_is_serialized_as_plain_drf_does(create_widget):
    # The fast reads of an annotation and of a property fall back to DRF's own way when the
    # value is absent (DRF then leaves out the read-only fields reserved and available).
    widget = Widget.objects.get(pk=create_widget(stock=2)["id"])
    request = Request(APIRequestFactory().get(URL))
    fast = WidgetSerializer(widget, context={"request": request}).data
    with plain_drf():
        assert WidgetSerializer(widget, context={"request": request}).data == fast
    assert "reserved" not in fast and "available" not in fast and fast["stock"] == 2

    widget.reserved = 1  # set on the instance, as the annotation is
    fast = WidgetSerializer(widget, context={"request": request}).data
    with plain_drf():
        assert WidgetSerializer(widget, context={"request": request}).data == fast
    assert (fast["reserved"], fast["available"]) == (1, 1)


def test_low_stock_sql_selects_what_the_orm_condition_selects(create_widget, clock):
    # LowStock (one SQL expression) against the definition in ORM terms, "available <=
    # reorder_level" with ``available`` annotated: the same widgets on each side, with
    # reservations active, expired, committed and released.
    widgets = [
        create_widget(stock=stock, reorder_level=level)["id"]
        for stock, level in [(0, 0), (5, 5), (6, 5), (10, 5), (10, 5), (10, 5), (3, 0), (8, 2)]
    ]

    def held(index, quantity, ttl=120):
        items = [{"widget": widgets[index], "quantity": quantity}]
        return services.create_reservation(reference=f"r{index}-{quantity}", items=items, ttl_seconds=ttl)

    held(2, 1)  # 6 - 1 = 5: low
    held(3, 4)  # 10 - 4 = 6: not low
    held(4, 3, ttl=60)
    held(4, 2)  # 10 - 5 = 5: low until the first expires
    services.commit_reservation(reservation_id=held(5, 6).pk)  # sold: stock 4, low
    services.release_reservation(reservation_id=held(6, 3).pk)
    held(7, 8)  # 8 - 8 = 0 <= 2

    def compare(expected_low):
        now = timezone.now()
        queryset = Widget.objects.with_availability(now)
        orm_low = set(queryset.filter(available__lte=F("reorder_level")).values_list("id", flat=True))
        orm_not_low = set(queryset.filter(available__gt=F("reorder_level")).values_list("id", flat=True))
        sql_low = set(Widget.objects.low_stock().values_list("id", flat=True))
        assert sql_low == set(Widget.objects.low_stock(now).values_list("id", flat=True))
        assert sql_low == orm_low == {widgets[i] for i in expected_low}
        assert set(Widget.objects.not_low_stock().values_list("id", flat=True)) == orm_not_low
        assert orm_low.isdisjoint(orm_not_low) and len(orm_low | orm_not_low) == len(widgets)

    compare({0, 1, 2, 4, 5, 7})
    clock.shift(timedelta(seconds=60))  # the 3 held of widget 4 expire: 10 - 2 = 8
    compare({0, 1, 2, 5, 7})
    clock.shift(timedelta(seconds=60))  # every other hold expires
    compare({0, 1, 5})


def test_messages_are_stored_only_for_requests_that_use_them(viewer):
    # LazyMessageMiddleware: an API request makes no message storage (and sets no cookie);
    # a message added in one request is read in the next, as with the plain middleware.
    response = viewer.get(URL)
    assert response.status_code == 200
    assert response.wsgi_request._messages._wrapped is empty
    assert "messages" not in response.cookies

    def add(request):
        messages.info(request, "Hello from the admin.")
        return HttpResponse("added")

    def read(request):
        return HttpResponse("|".join(str(m) for m in messages.get_messages(request)))

    factory = RequestFactory()
    first = factory.get("/")
    first.session = {}
    added = LazyMessageMiddleware(add)(first)
    assert "messages" in added.cookies
    second = factory.get("/")
    second.session, second.COOKIES["messages"] = {}, added.cookies["messages"].value
    shown = LazyMessageMiddleware(read)(second)
    assert shown.content == b"Hello from the admin."
    assert shown.cookies["messages"].value == ""  # read, so cleared


def test_fresh_generations_are_never_repeated_in_a_process_or_its_forks():
    # credentials._fresh_generation: what the Lua script sets when no generation is stored.
    import os

    from widgets import credentials

    mine = {credentials._fresh_generation() for _ in range(1000)}
    assert len(mine) == 1000
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, credentials._fresh_generation().encode())
        os._exit(0)
    os.waitpid(child, 0)
    forked = os.read(read, 100).decode()
    os.close(read), os.close(write)
    assert forked not in mine and forked.split("-")[0] != next(iter(mine)).split("-")[0]


@pytest.mark.parametrize("format", ["json", None])
def test_the_url_of_each_row_is_what_drf_writes(create_widget, format):
    # ReadPlanMixin reads the request and format once per serializer for the url field.
    create_widget(stock=1), create_widget(stock=2)
    widgets = list(Widget.objects.with_availability().order_by("id"))
    context = {"format": format, "request": Request(APIRequestFactory().get(URL))}
    fast = WidgetSerializer(widgets, many=True, context=context).data
    with plain_drf():
        plain = WidgetSerializer(widgets, many=True, context=context).data
    assert fast == plain
    assert [type(w["url"]) for w in fast] == [type(w["url"]) for w in plain]


def test_without_a_request_the_url_field_fails_as_in_drf(create_widget):
    widget = Widget.objects.with_availability().get(pk=create_widget(stock=1)["id"])
    errors = []
    for plain in (False, True):
        with plain_drf() if plain else contextlib.nullcontext(), pytest.raises(AssertionError) as raised:
            _ = WidgetSerializer(widget).data
        errors.append(str(raised.value))
    assert errors[0] == errors[1] and "requires the request" in errors[0]


FILTER_QUERIES = [
    "search=brass&low_stock=true",
    "low_stock=false&ordering=-available",
    "min_available=3&max_available=40&ordering=name",
    "category=no-such-category",
    "min_price=abc&is_active=maybe",
    "max_stock=5&min_stock=x&low_stock=yes",
    "ordering=bogus",
    "updated_after=2020-01-01T00:00:00Z&search=",
    "search=a&is_active=false&min_price=0.001",
    "limit=5&offset=2&search=e",
]


@pytest.mark.parametrize("query", FILTER_QUERIES)
def test_a_filterset_of_the_named_filters_answers_as_the_whole_one(viewer, query, monkeypatch):
    # FilterBackend builds a FilterSet of the filters a request names; django-filter's own
    # backend builds all of them. The answers (results or 400s) must be the same.
    from django.core.management import call_command
    from django_filters.rest_framework import DjangoFilterBackend

    from widgets.api.filters import FilterBackend

    call_command("seed_widgets", count=40, days=0, verbosity=0)
    url = f"{URL}?{query}"
    fast = viewer.get(url)
    with monkeypatch.context() as plain:
        plain.setattr(FilterBackend, "filter_queryset", DjangoFilterBackend.filter_queryset)
        whole = viewer.get(url)
    assert (fast.status_code, fast.json()) == (whole.status_code, whole.json())


class TestCompiledRetrieve:
    """A widget's retrieve reads it with SQL compiled once per process
    (``Widget.objects.get_with_availability``); its answers are those of DRF's own lookup."""

    def test_the_answer_and_etag_are_those_of_the_lookup_drf_makes(self, viewer, create_widget, clock):
        widget = create_widget(stock=10)
        services.create_reservation(reference="o-1", items=[{"widget": widget["id"], "quantity": 4}], ttl_seconds=60)
        url = f"{URL}{widget['id']}/"
        # A query parameter (here one that filters nothing away) sends the request DRF's way.
        compiled, plain = viewer.get(url), viewer.get(f"{url}?is_active=true")
        assert compiled.json() == plain.json() and compiled["ETag"] == plain["ETag"]
        assert compiled.json()["available"] == 6

        clock.shift(timedelta(seconds=60))  # the hold expires: counted at each request's time
        compiled, plain = viewer.get(url), viewer.get(f"{url}?is_active=true")
        assert compiled.json() == plain.json() and compiled["ETag"] == plain["ETag"]
        assert compiled.json()["available"] == 10

    def test_filters_in_the_query_still_apply_to_a_detail_lookup(self, viewer, create_widget):
        widget = create_widget(stock=1)
        assert viewer.get(f"{URL}{widget['id']}/?format=json").status_code == 200
        response = viewer.get(f"{URL}{widget['id']}/?is_active=false")
        assert response.status_code == 404 and response.json()["code"] == "not_found"

    @pytest.mark.parametrize("widget_id", ["0", "987654", str(2**63), "9" * 25])
    def test_no_such_widget_is_a_json_404(self, viewer, create_widget, widget_id):
        create_widget(stock=1)
        response = viewer.get(f"{URL}{widget_id}/")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"

    def test_it_is_for_the_unfiltered_queryset_only(self, create_widget):
        widget = create_widget(stock=1)
        assert Widget.objects.get_with_availability(widget["id"]).reserved == 0
        with pytest.raises(TypeError):
            Widget.objects.filter(is_active=True).get_with_availability(widget["id"])


class TestCompiledInstances:
    """The compiled reads make the instances the ORM makes: the same fields and annotation,
    loaded from the database (saving one updates its row), and through Model.__init__ when
    anything listens to the model's pre_init or post_init signal."""

    @pytest.fixture
    def widgets(self, create_widget):
        ids = [create_widget(stock=3 + index)["id"] for index in range(3)]
        services.create_reservation(reference="order-1", items=[{"widget": ids[1], "quantity": 2}])
        return ids

    def orm(self):
        return list(Widget.objects.with_availability().order_by("id"))

    def compiled(self, ids):
        return [
            *Widget.objects.all().compiled_page(offset=0, limit=2),
            *Widget.objects.all().compiled_keyset(start=ids[2], limit=5),
        ]

    @staticmethod
    def state(instances):
        return [({k: v for k, v in vars(w).items() if k != "_state"}, w._state.adding, w._state.db) for w in instances]

    def test_the_instances_are_the_orms(self, widgets):
        compiled = self.compiled(widgets)

        assert self.state(compiled) == self.state(self.orm())
        assert self.state([Widget.objects.get_with_availability(widgets[1])]) == self.state(self.orm()[1:2])
        assert [w.reserved for w in compiled] == [0, 2, 0]

    def test_a_compiled_instance_saves_to_its_row(self, widgets):
        [first, _] = Widget.objects.all().compiled_page(offset=0, limit=2)
        first.name = "Renamed"
        first.save(update_fields=["name"])

        assert Widget.objects.count() == 3 and Widget.objects.get(pk=widgets[0]).name == "Renamed"

    def test_init_signals_are_sent_when_something_listens(self, widgets):
        seen = []

        def receiver(sender, instance, **kwargs):
            seen.append(instance.pk)

        signals.post_init.connect(receiver, sender=Widget)
        try:
            compiled = self.compiled(widgets)
        finally:
            signals.post_init.disconnect(receiver, sender=Widget)

        assert seen == widgets
        assert self.state(compiled) == self.state(self.orm())


class TestCompiledPages:
    """The plain list (no filter, no ordering) and its keyset mode read their pages with SQL
    compiled once per process (``WidgetQuerySet.compiled_page``, ``compiled_keyset``); the
    pages are those of the queryset built for the request, sliced, at each request's time."""

    @pytest.fixture
    def stocked(self, create_widget, clock):
        ids = [create_widget(stock=5 + index)["id"] for index in range(7)]
        for index, quantity, ttl in [(2, 3, 60), (4, 1, 120), (6, 6, 60)]:
            items = [{"widget": ids[index], "quantity": quantity}]
            services.create_reservation(reference=f"order-{index}", items=items, ttl_seconds=ttl)
        return ids

    PAGES = [
        ("limit=3", 0, 3, None),
        ("limit=3&offset=2", 2, 3, None),
        ("limit=3&offset=6", 6, 3, None),
        ("limit=2&offset=50", 50, 2, None),
        ("start=0&limit=3", None, 3, 0),
        ("start={third}&limit=3", None, 3, 2),
        ("start={last}&limit=5", None, 5, 6),
    ]

    @pytest.mark.parametrize("query, offset, limit, start_at", PAGES, ids=[page[0] for page in PAGES])
    def test_a_page_is_the_querysets_slice_at_the_time_of_the_request(
        self, viewer, stocked, clock, query, offset, limit, start_at
    ):
        query = query.format(third=stocked[2], last=stocked[6])
        for shift in (60, 0):  # and again once two of the holds have expired
            answers = plain_answers()
            expected = list(answers.values())
            if start_at is None:
                expected = expected[offset : offset + limit]
            else:
                expected = [widget for widget in expected if widget["id"] >= stocked[start_at]][:limit]
            body = viewer.get(f"{URL}?{query}").json()
            assert body["results"] == expected
            if start_at is None:
                assert body["count"] == 7
            clock.shift(timedelta(seconds=shift))
        assert [answers[pk]["reserved"] for pk in stocked] == [0, 0, 0, 0, 1, 0, 0]

    def test_the_keyset_mode_walks_the_whole_list(self, viewer, stocked):
        url, seen = f"{URL}?start=0&limit=3", []
        while url:
            body = viewer.get(url).json()
            seen += body["results"]
            url = body["next"]
        assert seen == list(plain_answers().values())

    def test_a_filtered_or_reordered_list_is_sliced_as_before(self, viewer, stocked, create_widget):
        inactive = create_widget(stock=1, is_active=False)["id"]
        assert [w["id"] for w in viewer.get(f"{URL}?ordering=-id&limit=3").json()["results"]] == [
            inactive,
            stocked[6],
            stocked[5],
        ]
        assert [w["id"] for w in viewer.get(f"{URL}?is_active=false").json()["results"]] == [inactive]
        assert [w["id"] for w in viewer.get(f"{URL}?is_active=true&start={stocked[5]}").json()["results"]] == [
            stocked[5],
            stocked[6],
        ]

    @pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL: the exact count is bounded there only")
    def test_the_count_is_exact_up_to_the_limit_in_one_prepared_statement(self, viewer, stocked, settings):
        settings.API_EXACT_COUNT_LIMIT = 7
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Widget._meta.db_table}")  # the statistics now say 7 rows
        viewer.get(f"{URL}?limit=2")  # reads them, and prepares the statements, once
        with CaptureQueriesContext(connection) as queries:
            body = viewer.get(f"{URL}?limit=2").json()
        assert (body["count"], "count_is_estimate" in body) == (7, False)
        # The count, then the page, each a prepared statement (after the token's queries).
        assert [query["sql"][:7] for query in queries][-2:] == ["EXECUTE", "EXECUTE"]
        assert not [query for query in queries if "COUNT" in query["sql"].upper()]

        settings.API_EXACT_COUNT_LIMIT = 6  # one row more than the limit: the planner's estimate
        body = viewer.get(f"{URL}?limit=2").json()
        assert body["count"] >= 7 and body["count_is_estimate"] is True

    # Queries with what parsing a query string must survive: repeated, blank and bare
    # parameters, escaped separators, bad escapes, non-ASCII, a fragment-like character.
    ODD_QUERIES = [
        "limit=2&offset=3",
        "offset=1&limit=2&zeta=1&alpha=2&alpha=1",
        "limit=2&offset=4&note=a%26b%3Dc&blank=&bare&&tag=%zz&name=caf%C3%A9+x&bad=%FF%FE&hash=%23x",
        "limit=2&offset=2&limit=2&x=+y+",
        "limit=3&start={second}&keep=1&keep=2",
    ]

    @pytest.mark.parametrize("query", ODD_QUERIES)
    def test_page_links_are_drfs_for_the_requests_url(self, viewer, stocked, query):
        query = query.format(second=stocked[1])
        response = viewer.get(f"{URL}?{query}")
        body = response.json()
        url = response.wsgi_request.build_absolute_uri()
        limit = int(response.wsgi_request.GET["limit"])
        if "start" in query:  # the keyset mode: next starts after the last row
            assert body["next"] == replace_query_param(replace_query_param(url, "limit", limit), "start", stocked[4])
            return
        offset = int(response.wsgi_request.GET["offset"])
        assert body["next"] == replace_query_param(replace_query_param(url, "limit", limit), "offset", offset + limit)
        with_limit = replace_query_param(url, "limit", limit)
        assert body["previous"] == (
            remove_query_param(with_limit, "offset")
            if offset - limit <= 0
            else replace_query_param(with_limit, "offset", offset - limit)
        )

    @pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL: statements are prepared there only")
    @pytest.mark.parametrize("mode", ["offset", "start"])
    def test_every_page_is_one_prepared_statement(self, viewer, stocked, mode):
        statements = set()
        for value in (0, 2, 5) if mode == "offset" else (0, stocked[3], stocked[6]):
            with CaptureQueriesContext(connection) as queries:
                assert viewer.get(f"{URL}?{mode}={value}&limit=2").status_code == 200
            page = queries[-1]["sql"]  # after the count, if any: the page
            assert page.startswith("EXECUTE w_"), page
            statements.add(page.split("(")[0])
        assert len(statements) == 1
