"""Django's PostgreSQL backend, with a connection health check that costs no round trip.

With ``CONN_HEALTH_CHECKS`` Django sends ``SELECT 1`` before the first query of every
request that reuses a persistent connection, so that a connection the server has ended
(a restart, a failover, ``pg_terminate_backend``) is replaced instead of failing the
request. That is a round trip per request, and for a retrieve, answered by one statement,
it doubles the trips to the database (bench/RESULTS.md).

An idle connection has nothing to read: the server speaks only when asked, and when it
ends a session it says so (an error message, then the close) without being asked. So a
poll of the socket with no wait, one system call, tells a connection that is open and idle
from one the server has ended. Only when the socket has something to read, or the driver
already knows the connection is closed, does Django's ``SELECT 1`` run, and decide. The
same check drivers elsewhere use (pgx's ``CheckConn``, go-sql-driver/mysql's
``connCheck``). As with ``SELECT 1``, a server that vanishes without a word (no close
reaches the client) is found by the query itself, which then fails as a 503 under /api/.

Everything else, the check after an error included, is Django's own.
"""

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self):
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.pool
            and self._idle_and_open()
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def _idle_and_open(self) -> bool:
        """True when the driver holds the connection open and the server has sent nothing
        on it since its last answer."""
        if self.connection.closed:
            return False
        try:
            poll = select.poll()
            poll.register(self.connection.fileno(), select.POLLIN | select.POLLPRI)
            return not poll.poll(0)
        except (OSError, ValueError, base.Database.Error):  # no socket to ask: let SELECT 1 decide
            return False
