"""The FastAPI reference: the benchmark's API requests answered the way FastAPI's best users write it.

FastAPI + Pydantic v2 + SQLAlchemy 2 (async, Core statements built once) + asyncpg, served by
uvicorn with uvloop and httptools (bench/README.md, "FastAPI reference"). It answers the
requests of bench/wrk/scenario.lua with the same SQL and the same JSON as bench/floor.py (the
spec) and the app, token check included (the HMAC digest lookup of
widgets/api/authentication.py); `bench/run.py` compares one answer of each before measuring.

    bench/.venv-fastapi/bin/uvicorn --app-dir bench/fastapi_ref app:app \\
        --workers 2 --loop uvloop --http httptools --no-access-log --port 8603

Reads DATABASE_URL, DJANGO_SECRET_KEY (or DJANGO_TOKEN_HMAC_KEY) and API_EXACT_COUNT_LIMIT
like the app and the floor, and:

- FASTAPI_POOL_SIZE (default 4): connections in each worker's pool (no overflow);
- FASTAPI_SERIALIZER (default ``orjson``): ``orjson`` returns an orjson-rendered response
  from the handlers, ``pydantic`` returns the data and lets FastAPI validate and serialise
  it through the ``response_model`` (Pydantic v2's Rust serialiser). Both give the same body.
"""

import datetime
import hashlib
import hmac
import os
import time
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Literal
from urllib.parse import urlencode

import orjson
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

HMAC_KEY = (os.environ.get("DJANGO_TOKEN_HMAC_KEY") or f"token-hmac:{os.environ['DJANGO_SECRET_KEY']}").encode()
EXACT_COUNT_LIMIT = int(os.environ.get("API_EXACT_COUNT_LIMIT", "10000"))
LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)
POOL_SIZE = int(os.environ.get("FASTAPI_POOL_SIZE", "4"))
SERIALIZER = os.environ.get("FASTAPI_SERIALIZER", "orjson")

# --- The tables (the app's migrations own them; this only names what the requests touch) ---------------
metadata = MetaData()
widget = Table(
    "widgets_widget",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("sku", String),
    Column("name", String),
    Column("description", Text),
    Column("category_id", BigInteger),
    Column("price", Numeric(10, 2, asdecimal=True)),
    Column("stock", Integer),
    Column("reorder_level", Integer),
    Column("held", Integer),
    Column("is_active", Boolean),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("version", Integer),
)
movement = Table(
    "widgets_stockmovement",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("widget_id", BigInteger),
    Column("delta", Integer),
    Column("reason", String),
    Column("note", String),
    Column("stock_after", Integer),
    Column("created_by_id", Integer),
    Column("created_at", DateTime(timezone=True)),
)
reservation = Table(
    "widgets_reservation",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("reference", String),
    Column("status", String),
    Column("created_by_id", Integer),
    Column("created_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
)
item = Table(
    "widgets_reservationitem",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("reservation_id", BigInteger),
    Column("widget_id", BigInteger),
    Column("quantity", Integer),
)
change_log_entry = Table(
    "widgets_changelogentry",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("timestamp", DateTime(timezone=True)),
    Column("user_id", Integer),
    Column("action", String),
    Column("object_type", String),
    Column("object_id", BigInteger),
    Column("object_repr", String),
    Column("changes", JSONB),
)
token_table = Table(
    "widgets_apitoken",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("prefix", String),
    Column("digest", String),
    Column("read_only", Boolean),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Column("user_id", Integer),
)
user_table = Table(
    "auth_user",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String),
    Column("is_active", Boolean),
)

# --- The statements: built once, with bound parameters (SQLAlchemy caches their compiled form) --------
NOW = bindparam("now", type_=DateTime(timezone=True))
# The units held by active, unexpired reservations (the app's Widget.objects.with_availability()).
HELD = item.join(reservation, item.c.reservation_id == reservation.c.id)
ACTIVE = and_(reservation.c.expires_at > NOW, reservation.c.status == literal_column("'active'"))
# A widget with nothing held (the column kept under the row lock) skips the sum.
RESERVED = case(
    (widget.c.held == literal_column("0"), literal_column("0")),
    else_=func.coalesce(
        select(func.sum(item.c.quantity))
        .select_from(HELD)
        .where(ACTIVE, item.c.widget_id == widget.c.id)
        .group_by(item.c.widget_id)
        .scalar_subquery(),
        literal_column("0"),
    ),
).label("reserved")
LOW_STOCK = or_(
    widget.c.stock <= widget.c.reorder_level,
    and_(widget.c.held > literal_column("0"), widget.c.stock - RESERVED <= widget.c.reorder_level),
)
LIKE = bindparam("like", type_=Text)
SEARCH = or_(
    *(
        func.upper(cast(column, Text)).like(func.upper(LIKE))
        for column in (widget.c.sku, widget.c.name, widget.c.description)
    )
)
# ``held`` is read in SQL only (RESERVED, LOW_STOCK): the JSON shows reserved and available.
SHOWN = [column for column in widget.c if column.key != "held"]
ROW = (*SHOWN, RESERVED)


