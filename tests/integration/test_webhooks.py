"""Webhooks: the outbox trigger, claims with leases, and real nodes POSTing to a local
receiver (retries, signatures, exactly-once across two nodes, per-preset filtering)."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ffdesk.db import jobs as jobs_sql
from ffdesk.db import nodes as nodes_sql
from ffdesk.db import webhooks as hooks_sql
from ffdesk.engine.webhooks import verify_signature
from tests.conftest import Cli, Clips, NodeProcess, new_jobs, query, wait_for, with_conn

pytestmark = pytest.mark.integration

HB = ("--heartbeat", "0.5")
REMUX_PRESET = """
[remux]
description = "stream copy into Matroska, for tests"
args = ["-i", "{input}", "-c", "copy", "{output}"]
output = "{stem}-remux.mkv"
"""


# --------------------------------------------------------------------------- receiver


@dataclass
class Post:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def delivery(self) -> int:
        return int(self.headers["X-Ffdesk-Delivery"])


@dataclass
class Receiver:
    """A local HTTP receiver: records every POST; ``answer(n)`` is the status of the n-th
    POST (from 1) of one delivery id."""

    url: str
    answer: Callable[[int], int] = lambda n: 200
    posts: list[Post] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Post]:
        with self.lock:
            return list(self.posts)

    def delivered(self, event: str | None = None) -> dict[int, Post]:
        """The 2xx-answered POST of each delivery id."""
        return {
            p.delivery: p
            for p in self.snapshot()
            if 200 <= p.status < 300 and (event is None or p.headers["X-Ffdesk-Event"] == event)
        }


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def make() -> Receiver:
        receiver: Receiver

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    delivery = self.headers.get("X-Ffdesk-Delivery")
                    n = 1 + sum(
                        1 for p in receiver.posts if p.headers.get("X-Ffdesk-Delivery") == delivery
                    )
                    status = receiver.answer(n)
                    receiver.posts.append(Post(dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook")
        return receiver

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def add_webhook(cli: Cli, url: str, *args: str) -> tuple[int, str]:
    out = cli.run("webhooks", "add", url, "--retry-base", "0.2", *args).stdout
    webhook_id = int(re.search(r"^webhook (\d+):", out, re.M)[1])
    secret = re.search(r"^secret \(shown only now.*\): (\S+)$", out, re.M)[1]
    return webhook_id, secret


def ping_barrier(cli: Cli, receiver: Receiver, webhook_id: int) -> None:
    """Queue a ping and wait until it arrived: every delivery due before it was handled
    too (they are claimed in order), so counting afterwards needs no fixed sleep."""
    out = cli.run("webhooks", "test", str(webhook_id)).stdout
    delivery = int(re.search(r"delivery (\d+)", out)[1])
    wait_for(lambda: delivery in receiver.delivered("ping"), 20, message=f"ping {delivery}")


def start(cli: Cli, nodes: list, name: str) -> NodeProcess:
    node = cli.start_node(name, *HB, slots=2)
    nodes.append(node)
    return node


# --------------------------------------------------------------------------- real nodes


def test_retries_until_2xx_signed_recorded_and_secret_never_shown(
    cli: Cli, clips: Clips, nodes, receivers, tmp_path: Path
):
    receiver = receivers()
    receiver.answer = lambda n: 500 if n <= 2 else 200
    webhook_id, secret = add_webhook(cli, receiver.url, "--event", "job.succeeded")
    assert len(secret) >= 32
    (job_id,) = cli.submit(clips.good, extra=("--output-dir", str(tmp_path / "out")))
    node = start(cli, nodes, "w1")

    wait_for(lambda: receiver.delivered("job.succeeded"), 30, message="a 2xx delivery")
    receiver.answer = lambda n: 200
    ping_barrier(cli, receiver, webhook_id)

    job_posts = [p for p in receiver.snapshot() if p.headers["X-Ffdesk-Event"] != "ping"]
    assert [p.status for p in job_posts] == [500, 500, 200]  # nothing after the success
    assert len({p.delivery for p in job_posts}) == 1
    assert len({p.body for p in job_posts}) == 1  # the same body on every attempt
    for post in job_posts + receiver.snapshot()[-1:]:
        assert post.headers["Content-Type"] == "application/json"
        assert verify_signature(
            secret,
            post.headers["X-Ffdesk-Timestamp"],
            post.body,
            post.headers["X-Ffdesk-Signature"],
            300,
        )
        assert not verify_signature(
            "x" * 32,
            post.headers["X-Ffdesk-Timestamp"],
            post.body,
            post.headers["X-Ffdesk-Signature"],
        )
    data = job_posts[-1].data
    assert data["event"] == "job.succeeded" and data["id"] == job_posts[-1].delivery
    job = data["job"]
    assert (job["id"], job["state"], job["preset"], job["attempt"]) == (
        job_id,
        "succeeded",
        "h264-mp4",
        1,
    )
    assert job["input"].endswith("good.mp4") and job["output"].endswith(".mp4")
    assert job["node"] == "w1"

    attempts = query(
        cli.database,
        """SELECT a.attempt, a.http_status, a.error IS NULL, a.duration_ms > 0, d.state
             FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
            WHERE d.event = 'job.succeeded' ORDER BY a.attempt""",
    )
    assert attempts == [
        (1, 500, False, True, "delivered"),
        (2, 500, False, True, "delivered"),
        (3, 200, True, True, "delivered"),
    ]

    shown = cli.run("webhooks", "deliveries", "--webhook", str(webhook_id)).stdout
    lines = [ln for ln in shown.splitlines() if "job.succeeded" in ln]
    assert len(lines) == 3, shown
    for line, (attempt, status) in zip(lines, [(1, 500), (2, 500), (3, 200)], strict=True):
        assert f"{attempt}/8" in line and str(status) in line and "delivered" in line, line
    as_json = json.loads(cli.run("webhooks", "deliveries", "--json").stdout)
    job_rows = [r for r in as_json if r["event"] == "job.succeeded"]
    assert [(r["attempt"], r["http_status"]) for r in job_rows] == [(1, 500), (2, 500), (3, 200)]
    assert all(r["job"] == job_id and r["duration_ms"] is not None for r in job_rows)

    listed = cli.run("webhooks", "list").stdout + cli.run("webhooks", "list", "--json").stdout
    assert secret not in listed and receiver.url in listed
    (row,) = json.loads(cli.run("webhooks", "--json").stdout)
    assert "secret" not in row and row["delivered"] == 2 and row["events"] == ["job.succeeded"]
    node.stop()
    logs = node.log_text() + "".join(p.read_text(errors="replace") for p in cli.home.rglob("*.log"))
    assert "retry in" in logs  # the failed attempts were logged ...
    assert secret not in logs  # ... without the secret

    assert "removed" in cli.run("webhooks", "remove", str(webhook_id)).stdout
    assert query(cli.database, "SELECT count(*) FROM webhook_deliveries") == [(0,)]
    assert cli.run("webhooks", "remove", str(webhook_id), check=False).returncode != 0


def test_two_nodes_deliver_each_event_once_and_preset_hooks_get_only_their_jobs(
    cli: Cli, clips: Clips, nodes, receivers, tmp_path: Path
):
    config = cli.home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "presets.toml").write_text(REMUX_PRESET, encoding="utf-8")
    every, remux_only = receivers(), receivers()
    every_id, _ = add_webhook(cli, every.url, "--event", "job.succeeded", "--event", "job.failed")
    remux_id, remux_secret = add_webhook(cli, remux_only.url, "--preset", "remux")
    src = tmp_path / "src"
    src.mkdir()
    inputs = []
    for i in range(6):
        inputs.append(src / f"c{i}.mp4")
        inputs[-1].write_bytes(clips.good.read_bytes())
    out = ("--output-dir", str(tmp_path / "out"))
    h264 = cli.submit(*inputs[:3], extra=out)
    remux = cli.submit(*inputs[3:], preset="remux", extra=out)
    (bad,) = cli.submit(clips.random_bytes, extra=out)
    for name in ("a", "b"):
        start(cli, nodes, name)

    all_jobs = {*h264, *remux, bad}
    wait_for(lambda: len(every.delivered()) == len(all_jobs), 45, message="7 deliveries")
    wait_for(lambda: len(remux_only.delivered()) == len(remux), 20, message="3 deliveries")
    ping_barrier(cli, every, every_id)
    ping_barrier(cli, remux_only, remux_id)

    for receiver in (every, remux_only):
        posts = receiver.snapshot()
        # exactly once: as many POSTs as distinct delivery ids, every one answered 200
        assert len(posts) == len({p.delivery for p in posts}), [p.delivery for p in posts]
    by_job = {p.data["job"]["id"]: p for p in every.snapshot() if p.data["event"] != "ping"}
    assert set(by_job) == all_jobs
    assert by_job[bad].data["event"] == "job.failed"
    assert by_job[bad].data["job"]["state"] == "failed" and by_job[bad].data["job"]["reason"]
    assert {by_job[j].data["event"] for j in all_jobs - {bad}} == {"job.succeeded"}
    remux_jobs = {p.data["job"]["id"] for p in remux_only.snapshot() if p.data["event"] != "ping"}
    assert remux_jobs == set(remux)
    assert {p.data["job"]["preset"] for p in remux_only.snapshot() if "job" in p.data} == {"remux"}
    for post in remux_only.snapshot():
        assert verify_signature(
            remux_secret,
            post.headers["X-Ffdesk-Timestamp"],
            post.body,
            post.headers["X-Ffdesk-Signature"],
        )
    # one claim (one attempt row) per delivery, whichever node made it
    per_delivery = query(
        cli.database,
        "SELECT delivery_id, count(*), min(node) FROM webhook_attempts GROUP BY delivery_id",
    )
    assert {c for _, c, _ in per_delivery} == {1}
    print(
        "deliveries per node:",
        query(
            cli.database, "SELECT node, count(*) FROM webhook_attempts GROUP BY node ORDER BY node"
        ),
    )
    assert {n for _, _, n in per_delivery} <= {"a", "b"}


# --------------------------------------------------------------------------- database level


def _deliveries(url: str) -> list[tuple[str, int, dict]]:
    return query(
        url,
        "SELECT event, webhook_id, payload FROM webhook_deliveries ORDER BY id",
    )


async def _add(conn, events, preset=None) -> int:
    return await hooks_sql.add(
        conn,
        "http://127.0.0.1:9/x",
        events,
        secret="s" * 32,
        preset=preset,
        max_attempts=3,
        retry_base_s=1,
        by="test",
    )


def test_outbox_maps_node_rescue_and_batch_events_in_their_transaction(any_db_url: str):
    db_url = any_db_url
    assert {e for (e,) in query_after_migrate(db_url, "SELECT event FROM webhook_event_map")} == (
        set(hooks_sql.EVENTS)
    )
    with_conn(db_url, lambda c: jobs_sql.enqueue(c, new_jobs(1), submitted_by="t"))
    assert _deliveries(db_url) == []  # no webhooks: nothing queued
    everything = with_conn(db_url, lambda c: _add(c, hooks_sql.EVENTS))
    other_preset = with_conn(db_url, lambda c: _add(c, ["job.dead"], preset="other"))
    assert other_preset

    # a node that stopped beating: node.offline, and its job on its last attempt: job.dead
    session = str(uuid.uuid4())
    query(
        db_url,
        """INSERT INTO nodes (identifier, session, host, slots, heartbeat_at, lease_s)
           VALUES ('gone', %s, 'h', 1, now() - interval '1 minute', 1)""",
        [session],
    )
    query(
        db_url,
        """UPDATE jobs SET state = 'running', attempt = max_attempts, node = 'gone',
                  node_session = %s, claim = nextval('ffdesk_claim'),
                  lease_until = now() - interval '1 second'""",
        [session],
    )
    with_conn(db_url, lambda c: jobs_sql.rescue(c, by="rescuer", session=str(uuid.uuid4())))
    rows = _deliveries(db_url)
    assert sorted((e, w) for e, w, _ in rows) == [
        ("job.dead", everything),
        ("node.offline", everything),
    ]
    payloads = {e: p for e, _, p in rows}
    assert payloads["job.dead"]["job"]["state"] == "dead"  # as the same statement left it
    assert payloads["job.dead"]["job"]["node"] == "gone"
    assert payloads["node.offline"]["node"]["identifier"] == "gone"
    assert payloads["node.offline"]["node"]["state"] == "offline"

    query(db_url, "UPDATE nodes SET state = 'online', heartbeat_at = now(), lease_s = 60")
    assert with_conn(db_url, lambda c: nodes_sql.quarantine(c, "gone", session, "disk full"))
    (event, _, payload) = _deliveries(db_url)[-1]
    assert event == "node.quarantined" and payload["detail"]["reason"] == "disk full"

    # a batch finishing (its event is written at commit, by a deferred trigger)
    query(
        db_url,
        """WITH b AS (INSERT INTO batches (name) VALUES ('nightly') RETURNING id)
           UPDATE jobs SET batch_id = (SELECT id FROM b), state = 'queued'""",
    )
    query(db_url, "UPDATE jobs SET state = 'succeeded'")
    (event, _, payload) = _deliveries(db_url)[-1]
    assert event == "batch.finished"
    assert payload["batch"]["name"] == "nightly"
    assert (payload["batch"]["done"], payload["batch"]["total"]) == (1, 1)

    # a rolled-back event leaves no delivery behind
    before = len(_deliveries(db_url))
    with pytest.raises(RuntimeError):
        with_conn(db_url, _failed_transaction)
    assert len(_deliveries(db_url)) == before


async def _failed_transaction(conn) -> None:
    async with conn.transaction():
        await conn.execute("INSERT INTO events (node, kind) VALUES ('x', 'node-lost')")
        raise RuntimeError("rolled back")


def query_after_migrate(url: str, sql: str) -> list[tuple]:
    with_conn(url, lambda c: hooks_sql.list_webhooks(c))  # migrates
    return query(url, sql)


def test_lease_lets_another_node_take_over_and_fences_the_first(any_db_url: str):
    db_url = any_db_url
    hook = with_conn(db_url, lambda c: _add(c, ["job.succeeded"]))
    ping = with_conn(db_url, lambda c: hooks_sql.queue_ping(c, hook))
    (first,) = with_conn(db_url, lambda c: hooks_sql.claim(c, node="n1", limit=5, lease_s=1.0))
    assert (first.id, first.attempt, first.max_attempts) == (ping, 1, 3)
    # held: nobody else gets it while the lease runs, and they know when it runs out
    held, due = with_conn(db_url, lambda c: hooks_sql.claim_next(c, node="n2", limit=5, lease_s=30))
    assert held == [] and due is not None and 0 < due <= 1.0
    # n1 "dies"; after its lease n2 takes the delivery
    second = wait_for(
        lambda: with_conn(db_url, lambda c: hooks_sql.claim(c, node="n2", limit=5, lease_s=30)),
        5,
        message="the lease running out",
    )
    assert (second[0].id, second[0].attempt) == (ping, 2)
    # n1 coming back records nothing; n2's answer counts
    late = with_conn(
        db_url,
        lambda c: hooks_sql.finish(
            c,
            first,
            node="n1",
            ok=True,
            http_status=200,
            error=None,
            duration_ms=1,
            retry_in=None,
        ),
    )
    assert late is None
    state = with_conn(
        db_url,
        lambda c: hooks_sql.finish(
            c,
            second[0],
            node="n2",
            ok=False,
            http_status=503,
            error="HTTP 503",
            duration_ms=2,
            retry_in=0.05,
        ),
    )
    assert state == "pending"
    third = wait_for(
        lambda: with_conn(db_url, lambda c: hooks_sql.claim(c, node="n1", limit=5, lease_s=30)),
        5,
        message="the retry becoming due",
    )
    state = with_conn(
        db_url,
        lambda c: hooks_sql.finish(
            c,
            third[0],
            node="n1",
            ok=False,
            http_status=None,
            error="refused",
            duration_ms=3,
            retry_in=None,
        ),
    )
    assert state == "failed"  # out of attempts (max 3)
    rows = with_conn(db_url, lambda c: hooks_sql.list_attempts(c, webhook_id=hook))
    assert [(r["attempt"], r["node"], r["http_status"], r["error"], r["lost"]) for r in rows] == [
        (1, "n1", None, None, True),
        (2, "n2", 503, "HTTP 503", False),
        (3, "n1", None, "refused", False),
    ]
    assert with_conn(db_url, hooks_sql.next_due) is None
    idle = with_conn(db_url, lambda c: hooks_sql.claim_next(c, node="n2", limit=5, lease_s=30))
    assert idle == ([], None)


def test_batch_of_ten_with_a_poison_file_reports_9_1_10_and_one_webhook(
    cli: Cli, clips: Clips, nodes, receivers, tmp_path
):
    """Issue 7 acceptance: one submit of 10 files is one batch; the poison file (a FIFO that
    never delivers: stalled, retried, dead) leaves 9 done / 1 failed / 10 total, and exactly
    one batch.finished webhook arrives although two nodes deliver."""
    import os
    import shutil

    receiver = receivers()
    webhook_id, secret = add_webhook(cli, receiver.url, "--event", "batch.finished")
    src = tmp_path / "src"
    src.mkdir()
    for n in range(10):
        shutil.copyfile(clips.good, src / f"clip {n}.mp4")
    out = ("--output-dir", str(tmp_path / "out"), "--batch-name", "ten")
    ids = cli.submit(src, preset="remux-mp4", extra=out)
    assert len(ids) == 10
    poison = src / "clip 4.mp4"
    poison.unlink()
    os.mkfifo(poison)  # submit takes regular files only: the FIFO replaces it afterwards
    for name in ("one", "two"):
        node = cli.start_node(name, *HB, "--stall-timeout", "1", "--retry-base", "0.05",
                              slots=2)
        nodes.append(node)
    wait_for(lambda: receiver.delivered("batch.finished"), 60, message="batch.finished")
    ping_barrier(cli, receiver, webhook_id)  # anything else due would have arrived by now
    finished = list(receiver.delivered("batch.finished").values())
    assert len(finished) == 1
    post = finished[0]
    assert verify_signature(secret, post.headers["X-Ffdesk-Timestamp"], post.body,
                            post.headers["X-Ffdesk-Signature"], tolerance_s=300)
    batch = post.data["batch"]
    assert (batch["name"], batch["done"], batch["failed"], batch["total"]) == ("ten", 9, 1, 10)
    states = dict(query(cli.database, "SELECT id, state FROM jobs"))
    assert sorted(states.values()) == ["dead"] + ["succeeded"] * 9
    shown = json.loads(cli.run("batches", str(batch["id"]), "--json").stdout)
    assert (shown["done"], shown["failed"], shown["total"], shown["state"]) == (
        9, 1, 10, "finished")
    assert len([p for p in receiver.snapshot() if p.headers["X-Ffdesk-Event"]
                == "batch.finished"]) == 1  # no duplicate POST either
