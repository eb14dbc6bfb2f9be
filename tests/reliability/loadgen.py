"""A mixed-load generator that remembers every unit of stock it moved.

Threads in this process (never in the server's) send 80% reads, 15% single adjustments
and 5% batches, spread over several tokens. Every write carries an Idempotency-Key and is
retried with the same key and body until it gets an answer (a 503, a dropped connection
or a timeout is not an answer), so each write is applied exactly once or refused.

What it records is what the checks need: every status seen, anything that was not JSON,
latencies, and the id and delta of every movement a 201 reported (a replayed 201 reports
the same ids, so counting distinct ids counts each applied movement once).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from harness import FORWARDED_HTTPS

READ, ADJUST, BATCH = "read", "adjust", "batch"
RETRY_STATUSES = {502, 503, 504}
THROTTLED = 429


@dataclass
class Outcome:
    at: float
    kind: str
    status: int | None  # None: no HTTP answer (connection refused/reset, timeout)
    seconds: float
    json: bool


@dataclass
class Stats:
    outcomes: list[Outcome] = field(default_factory=list)
    movements: dict[int, int] = field(default_factory=dict)  # movement id -> delta
    unanswered_writes: list[str] = field(default_factory=list)  # keys given up on
    retried_writes: int = 0
    replayed: int = 0
    resent: int = 0
    resends_throttled: int = 0
    resend_mismatches: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> Counter:
        return Counter(o.status for o in self.outcomes if since <= o.at < until)

    def summary(self) -> dict:
        by_kind = {kind: Counter(o.status for o in self.outcomes if o.kind == kind) for kind in (READ, ADJUST, BATCH)}
        latencies = sorted(o.seconds for o in self.outcomes)
        return {
            "requests": len(self.outcomes),
            "by_kind": {kind: {str(k): v for k, v in counts.items()} for kind, counts in by_kind.items()},
            "5xx": sum(1 for o in self.outcomes if o.status is not None and o.status >= 500),
            "no_answer": sum(1 for o in self.outcomes if o.status is None),
            "not_json": sum(1 for o in self.outcomes if o.status is not None and not o.json),
            "movements_seen": len(self.movements),
            "delta_seen": sum(self.movements.values()),
            "retried_writes": self.retried_writes,
            "replayed_answers": self.replayed,
            "answered_writes_sent_again": self.resent,
            "sent_again_throttled": self.resends_throttled,
            "sent_again_not_replayed_identically": len(self.resend_mismatches),
            "unanswered_writes": len(self.unanswered_writes),
            "p50_ms": round(1000 * latencies[len(latencies) // 2]) if latencies else None,
            "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)]) if latencies else None,
            "max_ms": round(1000 * latencies[-1]) if latencies else None,
        }


class LoadGenerator:
    def __init__(
        self,
        port: int,
        tokens: list[str],
        widget_ids: list[int],
        *,
        threads: int = 6,
        seed: int = 8,
        timeout: float = 10.0,
        write_deadline: float = 60.0,
        batches: bool = True,
        resend_ratio: float = 0.05,
    ):
        self.port, self.tokens, self.widget_ids = port, tokens, widget_ids
        self.threads, self.seed, self.timeout, self.write_deadline = threads, seed, timeout, write_deadline
        self.batches, self.resend_ratio = batches, resend_ratio
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        self._workers: list[threading.Thread] = []

    # --- HTTP ---------------------------------------------------------------------------

    def send(self, kind: str, method: str, path: str, token: str, body=None, key: str | None = None):
        """One request on a fresh connection; returns ``(status or None, parsed body, headers)``."""
        headers = {"Accept": "application/json", "Authorization": f"Token {token}", **FORWARDED_HTTPS}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if key:
            headers["Idempotency-Key"] = key
        start = time.monotonic()
        status, parsed, is_json, response_headers = None, None, False, {}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            status, response_headers = response.status, dict(response.getheaders())
            is_json = response.getheader("Content-Type", "").startswith("application/json")
            if is_json and raw:
                parsed = json.loads(raw)
        except (OSError, http.client.HTTPException, ValueError):
            status = None
        finally:
            connection.close()
        self.stats.record(Outcome(start - self.started, kind, status, time.monotonic() - start, is_json))
        return status, parsed, response_headers

    def write(self, kind: str, path: str, token: str, body) -> None:
        """POST with an Idempotency-Key, retried with the same key until it gets an answer."""
        key = str(uuid.uuid4())
        answer = self.send_until_answered(kind, path, token, body, key)
        self._record_answer(kind, key, answer)
        # Now and then act like a client that never saw the answer: send it again (retried
        # like any write, e.g. when a worker is killed under it). The same key must bring back
        # the same answer, marked as replayed, and apply nothing.
        if answer is None or random.random() >= self.resend_ratio:
            return
        again = self.send_until_answered(kind, path, token, body, key)
        with self.stats.lock:
            self.stats.resent += 1
        if answer[0] == THROTTLED:
            # The first try was refused before it ran (429s are not stored): this one is a
            # fresh attempt, and whatever it applied counts.
            self._record_answer(kind, key, again)
        elif again is not None and again[0] == THROTTLED:
            # Throttling comes before the replay: "later", not a different answer.
            with self.stats.lock:
                self.stats.resends_throttled += 1
        elif again is None:
            with self.stats.lock:
                self.stats.unanswered_writes.append(key)
        elif again[:2] != answer[:2] or again[2].get("Idempotent-Replayed") != "true":
            with self.stats.lock:
                self.stats.resend_mismatches.append((key, answer[0], again[0]))

    def _record_answer(self, kind: str, key: str, answer) -> None:
        with self.stats.lock:
            if answer is None:
                self.stats.unanswered_writes.append(key)
                return
            status, parsed, headers, attempts = answer
            self.stats.retried_writes += attempts > 0
            self.stats.replayed += headers.get("Idempotent-Replayed") == "true"
            if status == 201:
                for movement in parsed["movements"] if kind == BATCH else [parsed]:
                    self.stats.movements[movement["id"]] = movement["delta"]

    def send_until_answered(self, kind: str, path: str, token: str, body, key: str):
        """(status, body, headers, retries) of the first real answer (not 502/503/504 and not
        a dropped connection), or None when none came before the write deadline."""
        deadline = time.monotonic() + self.write_deadline
        attempt = 0
        while True:
            status, parsed, headers = self.send(kind, "POST", path, token, body, key)
            if status is not None and status not in RETRY_STATUSES:
                return status, parsed, headers, attempt
            attempt += 1
            if time.monotonic() > deadline:
                return None
            time.sleep(min(0.1 * 2**attempt, 1.0) * random.uniform(0.5, 1.0))

    # --- the mix ------------------------------------------------------------------------------

    def one_request(self, rng: random.Random, token: str) -> None:
        roll = rng.random()
        widget = rng.choice(self.widget_ids)
        if roll < 0.80:
            path = rng.choice(
                [
                    f"/api/widgets/{widget}/",
                    f"/api/widgets/?limit=20&offset={rng.randrange(0, max(1, len(self.widget_ids) - 20))}",
                    "/api/widgets/?low_stock=true&ordering=-stock&limit=10",
                    f"/api/widgets/{widget}/movements/?limit=5",
                    "/api/movements/?limit=10",
                ]
            )
            self.send(READ, "GET", path, token)
        elif roll < 0.95 or not self.batches:
            # Mostly receipts, some sales: some sales are refused (409) when stock runs out.
            delta = rng.choice([1, 2, 3, 5, 10, -1, -2, -3])
            reason = "received" if delta > 0 else "sold"
            self.write(
                ADJUST, f"/api/widgets/{widget}/adjust/", token, {"delta": delta, "reason": reason, "note": "load"}
            )
        else:
            items = [
                {"widget": rng.choice(self.widget_ids), "delta": rng.choice([1, 2, 4, -1]), "reason": "correction"}
                for _ in range(rng.randint(2, 6))
            ]
            for item in items:
                item["reason"] = "received" if item["delta"] > 0 else "sold"
            self.write(BATCH, "/api/adjustments/", token, {"items": items})

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        token = self.tokens[index % len(self.tokens)]
        while not self.stop_event.is_set():
            self.one_request(rng, token)

    def start(self) -> None:
        self.started = time.monotonic()
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stop(self) -> None:
        self.stop_event.set()
        for worker in self._workers:
            worker.join(timeout=self.write_deadline + self.timeout + 5)