def filters(search: bool, low_stock: bool) -> list:
    return [clause for clause, on in ((SEARCH, search), (LOW_STOCK, low_stock)) if on]


PAGES = {
    (search, low_stock): select(*ROW)
    .where(*filters(search, low_stock))
    .order_by(widget.c.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
    for search in (False, True)
    for low_stock in (False, True)
}
KEYSET = {
    key: select(*ROW)
    .where(*filters(*key), widget.c.id >= bindparam("start"))
    .order_by(widget.c.id)
    .limit(bindparam("limit"))
    for key in PAGES
}
CAPPED_COUNT = {
    key: select(func.count()).select_from(
        select(literal_column("1")).select_from(widget).where(*filters(*key)).limit(bindparam("cap")).subquery("capped")
    )
    for key in PAGES
}
# The planner's estimate of a filter's rows. SQLAlchemy has no EXPLAIN construct: the statement
# is compiled whole (its parentheses and correlation as in the page's SELECT) into a text() whose
# named parameters (:now, :like) are bound like the others.
EXPLAIN = {
    key: text(
        f"EXPLAIN (FORMAT JSON) {select(literal_column('1')).select_from(widget).where(*filters(*key)).compile()}"
    )
    for key in PAGES
}
DETAIL = select(*ROW).where(widget.c.id == bindparam("id"))
TOKEN = (
    select(
        token_table.c.id,
        token_table.c.digest,
        token_table.c.read_only,
        token_table.c.expires_at,
        token_table.c.revoked_at,
        token_table.c.last_used_at,
        user_table.c.id,
        user_table.c.username,
        user_table.c.is_active,
    )
    .select_from(token_table.join(user_table, user_table.c.id == token_table.c.user_id))
    .where(token_table.c.prefix == bindparam("prefix"))
)
TOUCH_TOKEN = update(token_table).where(token_table.c.id == bindparam("token_id")).values(last_used_at=bindparam("now"))
LOCK = select(*SHOWN).where(widget.c.id == bindparam("id")).with_for_update()
IDS = bindparam("ids", type_=ARRAY(BigInteger))
LOCK_MANY = select(widget.c.id, widget.c.stock).where(widget.c.id == any_(IDS)).order_by(widget.c.id).with_for_update()
RESERVED_OF = (
    select(item.c.widget_id, func.sum(item.c.quantity))
    .select_from(HELD)
    .where(ACTIVE, item.c.widget_id == any_(IDS))
    .group_by(item.c.widget_id)
)
SET_STOCK = (
    update(widget)
    .where(widget.c.id == bindparam("pk"))
    .values(stock=bindparam("new_stock"), version=widget.c.version + 1, updated_at=bindparam("now"))
)
# One UPDATE for many widgets, as the floor and the app do (unnest of two arrays).
SET_STOCKS = text(
    "UPDATE widgets_widget w SET stock = v.stock, version = w.version + 1, updated_at = :now "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:stocks AS int[])) AS v(id, stock) WHERE w.id = v.id"
)
ADD_MOVEMENT = insert(movement).returning(movement.c.id)
ADD_MOVEMENTS = insert(movement).returning(movement.c.id, sort_by_parameter_order=True)
ADD_ITEMS = insert(item)
ADD_CHANGE = insert(change_log_entry)
ADD_RESERVATION = insert(reservation).returning(reservation.c.id)
LOCK_RESERVATION = (
    select(reservation.c.reference, reservation.c.status, reservation.c.created_at, reservation.c.expires_at)
    .where(reservation.c.id == bindparam("id"))
    .with_for_update()
)
ITEMS_OF = select(item.c.widget_id, item.c.quantity).where(item.c.reservation_id == bindparam("id")).order_by(item.c.id)
CLOSE_RESERVATION = (
    update(reservation)
    .where(reservation.c.id == bindparam("pk"))
    .values(status="committed", closed_at=bindparam("now"))
)

