"""Acceptance: ``ffdesk node --metrics-port`` with a real node, real FFmpeg and PostgreSQL.
The scraped numbers must match the database; a port already taken is one error line."""

from __future__ import annotations

import re
import socket
import time
import urllib.request

import pytest

from tests.conftest import Cli, Clips, NodeProcess, query, wait_for

pytestmark = pytest.mark.integration

FINAL = ("succeeded", "failed", "dead", "canceled")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(url: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float], str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        headers = dict(resp.headers)
        text = resp.read().decode("utf-8")
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, labels, value = SAMPLE.match(line).groups()
        pairs = frozenset(re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"', labels or ""))
        values[(name, pairs)] = float(value)
    return headers, values, text


def by_label(values: dict, name: str, label: str) -> dict[str, float]:
    return {dict(k[1])[label]: v for k, v in values.items() if k[0] == name}


def metrics_url(node: NodeProcess, port: int) -> str:
    def logged() -> str | None:
        if node.proc.poll() is not None:
            raise AssertionError(f"node exited {node.proc.returncode}:\n{node.log_text()}")
        found = re.search(r"metrics at (http://\S+/metrics)", node.log_text())
        return found.group(1) if found else None

    url = wait_for(logged, 30, message="metrics URL in the node's log")
    assert url == f"http://127.0.0.1:{port}/metrics"
    return url


def test_metrics_endpoint_matches_the_database(
    cli: Cli, clips: Clips, nodes: list[NodeProcess], tmp_path
):
    port = free_port()
    ids = cli.submit(
        clips.good,
        clips.weird[0],
        clips.random_bytes,
        extra=("--output-dir", str(tmp_path / "out")),
    )
    node = cli.start_node("m1", "--metrics-port", str(port))
    nodes.append(node)
    url = metrics_url(node, port)

    def all_final() -> bool:
        states = dict(query(cli.database, "SELECT id, state FROM jobs"))
        return all(states[i] in FINAL for i in ids)

    wait_for(all_final, 60, message="all jobs finished")
    time.sleep(1.6)  # past the cache: the scrape must see the final states

    headers, values, text = scrape(url)
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert values[("ffdesk_up", frozenset())] == 1

    # jobs by state: every state, zeros included, equal to the database
    db_states = dict(query(cli.database, "SELECT state, count(*) FROM jobs GROUP BY state"))
    jobs = by_label(values, "ffdesk_jobs", "state")
    assert set(jobs) == {"queued", "running", "succeeded", "failed", "canceled", "dead"}
    assert jobs == {s: float(db_states.get(s, 0)) for s in jobs}
    assert jobs["succeeded"] == 2 and jobs["failed"] + jobs["dead"] == 1
    assert values[("ffdesk_queue_depth", frozenset())] == 0
    assert by_label(values, "ffdesk_jobs_running", "node") == {"m1": 0}
    assert by_label(values, "ffdesk_node_fps", "node") == {"m1": 0}

    # time in queue: one observation per claimed job, cumulative buckets up to +Inf
    (claimed,) = query(cli.database, "SELECT count(*) FROM jobs WHERE claimed_at IS NOT NULL")
    buckets = by_label(values, "ffdesk_time_in_queue_seconds_bucket", "le")
    count = values[("ffdesk_time_in_queue_seconds_count", frozenset())]
    assert count == claimed[0] == len(ids)
    assert buckets["+Inf"] == count
    ordered = [buckets[le] for le in sorted(buckets, key=float)]
    assert ordered == sorted(ordered) and ordered[-1] == count
    assert "3600.0" in buckets and "0.05" in buckets
    (waited,) = query(
        cli.database, "SELECT sum(extract(epoch FROM claimed_at - created_at))::float8 FROM jobs"
    )
    assert values[("ffdesk_time_in_queue_seconds_sum", frozenset())] == pytest.approx(waited[0])

    # attempts by kind and outcome, as the attempts table says; the bad input is there
    attempts = {
        (dict(k[1])["kind"], dict(k[1])["outcome"]): v
        for k, v in values.items()
        if k[0] == "ffdesk_attempts_total"
    }
    db_attempts = query(
        cli.database,
        "SELECT coalesce(kind, 'none'), outcome, count(*) "
        "FROM attempts WHERE outcome IS NOT NULL GROUP BY 1, 2",
    )
    assert attempts == {(k, o): float(n) for k, o, n in db_attempts}
    assert attempts[("input", "failed")] >= 1
    assert attempts[("none", "succeeded")] == 2

    assert by_label(values, "ffdesk_nodes", "state")["online"] == 1
    assert set(by_label(values, "ffdesk_nodes", "state")) >= {"online", "stale", "offline"}

    # this node's own numbers
    (info,) = [dict(k[1]) for k in values if k[0] == "ffdesk_node_info"]
    assert info["node"] == "m1" and info["version"] and info["ffmpeg"]
    assert values[("ffdesk_node_slots", frozenset({("node", "m1")}))] == 2
    finished = by_label(values, "ffdesk_node_jobs_finished_total", "result")
    assert finished["succeeded"] == 2 and finished["failed"] == 1
    assert str(clips.folder) not in text and "random.mp4" not in text  # no paths, ever

    # other paths: 404
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url.removesuffix("metrics"), timeout=5)
    assert err.value.code == 404

    # a second node on the same port: one clear line, non-zero exit, no traceback
    second = cli.run(
        "node", "--identifier", "m2", "--metrics-port", str(port), check=False, timeout=60
    )
    assert second.returncode != 0
    errors = [line for line in second.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        f"ffdesk: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use; "
        "choose another --metrics-port (or --metrics-host)"
    ], second.stderr
    assert "Traceback" not in second.stderr + second.stdout

    # the first node still serves; stopping it frees the port
    assert scrape(url)[1][("ffdesk_up", frozenset())] == 1
    assert node.stop() == 0
    with socket.socket() as sock:  # SO_REUSEADDR: the scrapes' TIME_WAIT sockets remain
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()  # fails while anyone still listens there
