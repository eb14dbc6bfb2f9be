"""The floor: the same API requests answered by a minimal raw WSGI app.

No framework: psycopg2 with one persistent connection per process (per thread under gthread), orjson, and the
same SQL and JSON as the Django app, token check included (HMAC digest lookup as in
widgets/api/authentication.py). The benchmark reports the app's figures as a ratio
to this, measured side by side. Serve it with gunicorn: ``gunicorn bench.floor:app``.
Reads DATABASE_URL, DJANGO_SECRET_KEY (or DJANGO_TOKEN_HMAC_KEY) and
API_EXACT_COUNT_LIMIT from the environment, like the app.
"""

import datetime
import hashlib
import hmac
import os
import re
import threading
import time
from urllib.parse import parse_qsl, urlencode

import orjson
import psycopg2

HMAC_KEY = (os.environ.get("DJANGO_TOKEN_HMAC_KEY") or f"token-hmac:{os.environ['DJANGO_SECRET_KEY']}").encode()
EXACT_COUNT_LIMIT = int(os.environ.get("API_EXACT_COUNT_LIMIT", "10000"))
LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)
COLUMNS = (
    "id, sku, name, description, category_id, price, stock, reorder_level, is_active, created_at, updated_at, version"
)
# The units held by active, unexpired reservations: the expression of the app's SELECT
# (Widget.objects.with_availability()), with the request's time as its one parameter; a
# widget with nothing held (the column kept under the row lock) skips the sum.
RESERVED = (
    "CASE WHEN held = 0 THEN 0 ELSE COALESCE((SELECT SUM(i.quantity) FROM widgets_reservationitem i "
    "JOIN widgets_reservation r ON i.reservation_id = r.id "
    "WHERE r.expires_at > %s AND r.status = 'active' AND i.widget_id = widgets_widget.id "
    "GROUP BY i.widget_id), 0) END"
)
# low_stock: available <= reorder_level, summing reservations only for widgets holding units.
LOW_STOCK = f"(stock <= reorder_level OR (held > 0 AND stock - {RESERVED} <= reorder_level))"
DETAIL = re.compile(r"^/api/widgets/([0-9]+)/$")
ADJUST = re.compile(r"^/api/widgets/([0-9]+)/adjust/$")
COMMIT = re.compile(r"^/api/reservations/([0-9]+)/commit/$")
REASONS = {"received", "sold", "returned", "damaged", "correction"}
SEARCH = (
    "(UPPER(sku::text) LIKE UPPER(%s) OR UPPER(name::text) LIKE UPPER(%s) OR UPPER(description::text) LIKE UPPER(%s))"
)

# One persistent connection per process, or per thread when gunicorn runs threads (the
# deployed gunicorn.conf.py does): as Django keeps one per thread.
_local = threading.local()


def db():
    connection = getattr(_local, "connection", None)
    if connection is None or connection.closed:
        connection = _local.connection = psycopg2.connect(os.environ["DATABASE_URL"])
        connection.autocommit = True
    return connection


