"""Idempotency-Key: a POST retried with the same key is applied at most once.

The key row is inserted at the start of the request's transaction and completed with the
response at its end, so the key is stored exactly when the effect is (a 5xx, or a crash,
rolls both back and a retry runs afresh).

Concurrency, PostgreSQL: while the first request runs, its key row is uncommitted, so a
twin's SELECT does not see it, but the twin's INSERT waits on the unique (user, key) index
for the first transaction to end. We bound that wait with a short ``lock_timeout``: if the
first commits in time, the twin's INSERT fails as a duplicate and it replays the stored
response; if not, the twin answers 409 "in flight". Either way the effect happens once.
This needs no separate in-flight marker (which a crash would leave behind, blocking the
key until some expiry) and no second transaction. SQLite serialises writers, so a twin
there simply waits its turn and replays.

Keys are kept at least 24 hours. So that the table stays bounded without a scheduler, one
new key in ``IDEMPOTENCY_PURGE_EVERY`` (at random) deletes a batch of expired keys once its
own request has committed; ``manage.py purge_idempotency_keys`` does the same on demand.
"""

import hashlib
import json
import random
import re
from contextlib import ExitStack, contextmanager

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.http import HttpResponse
from rest_framework import exceptions, status

from .. import services
from ..models import IdempotencyKey

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"[\x20-\x7e]{1,255}")  # printable ASCII
# How long a twin waits for the first request to finish before answering 409.
IN_FLIGHT_WAIT = "200ms"
# Response headers that are part of the answer, replayed with the body.
STORED_HEADERS = ("Content-Type", "ETag", "Location")
LOCK_NOT_AVAILABLE = "55P03"
# Expired keys deleted by one purge in passing: enough to outpace the keys being added,
# small enough to cost the request that runs it a few milliseconds.
PURGE_BATCH = 1000


class IdempotencyKeyInFlight(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A request with this Idempotency-Key is still in progress; retry shortly."
    default_code = "idempotency_key_in_flight"


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used for a different request (another body or path)."
    default_code = "idempotency_key_reused"


class _Replay(Exception):
    def __init__(self, response: HttpResponse):
        self.response = response


@contextmanager
def _bounded_lock_wait():
    """Lower PostgreSQL's lock_timeout for the statements inside, then restore it.

    Used inside a savepoint: on an error the savepoint's rollback restores the setting.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('lock_timeout')")
        (previous,) = cursor.fetchone()
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [IN_FLIGHT_WAIT])
    yield
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])


def _purge_expired_keys_now_and_then() -> None:
    every = settings.IDEMPOTENCY_PURGE_EVERY
    if every and random.randrange(every) == 0:
        # After the commit, so the purge never holds up or rolls back the request's effect;
        # robust: a failed purge is logged and the answer still goes out.
        transaction.on_commit(lambda: services.purge_idempotency_keys(limit=PURGE_BATCH), robust=True)


def _is_lock_timeout(exc: OperationalError) -> bool:
    cause = exc.__cause__
    return (
        getattr(cause, "pgcode", None) == LOCK_NOT_AVAILABLE or getattr(cause, "sqlstate", None) == LOCK_NOT_AVAILABLE
    )


def _fingerprint(request) -> str:
    """What the request means: method, path, user and the body as canonical JSON (sorted
    keys, no insignificant whitespace), so the same request in other bytes is a replay.
    A body that is not JSON counts byte for byte."""
    # Read before DRF parses the body; DRF then parses from this same buffer.
    body = request.body
    try:
        body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):
        pass
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), str(request.user.pk).encode(), body):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two splits collide
        digest.update(part)
    return digest.hexdigest()


class IdempotentMixin:
    """Honours ``Idempotency-Key`` on the viewset actions named in ``idempotent_actions``.

    Completed answers (2xx and 4xx) are stored with the key and replayed byte for byte
    with ``Idempotent-Replayed: true``; 5xx and 429 are not stored. Keys are per user.
    """

    idempotent_actions: tuple[str, ...] = ()

    def dispatch(self, request, *args, **kwargs):
        self._idempotency_record = None
        # The transaction is opened in initial(), once the caller is authenticated (so the
        # token's bookkeeping write is not held for the whole request), and closed here:
        # committed on return, rolled back if an error escapes.
        self._idempotency_transaction = ExitStack()
        with self._idempotency_transaction:
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication, permissions, throttling
        if self.action in self.idempotent_actions and HEADER in request.headers:
            self._idempotency_transaction.enter_context(transaction.atomic())
            self._claim_key(request, request.headers[HEADER])

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        record = self._idempotency_record
        if record is not None:
            if response.status_code >= 500 or response.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
                # Not an answer: forget the key and any effect, so a retry runs afresh.
                transaction.set_rollback(True)
            else:
                self._store_response(record, response)
        return response

    def handle_exception(self, exc):
        if isinstance(exc, _Replay):
            return exc.response
        return super().handle_exception(exc)

    def _claim_key(self, request, key: str) -> None:
        if not KEY_PATTERN.fullmatch(key):
            raise exceptions.ValidationError({HEADER: ["Must be 1-255 printable ASCII characters."]})
        fingerprint = _fingerprint(request)
        mine = IdempotencyKey.objects.filter(user=request.user, key=key)
        record = mine.first()
        if record is None:
            try:
                with transaction.atomic(), _bounded_lock_wait():
                    self._idempotency_record = IdempotencyKey.objects.create(
                        user=request.user,
                        key=key,
                        method=request.method,
                        path=request.path,
                        fingerprint=fingerprint,
                    )
                _purge_expired_keys_now_and_then()
                return
            except IntegrityError:  # the twin committed while we waited: replay its answer
                record = mine.get()
            except OperationalError as exc:
                if not _is_lock_timeout(exc):
                    raise
                raise IdempotencyKeyInFlight() from None
        # A key stored before fingerprints were canonical holds the SHA-256 of the raw body.
        same = record.fingerprint in (fingerprint, hashlib.sha256(request.body).hexdigest())
        if (record.method, record.path) != (request.method, request.path) or not same:
            raise IdempotencyKeyReused()
        raise _Replay(self._replay_response(record))

    @staticmethod
    def _store_response(record: IdempotencyKey, response) -> None:
        if hasattr(response, "render"):
            response.render()
        record.response_status = response.status_code
        record.response_headers = {name: response[name] for name in STORED_HEADERS if response.has_header(name)}
        record.response_body = response.content
        record.save(update_fields=["response_status", "response_headers", "response_body"])

    @staticmethod
    def _replay_response(record: IdempotencyKey) -> HttpResponse:
        response = HttpResponse(bytes(record.response_body), status=record.response_status)
        for name, value in record.response_headers.items():
            response[name] = value
        response["Idempotent-Replayed"] = "true"
        return response