# --- The engine: one asyncpg pool per worker; reads in autocommit, writes in an explicit transaction ---
engine = create_async_engine(
    os.environ["DATABASE_URL"].replace("postgres://", "postgresql+asyncpg://", 1),
    pool_size=POOL_SIZE,
    max_overflow=0,
    pool_pre_ping=False,
)
autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")


# --- The JSON: Pydantic v2 models (the schema), rendered by orjson or by Pydantic ------------------------
class Widget(BaseModel):
    id: int
    url: str
    sku: str
    name: str
    description: str
    category: int | None
    price: Decimal
    stock: int
    reserved: int
    available: int
    reorder_level: int
    low_stock: bool
    is_active: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime


class WidgetPage(BaseModel):
    count: int | None = None
    count_is_estimate: bool | None = None
    next: str | None
    previous: str | None
    results: list[Widget]


Reason = Literal["received", "sold", "returned", "damaged", "correction"]


class AdjustIn(BaseModel):
    delta: StrictInt = Field(ne=0)
    reason: Reason
    note: str = ""


class Movement(BaseModel):
    id: int
    widget: int
    delta: int
    reason: str
    note: str
    stock_after: int
    created_by: str
    created_at: datetime.datetime


class BatchItem(AdjustIn):
    widget: int


class BatchIn(BaseModel):
    items: list[BatchItem] = []


class Movements(BaseModel):
    movements: list[Movement]


class ReservationItem(BaseModel):
    widget: int
    quantity: int = Field(ge=1)


class ReserveIn(BaseModel):
    reference: str = Field(pattern=r"\S")
    items: list[ReservationItem] = Field(min_length=1, max_length=100)
    ttl_seconds: int = 900


class Reservation(BaseModel):
    id: int
    reference: str
    status: str
    created_at: datetime.datetime
    expires_at: datetime.datetime
    closed_at: datetime.datetime | None
    items: list[ReservationItem]
    created_by: str
    movements: list[Movement] | None = None


class ORJSONResponse(JSONResponse):
    def render(self, content) -> bytes:
        # Time stamps as the app writes them: UTC with "Z", microseconds only when not zero.
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


class ApiError(Exception):
    def __init__(self, status: int, body: dict):
        self.status, self.body = status, body


NOT_FOUND = ApiError(404, {"detail": "Not found.", "code": "not_found"})

if SERIALIZER == "orjson":

    def answer(body: dict, status: int = 200):
        return ORJSONResponse(body, status_code=status)

else:

    def answer(body: dict, status: int = 200):
        # FastAPI validates it against the route's response_model and, with no custom response
        # class, serialises it straight to JSON bytes in Pydantic's Rust core (its fast path).
        return body


app = FastAPI(title="Widget Inventory (FastAPI reference)", openapi_url=None, docs_url=None, redoc_url=None)


@app.exception_handler(ApiError)
async def api_error(request: Request, error: ApiError):
    return ORJSONResponse(error.body, status_code=error.status)


@app.exception_handler(RequestValidationError)
async def invalid(request: Request, error: RequestValidationError):
    return ORJSONResponse({"detail": "invalid"}, status_code=400)


# --- Dependencies: a pooled connection per request, and the token check on it -------------------------
# Reads run in autocommit (no BEGIN/ROLLBACK round trips); a write's connection checks the token
# and then runs the write in one transaction, committed before the answer is sent.
async def read_connection():
    async with autocommit.connect() as conn:
        yield conn


async def write_connection():
    async with engine.connect() as conn:
        yield conn


ReadConnection = Annotated[AsyncConnection, Depends(read_connection)]
WriteConnection = Annotated[AsyncConnection, Depends(write_connection)]
Authorization = Annotated[str, Header()]


class User:
    __slots__ = ("id", "username", "read_only")

    def __init__(self, user_id: int, username: str, read_only: bool):
        self.id, self.username, self.read_only = user_id, username, read_only


INVALID_TOKEN = ApiError(401, {"detail": "Invalid token.", "code": "authentication_failed"})