def timestamp(value: datetime.datetime) -> str:
    text = value.astimezone(datetime.UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def widget_json(row, base: str) -> dict:
    pk, sku, name, description, category, price, stock, reorder, active, created, updated, _, reserved = row
    return {
        "id": pk,
        "url": f"{base}/api/widgets/{pk}/",
        "sku": sku,
        "name": name,
        "description": description,
        "category": category,
        "price": str(price),
        "stock": stock,
        "reserved": reserved,
        "available": stock - reserved,
        "reorder_level": reorder,
        "low_stock": stock - reserved <= reorder,
        "is_active": active,
        "created_at": timestamp(created),
        "updated_at": timestamp(updated),
    }


def reserved_of(cursor, ids: list[int], now) -> dict[int, int]:
    """Units held of each locked widget: its own statement after the lock, as the app does."""
    cursor.execute(
        "SELECT i.widget_id, SUM(i.quantity) FROM widgets_reservationitem i "
        "JOIN widgets_reservation r ON i.reservation_id = r.id "
        "WHERE r.expires_at > %s AND r.status = 'active' AND i.widget_id = ANY(%s) GROUP BY i.widget_id",
        [now, ids],
    )
    return dict(cursor.fetchall())


def respond(start_response, status: str, body) -> list[bytes]:
    data = orjson.dumps(body)
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def authenticate(cursor, environ):
    """(user_id, username, read_only) for a valid token, else None."""
    header = environ.get("HTTP_AUTHORIZATION", "").split()
    if len(header) != 2 or header[0].lower() not in ("token", "bearer"):
        return None
    raw_key = header[1]
    cursor.execute(
        "SELECT t.id, t.digest, t.read_only, t.expires_at, t.revoked_at, t.last_used_at, "
        "u.id, u.username, u.is_active FROM widgets_apitoken t JOIN auth_user u ON u.id = t.user_id "
        "WHERE t.prefix = %s",
        [raw_key[:12]],
    )
    digest = hmac.new(HMAC_KEY, raw_key.encode(), hashlib.sha256).hexdigest()
    now = datetime.datetime.now(datetime.UTC)
    for token_id, stored, read_only, expires, revoked, last_used, user_id, username, active in cursor.fetchall():
        if not hmac.compare_digest(stored, digest):
            continue
        if revoked is not None or (expires is not None and expires <= now) or not active:
            return None
        if last_used is None or now - last_used >= LAST_USED_RESOLUTION:
            cursor.execute("UPDATE widgets_apitoken SET last_used_at = %s WHERE id = %s", [now, token_id])
        return user_id, username, read_only
    return None


_table_size = [0.0, 0]  # (expires, pg_class.reltuples), per process


def count(cursor, where: str, params: list) -> tuple[int, bool]:
    """Exact up to EXACT_COUNT_LIMIT, above it the planner's estimate: the app's SQL."""
    if _table_size[0] <= time.monotonic():
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'widgets_widget'::regclass")
        _table_size[:] = [time.monotonic() + 60, cursor.fetchone()[0]]
    estimate = None
    if _table_size[1] > EXACT_COUNT_LIMIT:
        if not where:  # the whole table: the statistics are the planner's answer
            return _table_size[1], True
        cursor.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM widgets_widget {where}", params)
        estimate = int(cursor.fetchone()[0][0]["Plan"]["Plan Rows"])
        if estimate > EXACT_COUNT_LIMIT:
            return estimate, True
    cursor.execute(
        f"SELECT COUNT(*) FROM (SELECT 1 FROM widgets_widget {where} LIMIT %s) capped",
        [*params, EXACT_COUNT_LIMIT + 1],
    )
    exact = cursor.fetchone()[0]
    if exact <= EXACT_COUNT_LIMIT:
        return exact, False
    if estimate is None:
        cursor.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM widgets_widget {where}", params)
        estimate = int(cursor.fetchone()[0][0]["Plan"]["Plan Rows"])
    return max(estimate, exact), True


def list_widgets(cursor, environ, base: str):
    query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    limit = min(int(query.get("limit", 50)), 1000)
    now = now_utc()
    where, params = [], []
    if query.get("search"):
        like = f"%{query['search']}%"
        where.append(SEARCH)
        params += [like, like, like]
    if query.get("low_stock") == "true":
        where.append(LOW_STOCK)
        params.append(now)
    url = f"{base}/api/widgets/"
    if "start" in query:
        where.append("id >= %s")
        params.append(int(query["start"]))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        cursor.execute(
            f"SELECT {COLUMNS}, {RESERVED} FROM widgets_widget {clause} ORDER BY id LIMIT %s", [now, *params, limit + 1]
        )
        rows = cursor.fetchall()
        following = None
        if len(rows) > limit:
            following = f"{url}?{urlencode({**query, 'start': rows[limit][0]})}"
        return {"next": following, "previous": None, "results": [widget_json(r, base) for r in rows[:limit]]}
    offset = int(query.get("offset", 0))
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    total, estimated = count(cursor, clause, params)
    cursor.execute(
        f"SELECT {COLUMNS}, {RESERVED} FROM widgets_widget {clause} ORDER BY id LIMIT %s OFFSET %s",
        [now, *params, limit, offset],
    )
    rows = cursor.fetchall()
    following = f"{url}?{urlencode({**query, 'offset': offset + limit})}" if offset + limit < total else None
    previous = None
    if offset > 0:
        rest = {k: v for k, v in query.items() if k != "offset"}
        previous = (
            f"{url}?{urlencode({**rest, 'offset': offset - limit})}" if offset > limit else f"{url}?{urlencode(rest)}"
        )
    return {
        "count": total,
        **({"count_is_estimate": True} if estimated else {}),
        "next": following,
        "previous": previous,
        "results": [widget_json(r, base) for r in rows],
    }


def adjust(cursor, widget_id: int, user, body: bytes, start_response):
    data = orjson.loads(body)
    delta, reason, note = data.get("delta"), data.get("reason"), data.get("note", "")
    if not isinstance(delta, int) or delta == 0 or reason not in REASONS:
        return respond(start_response, "400 Bad Request", {"detail": "invalid"})
    cursor.execute("BEGIN")
    try:
        cursor.execute(f"SELECT {COLUMNS} FROM widgets_widget WHERE id = %s FOR UPDATE", [widget_id])
        row = cursor.fetchone()
        if row is None:
            cursor.execute("ROLLBACK")
            return respond(start_response, "404 Not Found", {"detail": "Not found.", "code": "not_found"})
        now = now_utc()
        reserved = reserved_of(cursor, [widget_id], now).get(widget_id, 0)
        new_stock = row[6] + delta
        if delta < 0 and new_stock < reserved:
            cursor.execute("ROLLBACK")
            return respond(
                start_response,
                "409 Conflict",
                {"detail": "Insufficient stock", "code": "insufficient_stock", "available": row[6] - reserved},
            )
        cursor.execute(
            "UPDATE widgets_widget SET stock = %s, version = version + 1, updated_at = %s WHERE id = %s",
            [new_stock, now, widget_id],
        )
        cursor.execute(
            "INSERT INTO widgets_stockmovement (widget_id, delta, reason, note, stock_after, "
            "created_by_id, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [widget_id, delta, reason, note, new_stock, user[0], now],
        )
        movement_id = cursor.fetchone()[0]
        cursor.execute("COMMIT")
    except Exception:
        cursor.execute("ROLLBACK")
        raise
    return respond(
        start_response,
        "201 Created",
        movement_json(movement_id, widget_id, delta, reason, note, new_stock, user[1], now),
    )


def movement_json(movement_id, widget_id, delta, reason, note, stock_after, username, created) -> dict:
    return {
        "id": movement_id,
        "widget": widget_id,
        "delta": delta,
        "reason": reason,
        "note": note,
        "stock_after": stock_after,
        "created_by": username,
        "created_at": timestamp(created),
    }


def adjust_batch(cursor, user, body: bytes, start_response):
    items = orjson.loads(body).get("items") or []
    for item in items:
        if not isinstance(item.get("delta"), int) or item["delta"] == 0 or item.get("reason") not in REASONS:
            return respond(start_response, "400 Bad Request", {"detail": "invalid"})
    ids = sorted({item["widget"] for item in items})
    cursor.execute("BEGIN")
    try:
        cursor.execute(f"SELECT {COLUMNS} FROM widgets_widget WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [ids])
        stock = {row[0]: row[6] for row in cursor.fetchall()}
        now = now_utc()
        reserved = reserved_of(cursor, ids, now)
        rows = []
        for item in items:
            if item["widget"] not in stock or (
                item["delta"] < 0 and stock[item["widget"]] + item["delta"] < reserved.get(item["widget"], 0)
            ):
                cursor.execute("ROLLBACK")
                return respond(
                    start_response, "409 Conflict", {"detail": "Insufficient stock", "code": "insufficient_stock"}
                )
            stock[item["widget"]] += item["delta"]
            rows.append((item["widget"], item["delta"], item["reason"], item.get("note", ""), stock[item["widget"]]))
        cursor.execute(
            "UPDATE widgets_widget w SET stock = v.stock, version = w.version + 1, updated_at = %s "
            "FROM unnest(%s::bigint[], %s::int[]) AS v(id, stock) WHERE w.id = v.id",
            [now, ids, [stock[pk] for pk in ids]],
        )
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        cursor.execute(
            "INSERT INTO widgets_stockmovement (widget_id, delta, reason, note, stock_after, "
            "created_by_id, created_at) "
            f"VALUES {values} RETURNING id",
            [value for row in rows for value in (*row, user[0], now)],
        )
        movement_ids = [r[0] for r in cursor.fetchall()]
        cursor.execute("COMMIT")
    except Exception:
        cursor.execute("ROLLBACK")
        raise
    return respond(
        start_response,
        "201 Created",
        {"movements": [movement_json(movement_id, *row, user[1], now) for movement_id, row in zip(movement_ids, rows)]},
    )


def reservation_json(pk, reference, status, created, expires, closed, items, username) -> dict:
    return {
        "id": pk,
        "reference": reference,
        "status": status,
        "created_at": timestamp(created),
        "expires_at": timestamp(expires),
        "closed_at": timestamp(closed) if closed else None,
        "items": [{"widget": w, "quantity": q} for w, q in items],
        "created_by": username,
    }


def change_log(cursor, user, action, reservation_id, reference, changes, now):
    cursor.execute(
        "INSERT INTO widgets_changelogentry (timestamp, user_id, action, object_type, object_id, object_repr, changes) "
        "VALUES (%s, %s, %s, 'reservation', %s, %s, %s)",
        [now, user[0], action, reservation_id, reference, orjson.dumps(changes).decode()],
    )


def reserve(cursor, user, body: bytes, start_response):
    data = orjson.loads(body)
    reference, items = data.get("reference"), data.get("items") or []
    ttl = data.get("ttl_seconds", 900)
    if not isinstance(reference, str) or not reference.strip() or not 1 <= len(items) <= 100:
        return respond(start_response, "400 Bad Request", {"detail": "invalid"})
    ids = sorted({item["widget"] for item in items})
    cursor.execute("BEGIN")
    try:
        cursor.execute("SELECT id, stock FROM widgets_widget WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [ids])
        stock = dict(cursor.fetchall())
        now = now_utc()
        reserved = reserved_of(cursor, ids, now)
        for index, item in enumerate(items):
            available = stock.get(item["widget"], 0) - reserved.get(item["widget"], 0)
            if item["widget"] not in stock or item["quantity"] > available:
                cursor.execute("ROLLBACK")
                return respond(
                    start_response,
                    "409 Conflict",
                    {
                        "detail": "Insufficient stock",
                        "code": "insufficient_stock",
                        "index": index,
                        "widget": item["widget"],
                        "available": available,
                    },
                )
        expires = now + datetime.timedelta(seconds=ttl)
        cursor.execute(
            "INSERT INTO widgets_reservation (reference, status, created_by_id, created_at, expires_at) "
            "VALUES (%s, 'active', %s, %s, %s) RETURNING id",
            [reference, user[0], now, expires],
        )
        reservation_id = cursor.fetchone()[0]
        pairs = [(item["widget"], item["quantity"]) for item in items]
        cursor.execute(
            "INSERT INTO widgets_reservationitem (reservation_id, widget_id, quantity) VALUES "
            + ", ".join(["(%s, %s, %s)"] * len(pairs)),
            [value for w, q in pairs for value in (reservation_id, w, q)],
        )
        change_log(
            cursor,
            user,
            "create",
            reservation_id,
            reference,
            {
                "reference": [None, reference],
                "status": [None, "active"],
                "expires_at": [None, expires.isoformat()],
                "items": [None, [list(p) for p in pairs]],
            },
            now,
        )
        cursor.execute("COMMIT")
    except Exception:
        cursor.execute("ROLLBACK")
        raise
    return respond(
        start_response,
        "201 Created",
        reservation_json(reservation_id, reference, "active", now, expires, None, pairs, user[1]),
    )


def commit(cursor, user, reservation_id: int, start_response):
    cursor.execute("BEGIN")
    try:
        cursor.execute(
            "SELECT reference, status, created_at, expires_at FROM widgets_reservation WHERE id = %s FOR UPDATE",
            [reservation_id],
        )
        row = cursor.fetchone()
        if row is None:
            cursor.execute("ROLLBACK")
            return respond(start_response, "404 Not Found", {"detail": "Not found.", "code": "not_found"})
        reference, status, created, expires = row
        cursor.execute(
            "SELECT widget_id, quantity FROM widgets_reservationitem WHERE reservation_id = %s ORDER BY id",
            [reservation_id],
        )
        pairs = cursor.fetchall()
        ids = sorted({w for w, _ in pairs})
        cursor.execute("SELECT id, stock FROM widgets_widget WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [ids])
        stock = dict(cursor.fetchall())
        now = now_utc()
        if status != "active" or expires <= now:
            cursor.execute("ROLLBACK")
            code = "reservation_not_active" if status != "active" else "reservation_expired"
            return respond(start_response, "409 Conflict", {"detail": "Not active", "code": code})
        cursor.execute(
            "UPDATE widgets_reservation SET status = 'committed', closed_at = %s WHERE id = %s", [now, reservation_id]
        )
        note = f"Reservation {reservation_id}: {reference}"[:255]
        rows = []
        for widget_id, quantity in pairs:
            stock[widget_id] -= quantity
            rows.append((widget_id, -quantity, "sold", note, stock[widget_id]))
        cursor.execute(
            "UPDATE widgets_widget w SET stock = v.stock, version = w.version + 1, updated_at = %s "
            "FROM unnest(%s::bigint[], %s::int[]) AS v(id, stock) WHERE w.id = v.id",
            [now, ids, [stock[pk] for pk in ids]],
        )
        cursor.execute(
            "INSERT INTO widgets_stockmovement (widget_id, delta, reason, note, stock_after, "
            "created_by_id, created_at) "
            f"VALUES {', '.join(['(%s, %s, %s, %s, %s, %s, %s)'] * len(rows))} RETURNING id",
            [value for row in rows for value in (*row, user[0], now)],
        )
        movement_ids = [r[0] for r in cursor.fetchall()]
        change_log(cursor, user, "update", reservation_id, reference, {"status": ["active", "committed"]}, now)
        cursor.execute("COMMIT")
    except Exception:
        cursor.execute("ROLLBACK")
        raise
    body = reservation_json(reservation_id, reference, "committed", created, expires, now, pairs, user[1])
    body["movements"] = [movement_json(m, *row, user[1], now) for m, row in zip(movement_ids, rows)]
    return respond(start_response, "201 Created", body)


def app(environ, start_response):
    base = f"{environ['wsgi.url_scheme']}://{environ.get('HTTP_HOST', 'localhost')}"
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    with db().cursor() as cursor:
        user = authenticate(cursor, environ)
        if user is None:
            return respond(
                start_response, "401 Unauthorized", {"detail": "Invalid token.", "code": "authentication_failed"}
            )
        if method == "GET" and path == "/api/widgets/":
            return respond(start_response, "200 OK", list_widgets(cursor, environ, base))
        if method == "GET" and (match := DETAIL.match(path)):
            cursor.execute(
                f"SELECT {COLUMNS}, {RESERVED} FROM widgets_widget WHERE id = %s", [now_utc(), int(match[1])]
            )
            row = cursor.fetchone()
            if row is None:
                return respond(start_response, "404 Not Found", {"detail": "Not found.", "code": "not_found"})
            return respond(start_response, "200 OK", widget_json(row, base))
        if method == "POST" and (match := ADJUST.match(path)):
            if user[2]:
                return respond(start_response, "403 Forbidden", {"detail": "This token is read-only."})
            length = int(environ.get("CONTENT_LENGTH") or 0)
            return adjust(cursor, int(match[1]), user, environ["wsgi.input"].read(length), start_response)
        if method == "POST" and path == "/api/adjustments/":
            if user[2]:
                return respond(start_response, "403 Forbidden", {"detail": "This token is read-only."})
            length = int(environ.get("CONTENT_LENGTH") or 0)
            return adjust_batch(cursor, user, environ["wsgi.input"].read(length), start_response)
        if method == "POST" and path == "/api/reservations/":
            if user[2]:
                return respond(start_response, "403 Forbidden", {"detail": "This token is read-only."})
            length = int(environ.get("CONTENT_LENGTH") or 0)
            return reserve(cursor, user, environ["wsgi.input"].read(length), start_response)
        if method == "POST" and (match := COMMIT.match(path)):
            if user[2]:
                return respond(start_response, "403 Forbidden", {"detail": "This token is read-only."})
            return commit(cursor, user, int(match[1]), start_response)
    return respond(start_response, "404 Not Found", {"detail": "Not found.", "code": "not_found"})
