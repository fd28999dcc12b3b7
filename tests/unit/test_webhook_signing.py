"""Webhook signing and verification, retry delays, the request's body and headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from ffdesk import cli_webhooks
from ffdesk.db import webhooks as hooks_sql
from ffdesk.db.webhooks import Claimed
from ffdesk.engine.webhooks import (
    body_bytes,
    headers_for,
    post,
    retry_delay,
    sign,
    verify_signature,
)

SECRET = "s3cret-s3cret-s3cret"
NOW = 1_767_225_600
BODY = b'{"event":"job.succeeded","id":7}'


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == f"sha256={expected}"
    assert sign(SECRET, str(NOW), BODY.decode()) == f"sha256={expected}"


def test_valid_signature_verifies():
    header = sign(SECRET, NOW, BODY)
    assert verify_signature(SECRET, str(NOW), BODY, header, 300, now=NOW + 10)
    assert verify_signature(SECRET, NOW, BODY, header, 300, now=NOW - 299)
    # several signatures (a receiver rotating secrets): any one may match
    assert verify_signature(SECRET, NOW, BODY, f"sha256=00, {header}", now=NOW)


@pytest.mark.parametrize(
    "body",
    [BODY.replace(b"7", b"8"), BODY + b" ", BODY[:-1], b""],
    ids=["changed", "appended", "truncated", "empty"],
)
def test_tampered_body_fails(body):
    assert not verify_signature(SECRET, NOW, body, sign(SECRET, NOW, BODY), now=NOW)


def test_wrong_secret_fails():
    header = sign("another-secret-entirely", NOW, BODY)
    assert not verify_signature(SECRET, NOW, BODY, header, now=NOW)


def test_stale_or_future_timestamp_fails():
    header = sign(SECRET, NOW, BODY)
    assert not verify_signature(SECRET, NOW, BODY, header, 300, now=NOW + 301)
    assert not verify_signature(SECRET, NOW, BODY, header, 300, now=NOW - 301)
    assert verify_signature(SECRET, NOW, BODY, header, 600, now=NOW + 301)


def test_timestamp_is_part_of_the_signature():
    header = sign(SECRET, NOW, BODY)
    assert not verify_signature(SECRET, NOW + 1, BODY, header, now=NOW)


@pytest.mark.parametrize(
    ("timestamp", "header"),
    [
        (None, "sig"),
        ("", "sig"),
        ("12ab", "sig"),
        ("-5", "sig"),
        ("١٢٣", "sig"),  # digits, but not ASCII ones
        (str(NOW), None),
        (str(NOW), ""),
        (str(NOW), "sha256=zz"),
        (str(NOW), "sha256=ü"),
    ],
)
def test_malformed_input_fails_without_raising(timestamp, header):
    if header == "sig":
        header = sign(SECRET, NOW, BODY)
    assert not verify_signature(SECRET, timestamp, BODY, header, now=NOW)


def test_retry_delay_doubles_with_bounded_jitter_and_a_cap():
    lows = [retry_delay(n, 10, rng=lambda: 0.0) for n in range(1, 8)]
    highs = [retry_delay(n, 10, rng=lambda: 1.0) for n in range(1, 8)]
    assert lows == [5, 10, 20, 40, 80, 160, 320]
    assert highs == [10, 20, 40, 80, 160, 320, 640]
    assert retry_delay(30, 10, cap_s=3600, rng=lambda: 1.0) == 3600
    assert 1800 <= retry_delay(30, 10, cap_s=3600) <= 3600
    # a Retry-After answer is honoured, within the cap
    assert retry_delay(1, 10, retry_after=120, rng=lambda: 0.0) == 120
    assert retry_delay(1, 10, retry_after=10**9, rng=lambda: 0.0) == 3600


def _claimed() -> Claimed:
    return Claimed(
        id=42,
        attempt=1,
        max_attempts=8,
        webhook_id=3,
        url="http://127.0.0.1:9/hook",
        secret=SECRET,
        retry_base_s=10.0,
        event="job.succeeded",
        payload={"job": {"id": 7, "state": "succeeded", "input": "/in/ünï.mp4"}},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_body_and_headers_of_a_delivery():
    delivery = _claimed()
    body = body_bytes(delivery)
    data = json.loads(body)
    assert data["event"] == "job.succeeded" and data["id"] == 42
    assert data["created_at"] == "2026-01-01T00:00:00+00:00"
    assert data["job"]["input"] == "/in/ünï.mp4"
    assert body == body_bytes(delivery)  # the same bytes on every attempt
    headers = headers_for(delivery, body, NOW)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Ffdesk-Event"] == "job.succeeded"
    assert headers["X-Ffdesk-Delivery"] == "42"
    assert headers["X-Ffdesk-Timestamp"] == str(NOW)
    assert verify_signature(SECRET, NOW, body, headers["X-Ffdesk-Signature"], now=NOW)
    assert SECRET not in repr(delivery) and SECRET not in body.decode()


def test_cli_and_database_know_the_same_events():
    assert cli_webhooks.EVENTS == hooks_sql.EVENTS


class _Handler(BaseHTTPRequestHandler):
    answers: ClassVar[list[tuple[int, dict[str, str]]]] = []
    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, dict(self.headers.items())))
        code, headers = self.answers.pop(0)
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"nope!")

    def log_message(self, *args):
        pass


def test_post_reports_status_errors_redirects_and_retry_after():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    _Handler.answers = [
        (204, {}),
        (503, {"Retry-After": "7"}),
        (302, {"Location": "http://example.invalid/"}),
        (200, {}),
    ]
    try:
        ok = post(url, b"{}", {"Content-Type": "application/json"}, 5)
        assert ok.ok and ok.status == 204 and ok.error is None
        busy = post(url, b"{}", {}, 5)
        assert not busy.ok and busy.status == 503 and busy.retry_after == 7
        assert busy.error is not None and "nope!" in busy.error
        moved = post(url, b"{}", {}, 5)  # not followed
        assert not moved.ok and moved.status == 302
        # user:password in the URL becomes Basic authentication
        port = server.server_address[1]
        with_auth = post(f"http://us%40er:p%3Ass@127.0.0.1:{port}/hook?x=1", b"{}", {}, 5)
        assert with_auth.ok
        path, headers = _Handler.seen[-1]
        assert path == "/hook?x=1"
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    finally:
        server.shutdown()
        server.server_close()
    refused = post(url, b"{}", {}, 5)
    assert refused.status is None and refused.error and "cannot connect" in refused.error
