"""The hottest statements are prepared once per PostgreSQL connection (widgets/prepared.py):
a widget's retrieve and the one-statement adjustments answer exactly as the same statements
sent as text do, survive rollbacks and reconnects, and stay bounded per connection."""

import pytest
from django.db import connection

from widgets import prepared

from .conftest import postgres_only
from .test_fast_writes import adjust, batch, reserve, run

# A fresh session is a closed connection, so these tests run outside a test transaction.
pytestmark = [postgres_only, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def fresh_session(transactional_db):
    """A new database session, with nothing prepared."""
    connection.close()


def session_statements():
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def hot_paths(clerk, widgets):
    plenty, few, none = widgets
    return [
        clerk.get(f"/api/widgets/{plenty}/"),
        adjust(clerk, plenty, -3),
        adjust(clerk, none, 4),
        adjust(clerk, few, -100),  # refused: 409, nothing written
        batch(clerk, (plenty, -1), (few, 2), (plenty, 5)),
        batch(clerk, (few, -50)),
        reserve(clerk, plenty, 2),
        clerk.get(f"/api/widgets/{plenty}/"),  # available counts the reservation
        adjust(clerk, plenty, -1),
        clerk.get(f"/api/widgets/{999_999_999}/"),
    ]


def test_prepared_statements_answer_as_the_statements_sent_as_text(settings, monkeypatch, clerk, create_widget):
    widgets = [create_widget(stock=stock, reorder_level=5)["id"] for stock in (10, 3, 0)]
    settings.PREPARED_STATEMENTS = True
    with_prepared = run(monkeypatch, True, clerk, widgets, hot_paths)
    settings.PREPARED_STATEMENTS = False
    as_text = run(monkeypatch, True, clerk, widgets, hot_paths)

    assert with_prepared == as_text
    statuses = [answer[0] for answer in with_prepared["answers"]]
    assert statuses == [200, 201, 201, 409, 201, 409, 201, 200, 201, 404]


def test_a_retrieve_and_an_adjustment_are_prepared_once_per_connection(fresh_session, clerk, create_widget):
    widget = create_widget(stock=10)["id"]
    before = len(session_statements())
    for _ in range(3):
        assert clerk.get(f"/api/widgets/{widget}/").status_code == 200
        assert adjust(clerk, widget, -1).status_code == 201

    statements = session_statements()
    assert len(statements) == before + 2
    assert any('FROM "widgets_widget"' in s and "$3" in s for s in statements)
    assert any(s.startswith("PREPARE") and "INSERT INTO widgets_stockmovement" in s for s in statements)
    assert clerk.get(f"/api/widgets/{widget}/").json()["stock"] == 7


def test_a_reconnect_prepares_again(fresh_session, clerk, create_widget):
    widget = create_widget(stock=10)["id"]
    assert adjust(clerk, widget, -1).status_code == 201
    connection.close()  # as after a failed health check or CONN_MAX_AGE

    assert clerk.get(f"/api/widgets/{widget}/").json()["stock"] == 9
    assert adjust(clerk, widget, -1).status_code == 201
    assert clerk.get(f"/api/widgets/{widget}/").json()["stock"] == 8


def test_a_connection_keeps_a_bounded_number_of_statements(fresh_session, monkeypatch, clerk, create_widget):
    monkeypatch.setattr(prepared, "MAX_PER_CONNECTION", 3)
    widgets = [create_widget(stock=20)["id"] for _ in range(5)]
    before = len(session_statements())
    # Each batch size is a statement of its own.
    for size in range(1, 6):
        response = batch(clerk, *[(widget, -1) for widget in widgets[:size]])
        assert response.status_code == 201, response.content

    assert len(session_statements()) - before <= 3
    stocks = [clerk.get(f"/api/widgets/{widget}/").json()["stock"] for widget in widgets]
    assert stocks == [15, 16, 17, 18, 19]


@pytest.mark.parametrize("enabled", [True, False])
def test_the_setting_turns_them_off(fresh_session, settings, clerk, create_widget, enabled):
    settings.PREPARED_STATEMENTS = enabled
    widget = create_widget(stock=10)["id"]
    before = len(session_statements())
    assert clerk.get(f"/api/widgets/{widget}/").status_code == 200
    assert adjust(clerk, widget, -1).status_code == 201

    assert len(session_statements()) - before == (2 if enabled else 0)
