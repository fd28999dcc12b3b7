"""Webhooks: every node delivers the cluster's outbox; signing and verification.

The outbox lives in the database (``webhook_deliveries``, filled by a trigger on ``events`` in
the transaction of the event, see migration 0008). Each node runs one :class:`Deliverer`: it
claims due deliveries with ``FOR UPDATE SKIP LOCKED`` and a lease, POSTs them (stdlib
``urllib`` in a worker thread, with a timeout, no redirects) and records every attempt. A
non-2xx answer or a network error is retried with exponential backoff and jitter until the
webhook's ``max_attempts``, then the delivery is ``failed``. A node that dies mid-delivery
loses nothing: another node takes the delivery when the lease has run out. Delivery is
therefore at-least-once; receivers de-duplicate on ``X-Ffdesk-Delivery``.

**Request.** ``POST`` with a JSON body ``{"event", "id", "created_at", "occurred_at",
"detail", "job" | "node" | "batch" | "webhook"}`` and the headers::

    Content-Type: application/json
    X-Ffdesk-Event: job.succeeded
    X-Ffdesk-Delivery: 42                       (the same on every retry of a delivery)
    X-Ffdesk-Timestamp: 1767225600              (unix seconds when this attempt was sent)
    X-Ffdesk-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

A receiver recomputes the HMAC over the raw body bytes exactly as received, compares it in
constant time and rejects timestamps too far from its clock (replays):
:func:`verify_signature` does all three.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg_pool import PoolTimeout

from ffdesk import __version__
from ffdesk.core.secrets import mask_url
from ffdesk.db import webhooks as hooks_sql
from ffdesk.db.webhooks import Claimed
from ffdesk.engine.dbaccess import backoff

log = logging.getLogger("ffdesk.cluster.webhooks")

DB_TROUBLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)

SIGNATURE_PREFIX = "sha256="
DEFAULT_TOLERANCE_S = 300.0  # receivers: accept timestamps this close to their clock
TIMEOUT_S = 10.0  # per request: connect + answer
LEASE_S = 30.0  # a claim outlives the request's timeout: only a dead node lets it run out
MAX_IN_FLIGHT = 8  # deliveries one node POSTs at the same time
RETRY_CAP_S = 3600.0  # longest wait between two attempts
EXCERPT = 200  # bytes of a non-2xx answer kept with the attempt
KEEP_DAYS = 30.0  # finished deliveries are forgotten after this
PRUNE_EVERY_S = 3600.0


# --------------------------------------------------------------------------- signing


def _bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def sign(secret: str, timestamp: str | int, body: bytes | str) -> str:
    """The ``X-Ffdesk-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of
    ``timestamp + "." + body`` keyed with the webhook's secret."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + _bytes(body), hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str | int | None,
    body: bytes | str,
    header: str | None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> bool:
    """True if ``header`` (``X-Ffdesk-Signature``) signs ``body`` (the raw bytes received)
    with ``secret`` at ``timestamp`` (``X-Ffdesk-Timestamp``), and that timestamp is within
    ``tolerance_s`` seconds of ``now`` (default: this machine's clock). The header may hold
    several comma-separated signatures (any one may match)."""
    if timestamp is None or not header:
        return False
    stamp = str(timestamp).strip()
    if not stamp.isascii() or not stamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance_s:
        return False
    expected = sign(secret, stamp, body).encode("ascii")
    return any(
        hmac.compare_digest(candidate.strip().encode("utf-8", "replace"), expected)
        for candidate in header.split(",")
    )


def body_bytes(delivery: Claimed) -> bytes:
    """The JSON body of a delivery (the same bytes on every attempt)."""
    body: dict[str, Any] = {
        "event": delivery.event,
        "id": delivery.id,
        "created_at": delivery.created_at.isoformat(),
    }
    body.update(delivery.payload)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def headers_for(delivery: Claimed, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": f"ffdesk/{__version__}",
        "X-Ffdesk-Event": delivery.event,
        "X-Ffdesk-Delivery": str(delivery.id),
        "X-Ffdesk-Timestamp": str(timestamp),
        "X-Ffdesk-Signature": sign(delivery.secret, timestamp, body),
    }


# --------------------------------------------------------------------------- retries


