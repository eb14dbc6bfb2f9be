"""Server-side prepared statements for the hottest SQL on PostgreSQL.

psycopg2 sends every statement as text, so PostgreSQL parses and plans it on every request:
0.15-0.2 ms of the database's CPU for a retrieve or a one-statement adjustment, as much as
running it (bench/RESULTS.md). ``prepared()`` PREPAREs a statement once per database
connection and turns each call into ``EXECUTE name(...)``, which PostgreSQL answers from
its plan cache (asyncpg, under the FastAPI reference, does the same for every query).

Only statements written for it use it (a widget's retrieve, the one-statement writes):
each needs parameters whose types PostgreSQL can infer, with a cast where it cannot.
A prepared statement lives as long as its session and survives a rollback, so one is
prepared once and kept; a reconnect starts afresh. Off with DJANGO_PREPARED_STATEMENTS=false,
e.g. behind a pooler that hands one client several server sessions (PgBouncer in transaction
mode; RDS Proxy would pin every session).
"""

import functools
import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

# Per connection: a batch of N widgets is its own statement, so keep the newest few.
MAX_PER_CONNECTION = 64

_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s|%s")


def prepared(connection: BaseDatabaseWrapper, sql: str, params: Sequence | Mapping) -> tuple[str, list]:
    """``(sql, params)`` to execute in place of ``sql`` with ``params`` (``%s`` or ``%(name)s``
    placeholders, as for ``cursor.execute``): ``EXECUTE`` of a statement prepared on this
    connection, or the statement itself on another database or when turned off."""
    if connection.vendor != "postgresql" or not settings.PREPARED_STATEMENTS:
        return sql, params
    name, statement, order = _numbered(sql)
    values = [params[key] for key in order] if isinstance(params, Mapping) else list(params)
    connection.ensure_connection()
    known = _statements(connection)
    if name in known:
        known.move_to_end(name)
    else:
        with connection.cursor() as cursor:
            if len(known) >= MAX_PER_CONNECTION:
                cursor.execute(f"DEALLOCATE {known.popitem(last=False)[0]}")
            cursor.execute(f"PREPARE {name} AS {statement}")
        known[name] = None  # only once PostgreSQL has it
    if not values:
        return f"EXECUTE {name}", []
    return f"EXECUTE {name}({', '.join(['%s'] * len(values))})", values


@functools.lru_cache(maxsize=256)  # once per statement and process, not per request
def _numbered(sql: str) -> tuple[str, str, list]:
    """The statement's name, its text with ``$1, $2, ...`` for its placeholders (a name used
    twice is one parameter) and ``%%`` as ``%``, and the order of the parameters: names, or
    positions."""
    names: dict[str, int] = {}
    order: list = []

    def number(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%"
        name = match.group(1)
        if name is None:
            order.append(len(order))
            return f"${len(order)}"
        if name not in names:
            order.append(name)
            names[name] = len(order)
        return f"${names[name]}"

    statement = _PLACEHOLDER.sub(number, sql)
    return "w_" + hashlib.blake2b(statement.encode(), digest_size=10).hexdigest(), statement, order


def _statements(connection: BaseDatabaseWrapper) -> "OrderedDict[str, None]":
    """The statements prepared on the connection's current session (a new session, after a
    reconnect, has none)."""
    session, known = getattr(connection, "_prepared_statements", (None, None))
    if session is not connection.connection:
        known = OrderedDict()
        connection._prepared_statements = (connection.connection, known)
    return known