async def authenticate(conn: AsyncConnection, authorization: str) -> User:
    """The token check of widgets/api/authentication.py: the prefix's candidates, the HMAC digest."""
    header = authorization.split()
    if len(header) != 2 or header[0].lower() not in ("token", "bearer"):
        raise INVALID_TOKEN
    raw_key = header[1]
    rows = (await conn.execute(TOKEN, {"prefix": raw_key[:12]})).all()
    digest = hmac.new(HMAC_KEY, raw_key.encode(), hashlib.sha256).hexdigest()
    now = now_utc()
    for token_id, stored, read_only, expires, revoked, last_used, user_id, username, active in rows:
        if not hmac.compare_digest(stored, digest):
            continue
        if revoked is not None or (expires is not None and expires <= now) or not active:
            raise INVALID_TOKEN
        if last_used is None or now - last_used >= LAST_USED_RESOLUTION:
            await conn.execute(TOUCH_TOKEN, {"token_id": token_id, "now": now})
        return User(user_id, username, read_only)
    raise INVALID_TOKEN


async def reader(conn: ReadConnection, authorization: Authorization = "") -> User:
    return await authenticate(conn, authorization)


async def writer(conn: WriteConnection, authorization: Authorization = "") -> User:
    user = await authenticate(conn, authorization)
    if user.read_only:
        raise ApiError(403, {"detail": "This token is read-only."})
    return user


Reader = Annotated[User, Depends(reader)]
Writer = Annotated[User, Depends(writer)]


@asynccontextmanager
async def transaction(conn: AsyncConnection):
    """The write's transaction (begun by the token check's first statement): COMMIT or ROLLBACK."""
    try:
        yield conn
    except BaseException:
        await conn.rollback()
        raise
    await conn.commit()


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def base_of(request: Request) -> str:
    scope = request.scope
    for name, value in scope["headers"]:
        if name == b"host":
            return f"{scope['scheme']}://{value.decode('latin-1')}"
    return f"{scope['scheme']}://localhost"


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
        "created_at": created,
        "updated_at": updated,
    }


def movement_json(movement_id, widget_id, delta, reason, note, stock_after, username, created) -> dict:
    return {
        "id": movement_id,
        "widget": widget_id,
        "delta": delta,
        "reason": reason,
        "note": note,
        "stock_after": stock_after,
        "created_by": username,
        "created_at": created,
    }


# --- Reads -------------------------------------------------------------------------------------------
_table_size = [0.0, 0]  # (expires, pg_class.reltuples), per process


async def count(conn: AsyncConnection, key: tuple[bool, bool], params: dict) -> tuple[int, bool]:
    """Exact up to EXACT_COUNT_LIMIT, above it the planner's estimate: the app's and the floor's SQL."""
    if _table_size[0] <= time.monotonic():
        reltuples = await conn.scalar(
            text("SELECT reltuples::bigint FROM pg_class WHERE oid = 'widgets_widget'::regclass")
        )
        _table_size[:] = [time.monotonic() + 60, reltuples]
    estimate = None
    explain = EXPLAIN[key]
    if _table_size[1] > EXACT_COUNT_LIMIT:
        if not any(key):  # the whole table: the statistics are the planner's answer
            return _table_size[1], True
        estimate = int(orjson_plan(await conn.scalar(explain, params)))
        if estimate > EXACT_COUNT_LIMIT:
            return estimate, True
    exact = await conn.scalar(CAPPED_COUNT[key], {**params, "cap": EXACT_COUNT_LIMIT + 1})
    if exact <= EXACT_COUNT_LIMIT:
        return exact, False
    if estimate is None:
        estimate = int(orjson_plan(await conn.scalar(explain, params)))
    return max(estimate, exact), True


def orjson_plan(plan) -> float:
    if isinstance(plan, str):  # asyncpg hands json back as text
        plan = orjson.loads(plan)
    return plan[0]["Plan"]["Plan Rows"]