def retry_delay(
    attempt: int,
    base_s: float,
    *,
    cap_s: float = RETRY_CAP_S,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds before the attempt after ``attempt`` (1 = the first one failed): exponential
    (``base_s``, doubling, capped at ``cap_s``) with jitter in its upper half, so receivers
    that came back are not hit by every delivery at once. A ``Retry-After`` the receiver
    asked for is honoured (up to the cap)."""
    step = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    delay = step / 2 + rng() * step / 2
    if retry_after is not None:
        delay = max(delay, min(cap_s, retry_after))
    return delay


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Answer:
    status: int | None  # HTTP status; None: no answer (network error, timeout)
    error: str | None  # what went wrong (None for a 2xx)
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer like any other non-2xx: a webhook URL must point at its
    receiver (and a signed body must not be sent on to wherever a Location says)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def _split_credentials(url: str, headers: Mapping[str, str]) -> tuple[str, Mapping[str, str]]:
    """``https://user:password@host/path`` -> the URL without them and a Basic
    ``Authorization`` header (urllib would take ``user:password@host`` for the host name)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, headers
    if parts.username is None and parts.password is None:
        return url, headers
    host = parts.netloc.rpartition("@")[2]
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), {**headers, "Authorization": f"Basic {token}"}


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float = TIMEOUT_S) -> Answer:
    """POST ``body`` (blocking: run it in a thread). Never raises for HTTP or network
    trouble: the :class:`Answer` says what happened."""
    url, headers = _split_credentials(url, headers)
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            with contextlib.suppress(OSError, http.client.HTTPException):
                response.read(64 * 1024)  # let the receiver finish; the answer is not used
            return Answer(response.status, None)
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                excerpt = exc.read(EXCERPT).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                excerpt = ""
            text = " ".join(excerpt.split())
            error = f"HTTP {exc.code} {exc.reason}".rstrip() + (f": {text}" if text else "")
            return Answer(exc.code, mask_url(error)[:300], _retry_after(exc.headers))
    except TimeoutError:
        return Answer(None, f"no answer within {timeout:g} s")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return Answer(None, f"no answer within {timeout:g} s")
        return Answer(None, mask_url(f"cannot connect: {reason}")[:300])
    except (OSError, http.client.HTTPException, ValueError) as exc:
        text = str(exc) or exc.__class__.__name__
        return Answer(None, mask_url(f"{exc.__class__.__name__}: {text}")[:300])


def host_of(url: str) -> str:
    """What logs say about a webhook's URL (its path or query may hold a token)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


# --------------------------------------------------------------------------- the loop


class Deliverer:
    """One node's delivery loop (spawned by :class:`ffdesk.engine.node.Node`)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task] = set()
        self._next_prune = 0.0
        # At most two of our statements at a time: the pool is small and the heartbeat
        # (which keeps this node's job leases) must never wait behind webhook bookkeeping.
        self._db = asyncio.Semaphore(2)

    def wake(self) -> None:
        """A delivery was queued (NOTIFY ``{"k": "webhook"}``) or one of ours finished."""
        self._wake.set()

    async def run(self) -> None:
        poll = self.node.settings.poll_interval
        failures = 0
        try:
            while True:
                self._wake.clear()
                try:
                    wait = await self._round(poll)
                    failures = 0
                except (psycopg.Error, PoolTimeout) as exc:
                    # Never let webhooks stop the node: back off and try again.
                    wait = backoff(failures, base=0.5)
                    failures += 1
                    level = logging.DEBUG if isinstance(exc, DB_TROUBLE) else logging.WARNING
                    text = mask_url(" ".join(str(exc).split())[:300])
                    log.log(level, "webhooks: database trouble (%s)", text)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(wait, 0.02))
        finally:
            # Stopping: deliveries under way get a moment to record their answer (else
            # another node sends them again after the lease: a duplicate, never a loss).
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=2.0)
            for task in list(self._in_flight):
                task.cancel()

    async def _db_run(self, fn: Callable[[Any], Any]) -> Any:
        async with self._db:
            return await self.node.pool.run(fn)

    async def _round(self, poll: float) -> float:
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            pruned = await self._db_run(lambda c: hooks_sql.prune(c, keep_days=KEEP_DAYS))
            if pruned:
                log.debug("webhooks: forgot %d finished deliveries", pruned)
        free = MAX_IN_FLIGHT - len(self._in_flight)
        if free <= 0:
            return poll  # a finishing delivery wakes us
        claimed, due = await self._db_run(
            lambda c: hooks_sql.claim_next(
                c, node=self.node.identifier, limit=free, lease_s=LEASE_S
            )
        )
        for delivery in claimed:
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        if len(claimed) == free:
            return 0.0  # there may be more
        if due is None:
            return poll
        return min(poll, max(due, 0.05) + 0.02)

    def _done(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery failed unexpectedly: %s", task.exception())
        self._wake.set()

    async def _deliver(self, delivery: Claimed) -> None:
        body = body_bytes(delivery)
        headers = headers_for(delivery, body, int(time.time()))
        started = time.monotonic()
        answer = await asyncio.to_thread(post, delivery.url, body, headers, TIMEOUT_S)
        ms = (time.monotonic() - started) * 1000
        retry_in = None
        if not answer.ok and delivery.attempt < delivery.max_attempts:
            retry_in = retry_delay(
                delivery.attempt, delivery.retry_base_s, retry_after=answer.retry_after
            )
        async with self._db:
            state = await self.node.pool.run_retrying(
                lambda c: hooks_sql.finish(
                    c,
                    delivery,
                    node=self.node.identifier,
                    ok=answer.ok,
                    http_status=answer.status,
                    error=answer.error,
                    duration_ms=ms,
                    retry_in=retry_in,
                ),
                "recording a webhook delivery",
                give_up=lambda: time.monotonic() - started > LEASE_S,
            )
        what = (
            f"webhook {delivery.webhook_id} ({host_of(delivery.url)}): delivery {delivery.id} "
            f"{delivery.event}, attempt {delivery.attempt}/{delivery.max_attempts}"
        )
        result = str(answer.status) if answer.error is None else answer.error
        if state is None:
            log.warning("%s: %s, but the delivery was taken over meanwhile", what, result)
        elif state == "delivered":
            log.info("%s: %s in %.0f ms", what, result, ms)
        elif state == "failed":
            log.warning("%s: %s; giving up", what, result)
        else:
            log.warning("%s: %s; retry in %.1f s", what, result, retry_in or 0.0)
