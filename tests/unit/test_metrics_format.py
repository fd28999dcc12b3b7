"""The Prometheus text format of ffdesk.engine.metrics, and its HTTP responder without a
database (a fake node whose pool fails like one during an outage)."""

from __future__ import annotations

import asyncio
import math
import re
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from psycopg_pool import PoolTimeout

from ffdesk import __version__
from ffdesk.core.errors import ConfigError
from ffdesk.db.metrics import WAIT_BUCKETS, ClusterMetrics
from ffdesk.engine import metrics
from ffdesk.engine.metrics import (
    Family,
    LocalInfo,
    cluster_families,
    escape_label,
    format_le,
    format_value,
    histogram,
    local_families,
    render,
)
from ffdesk.engine.node import NodeStats

# One sample line of the 0.0.4 format: name, optional {labels}, value.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? '
    r"(NaN|[+-]Inf|-?[0-9.e+-]+)$"
)


def parse(text: str) -> dict[str, float]:
    """{'name{labels}': value}; checks every line is a comment or a valid sample."""
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
            continue
        assert SAMPLE.match(line), line
        key, value = line.rsplit(" ", 1)
        values[key] = float(value)
    return values


def test_label_values_are_escaped():
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    text = render([Family("x_info", "gauge", "help").add(1, path='C:\\new "dir"\nline')])
    assert text.splitlines()[-1] == 'x_info{path="C:\\\\new \\"dir\\"\\nline"} 1'
    assert SAMPLE.match(text.splitlines()[-1])


def test_help_is_escaped_and_type_follows_help():
    text = render([Family("x_total", "counter", "back\\slash\nnewline").add(3, kind="a")])
    assert text == (
        '# HELP x_total back\\\\slash\\nnewline\n# TYPE x_total counter\nx_total{kind="a"} 3\n'
    )


def test_values():
    assert format_value(3) == "3"
    assert format_value(2.0) == "2"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert format_le(1) == "1.0" and format_le(0.05) == "0.05" and format_le(math.inf) == "+Inf"


def test_bad_names_and_repeats_are_refused():
    with pytest.raises(ValueError):
        render([Family("bad-name", "gauge", "h").add(1)])
    with pytest.raises(ValueError):
        render([Family("x", "gauge", "h").add(1, **{"bad-label": "v"})])
    with pytest.raises(ValueError):
        render([Family("x", "gauge", "h"), Family("x", "gauge", "h")])
    with pytest.raises(ValueError):
        render([Family("x", "gauge", "h").add(1, "_bucket")])


def test_histogram_buckets_are_cumulative_with_inf_equal_to_count():
    observations = [0.01, 0.05, 0.3, 0.3, 4.0, 7200.0]
    bounds = [0.05, 0.5, 5.0, 3600.0]
    cumulative = [(le, sum(1 for o in observations if o <= le)) for le in bounds]
    fam = histogram("wait_seconds", "h", cumulative, sum(observations), len(observations))
    values = parse(render([fam]))
    assert values == {
        'wait_seconds_bucket{le="0.05"}': 2,  # le is inclusive
        'wait_seconds_bucket{le="0.5"}': 4,
        'wait_seconds_bucket{le="5.0"}': 5,
        'wait_seconds_bucket{le="3600.0"}': 5,
        'wait_seconds_bucket{le="+Inf"}': 6,  # the 7200 s one only here
        "wait_seconds_sum": sum(observations),
        "wait_seconds_count": 6,
    }
    lines = render([fam]).splitlines()
    assert lines[:2] == ["# HELP wait_seconds h", "# TYPE wait_seconds histogram"]
    assert [line.split("le=")[1].split('"')[1] for line in lines[2:7]] == [
        "0.05",
        "0.5",
        "5.0",
        "3600.0",
        "+Inf",
    ]


def test_histogram_refuses_non_cumulative_buckets():
    with pytest.raises(ValueError):
        histogram("h", "h", [(1.0, 3), (2.0, 2)], 0.0, 3)
    with pytest.raises(ValueError):
        histogram("h", "h", [(2.0, 1), (1.0, 1)], 0.0, 1)
    with pytest.raises(ValueError):
        histogram("h", "h", [(1.0, 5)], 0.0, 3)
    empty = parse(render([histogram("h", "h", [(1.0, 0)], 0.0, 0)]))
    assert empty == {'h_bucket{le="1.0"}': 0, 'h_bucket{le="+Inf"}': 0, "h_sum": 0, "h_count": 0}


