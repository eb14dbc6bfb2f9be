"""Sending one delivery: Standard Webhooks signing, the HTTP request and its outcome.

An attempt has three steps, so that no database transaction stays open while we wait on
someone else's server:

1. claim (a short transaction): take the delivery if it is pending, due and held by no
   other worker; count the attempt and hold it for ``WEBHOOK_LEASE_SECONDS``;
2. send: check the URL's addresses again (DNS can change), POST the signed body to the
   checked address (connect 3 s, total 10 s, no redirects);
3. record (a short transaction): a 2xx is delivered; anything else is scheduled again with
   exponential backoff and jitter, until the delivery's ``retry_until``, then it is failed.
   A subscription with no success for ``WEBHOOK_DISABLE_AFTER`` is disabled, with the reason.

A worker that dies between 1 and 3 leaves the delivery pending and held; once the hold runs
out, ``manage.py deliver_pending`` (run when a worker starts) enqueues it again, and it is sent
with the same ``webhook-id``: at least once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import time
from datetime import timedelta

import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .addresses import Target, check_url
from .models import RESPONSE_EXCERPT_BYTES, SECRET_PREFIX, Delivery, Event, EventType, WebhookSubscription
from .tasks import deliver

logger = logging.getLogger(__name__)

USER_AGENT = "WidgetInventory-Webhooks/1.0"


def body_of(event: Event) -> bytes:
    return json.dumps(event.envelope(), separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed by the secret's bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(mac).decode()}"


def signed_headers(secret: str, event: Event, body: bytes) -> dict[str, str]:
    msg_id, timestamp = str(event.id), int(time.time())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }


# One connection pool per destination and worker process: keep-alive between deliveries.
_pools: dict[tuple, urllib3.HTTPConnectionPool] = {}


def _pool(target: Target) -> urllib3.HTTPConnectionPool:
    key = (target.scheme, target.address, target.port, target.host)
    pool = _pools.get(key)
    if pool is None:
        options = {"retries": False, "maxsize": 1, "block": False}
        if target.scheme == "https":
            # Connect to the checked address, but verify the certificate of the named host.
            pool = urllib3.HTTPSConnectionPool(
                target.address, target.port, server_hostname=target.host, assert_hostname=target.host, **options
            )
        else:
            pool = urllib3.HTTPConnectionPool(target.address, target.port, **options)
        if len(_pools) > 100:
            _pools.clear()
        _pools[key] = pool
    return pool


class Outcome:
    def __init__(self):
        self.status_code: int | None = None
        self.error = ""
        self.excerpt = ""
        self.duration_ms = 0

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def send(subscription: WebhookSubscription, event: Event) -> Outcome:
    outcome = Outcome()
    body = body_of(event)
    started = time.monotonic()
    try:
        target = check_url(subscription.url)
        headers = {**signed_headers(subscription.secret, event, body), "host": target.host_header}
        response = _pool(target).urlopen(
            "POST",
            target.path,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            timeout=urllib3.Timeout(connect=settings.WEBHOOK_CONNECT_TIMEOUT, total=settings.WEBHOOK_TIMEOUT),
            preload_content=False,
            assert_same_host=False,
        )
        raw = b""
        try:
            raw = response.read(RESPONSE_EXCERPT_BYTES + 1)
            outcome.status_code = response.status
            outcome.excerpt = raw[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace")
        finally:
            if outcome.status_code is not None and len(raw) <= RESPONSE_EXCERPT_BYTES:
                response.release_conn()  # read to the end: the connection can be reused
            else:
                response.close()  # never read a large answer to the end
        if not outcome.ok:
            outcome.error = f"HTTP {response.status}"
    except ValidationError as exc:
        outcome.error = f"Refused: {exc.messages[0]}"
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        outcome.error = _describe(exc)
    outcome.duration_ms = round((time.monotonic() - started) * 1000)
    return outcome


def _describe(exc: Exception) -> str:
    # First: urllib3's NewConnectionError is also a ConnectTimeoutError.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "Connection refused or unreachable"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "Timed out"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return "TLS error"
    return f"{type(exc).__name__}: {exc}"[:300]


def backoff(attempts: int) -> float:
    """Seconds before the next attempt: doubling from the base delay up to the cap, +-25% jitter
    so that the retries of many deliveries do not arrive together."""
    delay = min(settings.WEBHOOK_RETRY_MAX_DELAY, settings.WEBHOOK_RETRY_BASE_DELAY * 2 ** (attempts - 1))
    return delay * random.uniform(0.75, 1.25)


def attempt_delivery(delivery_id: int) -> str:
    """Claim, send and record one delivery; returns what happened ("delivered", "retry",
    "failed", or "skipped" when it was not due or another worker holds it)."""
    now = timezone.now()
    with transaction.atomic():
        delivery = (
            Delivery.objects.due(now=now)
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("subscription", "event")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None:
            return "skipped"
        subscription = delivery.subscription
        # A ping is tried even on a disabled subscription: it is how staff test a fix.
        if not subscription.is_active and delivery.event.type != EventType.PING:
            delivery.status = Delivery.Status.FAILED
            delivery.last_error = "The subscription is disabled."
            delivery.next_attempt_at = None
            delivery.save(update_fields=["status", "last_error", "next_attempt_at"])
            return "failed"
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.leased_until = now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)
        delivery.save(update_fields=["attempts", "last_attempt_at", "leased_until"])

    outcome = send(subscription, delivery.event)
    return _record(delivery, subscription, outcome)


def _record(delivery: Delivery, subscription: WebhookSubscription, outcome: Outcome) -> str:
    now = timezone.now()
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        delivery.leased_until = None
        delivery.last_status_code = outcome.status_code
        delivery.last_duration_ms = outcome.duration_ms
        delivery.last_error = outcome.error[:500]
        delivery.response_excerpt = outcome.excerpt
        subscriptions = WebhookSubscription.objects.filter(pk=subscription.pk)
        if outcome.ok:
            delivery.status = Delivery.Status.DELIVERED
            delivery.delivered_at = now
            delivery.next_attempt_at = None
            result = "delivered"
            subscriptions.filter(failing_since__isnull=False).update(failing_since=None)
        else:
            subscriptions.filter(failing_since__isnull=True).update(failing_since=now)
            if now >= delivery.retry_until:
                delivery.status = Delivery.Status.FAILED
                delivery.next_attempt_at = None
                result = "failed"
            else:
                delivery.next_attempt_at = now + timedelta(seconds=backoff(delivery.attempts))
                deliver.using(run_after=delivery.next_attempt_at).enqueue([delivery.pk])
                result = "retry"
            _disable_if_failing_too_long(subscription.pk, now, outcome.error)
        delivery.save()
    logger.info("webhook delivery %s: %s (%s)", delivery.pk, result, outcome.error or outcome.status_code)
    return result


def _disable_if_failing_too_long(subscription_id: int, now, error: str) -> None:
    since = now - timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER)
    failing = WebhookSubscription.objects.filter(pk=subscription_id, is_active=True, failing_since__lte=since)
    subscription = failing.select_for_update().first()
    if subscription is None:
        return
    subscription.is_active = False
    subscription.disabled_at = now
    subscription.disabled_reason = (
        f"Disabled automatically: no successful delivery since "
        f"{subscription.failing_since:%Y-%m-%d %H:%M} UTC; the last attempt failed ({error})."
    )[:500]
    subscription.save(update_fields=["is_active", "disabled_at", "disabled_reason"])