@app.get("/api/widgets/", response_model=WidgetPage, response_model_exclude_unset=True)
async def list_widgets(
    request: Request,
    conn: ReadConnection,
    user: Reader,
    limit: int = 50,
    offset: int = 0,
    start: int | None = None,
    search: str = "",
    low_stock: str = "",
):
    limit = min(limit, 1000)
    now = now_utc()
    key = (bool(search), low_stock == "true")
    params = {"now": now, "like": f"%{search}%"} if search else {"now": now}
    query = dict(request.query_params)
    base = base_of(request)
    url = f"{base}/api/widgets/"
    if start is not None:
        rows = (await conn.execute(KEYSET[key], {**params, "start": start, "limit": limit + 1})).all()
        following = f"{url}?{urlencode({**query, 'start': rows[limit][0]})}" if len(rows) > limit else None
        return answer({"next": following, "previous": None, "results": [widget_json(r, base) for r in rows[:limit]]})
    total, estimated = await count(conn, key, params)
    rows = (await conn.execute(PAGES[key], {**params, "limit": limit, "offset": offset})).all()
    following = f"{url}?{urlencode({**query, 'offset': offset + limit})}" if offset + limit < total else None
    previous = None
    if offset > 0:
        rest = {k: v for k, v in query.items() if k != "offset"}
        previous = (
            f"{url}?{urlencode({**rest, 'offset': offset - limit})}" if offset > limit else f"{url}?{urlencode(rest)}"
        )
    return answer(
        {
            "count": total,
            **({"count_is_estimate": True} if estimated else {}),
            "next": following,
            "previous": previous,
            "results": [widget_json(r, base) for r in rows],
        }
    )


@app.get("/api/widgets/{widget_id}/", response_model=Widget)
async def retrieve(widget_id: int, request: Request, conn: ReadConnection, user: Reader):
    row = (await conn.execute(DETAIL, {"now": now_utc(), "id": widget_id})).first()
    if row is None:
        raise NOT_FOUND
    return answer(widget_json(row, base_of(request)))


# --- Writes: one transaction each, the widgets locked in id order ------------------------------------
async def reserved_of(conn: AsyncConnection, ids: list[int], now) -> dict[int, int]:
    """Units held of each locked widget: its own statement after the lock, as the app does."""
    return dict((await conn.execute(RESERVED_OF, {"now": now, "ids": ids})).all())


@app.post("/api/widgets/{widget_id}/adjust/", status_code=201, response_model=Movement)
async def adjust(widget_id: int, body: AdjustIn, conn: WriteConnection, user: Writer):
    async with transaction(conn):
        row = (await conn.execute(LOCK, {"id": widget_id})).first()
        if row is None:
            raise NOT_FOUND
        now = now_utc()
        reserved = (await reserved_of(conn, [widget_id], now)).get(widget_id, 0)
        new_stock = row.stock + body.delta
        if body.delta < 0 and new_stock < reserved:
            raise ApiError(
                409, {"detail": "Insufficient stock", "code": "insufficient_stock", "available": row.stock - reserved}
            )
        await conn.execute(SET_STOCK, {"pk": widget_id, "new_stock": new_stock, "now": now})
        movement_id = await conn.scalar(
            ADD_MOVEMENT,
            {
                "widget_id": widget_id,
                "delta": body.delta,
                "reason": body.reason,
                "note": body.note,
                "stock_after": new_stock,
                "created_by_id": user.id,
                "created_at": now,
            },
        )
    return answer(
        movement_json(movement_id, widget_id, body.delta, body.reason, body.note, new_stock, user.username, now), 201
    )


async def add_movements(conn: AsyncConnection, rows: list[tuple], user: User, now) -> list[int]:
    keys = ("widget_id", "delta", "reason", "note", "stock_after")
    values = [{**dict(zip(keys, row)), "created_by_id": user.id, "created_at": now} for row in rows]
    return list((await conn.execute(ADD_MOVEMENTS, values)).scalars())


@app.post("/api/adjustments/", status_code=201, response_model=Movements)
async def adjust_batch(body: BatchIn, conn: WriteConnection, user: Writer):
    ids = sorted({i.widget for i in body.items})
    async with transaction(conn):
        stock = dict((await conn.execute(LOCK_MANY, {"ids": ids})).all())
        now = now_utc()
        reserved = await reserved_of(conn, ids, now)
        rows = []
        for i in body.items:
            if i.widget not in stock or (i.delta < 0 and stock[i.widget] + i.delta < reserved.get(i.widget, 0)):
                raise ApiError(409, {"detail": "Insufficient stock", "code": "insufficient_stock"})
            stock[i.widget] += i.delta
            rows.append((i.widget, i.delta, i.reason, i.note, stock[i.widget]))
        await conn.execute(SET_STOCKS, {"now": now, "ids": ids, "stocks": [stock[pk] for pk in ids]})
        movement_ids = await add_movements(conn, rows, user, now)
    movements = [movement_json(m, *row, user.username, now) for m, row in zip(movement_ids, rows)]
    return answer({"movements": movements}, 201)