def cluster_numbers() -> ClusterMetrics:
    return ClusterMetrics(
        jobs={"queued": 2, "running": 1, "succeeded": 5, "failed": 1, "canceled": 0, "dead": 0},
        queue_depth=1,
        nodes={"online": 1, "paused": 0, "draining": 0, "quarantined": 0, "stale": 0, "offline": 3},
        running={"a": 1, 'we"ird': 0},
        fps={"a": 123.5, 'we"ird': 0.0},
        wait_buckets=[(le, 0 if le < 1 else 4) for le in WAIT_BUCKETS],
        wait_sum=6.5,
        wait_count=5,
        attempts={("none", "succeeded"): 5, ("input", "failed"): 1},
    )


def test_whole_exposition_parses():
    info = LocalInfo("node-1", "7.1", 4, {"succeeded": 2, "failed": 1, "retried": 0, "lost": 0})
    text = render(local_families(info, up=True) + cluster_families(cluster_numbers()))
    values = parse(text)
    assert values["ffdesk_up"] == 1
    assert values[f'ffdesk_node_info{{node="node-1",version="{__version__}",ffmpeg="7.1"}}'] == 1
    assert values['ffdesk_node_slots{node="node-1"}'] == 4
    assert values['ffdesk_node_jobs_finished_total{node="node-1",result="failed"}'] == 1
    assert values['ffdesk_jobs{state="canceled"}'] == 0  # zeros are there too
    assert values["ffdesk_queue_depth"] == 1
    assert values['ffdesk_jobs_running{node="we\\"ird"}'] == 0
    assert values['ffdesk_node_fps{node="a"}'] == 123.5
    assert values['ffdesk_time_in_queue_seconds_bucket{le="+Inf"}'] == 5
    assert values['ffdesk_time_in_queue_seconds_bucket{le="3600.0"}'] == 4
    assert values['ffdesk_attempts_total{kind="input",outcome="failed"}'] == 1
    assert values['ffdesk_nodes{state="offline"}'] == 3
    # every family once, HELP then TYPE right before its samples
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(names) == len(set(names))
    assert "/" not in text  # nothing that looks like a path


# --------------------------------------------------------------------------- the responder


class FailingPool:
    def __init__(self) -> None:
        self.calls = 0

    async def run(self, fn):
        self.calls += 1
        raise PoolTimeout("couldn't get a connection after 2.00 sec")


def fake_node(pool) -> SimpleNamespace:
    stats = NodeStats(succeeded=3, failed=1, retried=2, lost=0)
    return SimpleNamespace(
        identifier="n1",
        settings=SimpleNamespace(slots=2, metrics_port=0, metrics_host="127.0.0.1"),
        tools=SimpleNamespace(identity=SimpleNamespace(version="7.1")),
        stats=stats,
        pool=pool,
    )


async def fetch(url: str, method: str = "GET") -> tuple[int, dict, str]:
    def go():
        req = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read().decode()

    return await asyncio.to_thread(go)


def test_outage_serves_local_metrics_and_up_0_and_404_elsewhere():
    async def main():
        pool = FailingPool()
        server = metrics.MetricsServer(fake_node(pool))
        await server.start("127.0.0.1", 0)
        task = asyncio.create_task(server.serve())
        try:
            status, headers, body = await fetch(server.url)
            assert status == 200
            assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            values = parse(body)
            assert values["ffdesk_up"] == 0
            assert values['ffdesk_node_jobs_finished_total{node="n1",result="retried"}'] == 2
            assert values['ffdesk_node_slots{node="n1"}'] == 2
            assert not any(k.startswith("ffdesk_jobs") for k in values)
            # cached: a storm of scrapes asks the database once per CACHE_SECONDS
            await asyncio.gather(*(fetch(server.url) for _ in range(10)))
            assert pool.calls == 1
            base = server.url.removesuffix("/metrics")
            assert (await fetch(base + "/"))[0] == 404
            assert (await fetch(base + "/metricsx"))[0] == 404
            assert (await fetch(server.url + "?x=1"))[0] == 200
            assert (await fetch(server.url, "POST"))[0] == 405
            status, headers, body = await fetch(server.url, "HEAD")
            assert status == 200 and body == "" and int(headers["Content-Length"]) > 0
            # a client that connects and says nothing does not keep the node from stopping
            _, silent = await asyncio.open_connection(
                "127.0.0.1", server.server.sockets[0].getsockname()[1]
            )
        finally:
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 2)
        silent.close()

    asyncio.run(main())


def test_port_in_use_is_one_config_error():
    async def main():
        first = metrics.MetricsServer(fake_node(None))
        await first.start("127.0.0.1", 0)
        port = first.server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(ConfigError) as err:
                await metrics.MetricsServer(fake_node(None)).start("127.0.0.1", port)
            assert f"cannot serve metrics on 127.0.0.1:{port}" in str(err.value)
            assert "\n" not in str(err.value)
        finally:
            first.server.close()
            await first.server.wait_closed()

    asyncio.run(main())