def reservation_json(pk, reference, status, created, expires, closed, pairs, username) -> dict:
    return {
        "id": pk,
        "reference": reference,
        "status": status,
        "created_at": created,
        "expires_at": expires,
        "closed_at": closed,
        "items": [{"widget": w, "quantity": q} for w, q in pairs],
        "created_by": username,
    }


async def change_log(conn, user: User, action: str, reservation_id: int, reference: str, changes: dict, now):
    await conn.execute(
        ADD_CHANGE,
        {
            "timestamp": now,
            "user_id": user.id,
            "action": action,
            "object_type": "reservation",
            "object_id": reservation_id,
            "object_repr": reference,
            "changes": changes,
        },
    )


@app.post("/api/reservations/", status_code=201, response_model=Reservation, response_model_exclude_unset=True)
async def reserve(body: ReserveIn, conn: WriteConnection, user: Writer):
    ids = sorted({i.widget for i in body.items})
    async with transaction(conn):
        stock = dict((await conn.execute(LOCK_MANY, {"ids": ids})).all())
        now = now_utc()
        reserved = await reserved_of(conn, ids, now)
        for index, i in enumerate(body.items):
            available = stock.get(i.widget, 0) - reserved.get(i.widget, 0)
            if i.widget not in stock or i.quantity > available:
                raise ApiError(
                    409,
                    {
                        "detail": "Insufficient stock",
                        "code": "insufficient_stock",
                        "index": index,
                        "widget": i.widget,
                        "available": available,
                    },
                )
        expires = now + datetime.timedelta(seconds=body.ttl_seconds)
        reservation_id = await conn.scalar(
            ADD_RESERVATION,
            {
                "reference": body.reference,
                "status": "active",
                "created_by_id": user.id,
                "created_at": now,
                "expires_at": expires,
            },
        )
        pairs = [(i.widget, i.quantity) for i in body.items]
        await conn.execute(
            ADD_ITEMS, [{"reservation_id": reservation_id, "widget_id": w, "quantity": q} for w, q in pairs]
        )
        changes = {
            "reference": [None, body.reference],
            "status": [None, "active"],
            "expires_at": [None, expires.isoformat()],
            "items": [None, [list(p) for p in pairs]],
        }
        await change_log(conn, user, "create", reservation_id, body.reference, changes, now)
    return answer(
        reservation_json(reservation_id, body.reference, "active", now, expires, None, pairs, user.username), 201
    )


@app.post(
    "/api/reservations/{reservation_id}/commit/",
    status_code=201,
    response_model=Reservation,
    response_model_exclude_unset=True,
)
async def commit(reservation_id: int, conn: WriteConnection, user: Writer):
    async with transaction(conn):
        row = (await conn.execute(LOCK_RESERVATION, {"id": reservation_id})).first()
        if row is None:
            raise NOT_FOUND
        reference, status, created, expires = row
        pairs = [tuple(p) for p in (await conn.execute(ITEMS_OF, {"id": reservation_id})).all()]
        ids = sorted({w for w, _ in pairs})
        stock = dict((await conn.execute(LOCK_MANY, {"ids": ids})).all())
        now = now_utc()
        if status != "active" or expires <= now:
            code = "reservation_not_active" if status != "active" else "reservation_expired"
            raise ApiError(409, {"detail": "Not active", "code": code})
        await conn.execute(CLOSE_RESERVATION, {"pk": reservation_id, "now": now})
        note = f"Reservation {reservation_id}: {reference}"[:255]
        rows = []
        for widget_id, quantity in pairs:
            stock[widget_id] -= quantity
            rows.append((widget_id, -quantity, "sold", note, stock[widget_id]))
        await conn.execute(SET_STOCKS, {"now": now, "ids": ids, "stocks": [stock[pk] for pk in ids]})
        movement_ids = await add_movements(conn, rows, user, now)
        await change_log(conn, user, "update", reservation_id, reference, {"status": ["active", "committed"]}, now)
    body = reservation_json(reservation_id, reference, "committed", created, expires, now, pairs, user.username)
    body["movements"] = [movement_json(m, *row, user.username, now) for m, row in zip(movement_ids, rows)]
    return answer(body, 201)
