"""The retry policy per failure class and the preset run policy (pure functions)."""

from __future__ import annotations

import random

import pytest

from ffdesk.core.policy import (
    PolicyError,
    RunPolicy,
    backoff_seconds,
    decide,
    format_size,
    parse_size,
)

BASE, CAP = 10.0, 600.0


def _decide(kind: str, attempt: int, *, other: bool = False, limit: int = 3):
    return decide(kind, attempt=attempt, max_attempts=limit, other_nodes=other, base=BASE,
                  cap=CAP, rng=random.Random(1))


@pytest.mark.parametrize("kind", ["input", "config"])
def test_input_and_config_fail_at_once_even_with_attempts_left(kind: str) -> None:
    decision = _decide(kind, 1)
    assert decision.state == "failed" and decision.retry_in == 0 and not decision.avoid_node


@pytest.mark.parametrize("kind", ["transient", "unknown"])
def test_transient_goes_back_after_a_growing_backoff(kind: str) -> None:
    first, second = _decide(kind, 1), _decide(kind, 2)
    assert first.state == second.state == "queued"
    assert 5.0 <= first.retry_in <= 10.0  # base * 2^0, jitter 0.5..1
    assert 10.0 <= second.retry_in <= 20.0  # base * 2^1
    assert not first.avoid_node
    assert "retry 2 of 3" in first.why


@pytest.mark.parametrize("kind", ["transient", "unknown", "environment"])
def test_the_attempt_limit_makes_a_retryable_failure_dead(kind: str) -> None:
    decision = _decide(kind, 3, other=True)
    assert decision.state == "dead"
    assert _decide(kind, 4, other=True, limit=5).state == "queued"


def test_environment_moves_to_another_node_at_once_when_there_is_one() -> None:
    decision = _decide("environment", 1, other=True)
    assert (decision.state, decision.retry_in, decision.avoid_node) == ("queued", 0.0, True)
    assert "another node" in decision.why


def test_environment_without_another_node_waits_and_retries_here() -> None:
    decision = _decide("environment", 1, other=False)
    assert decision.state == "queued" and not decision.avoid_node
    assert decision.retry_in >= BASE / 2


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(3)
    values = [backoff_seconds(30, base=BASE, cap=CAP, rng=rng) for _ in range(200)]
    assert all(CAP / 2 <= v <= CAP for v in values)
    assert len({round(v, 3) for v in values}) > 150  # a batch does not come back in lockstep


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512M", 512 * 2**20), ("2G", 2 * 2**30), ("1.5GiB", int(1.5 * 2**30)), ("100k", 102400),
     (4096, 4096), ("", None), (None, None), (0, None), ("7", 7)],
)
def test_parse_size(text: object, expected: int | None) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1G", "1X", True])
def test_parse_size_refuses_nonsense(bad: object) -> None:
    with pytest.raises(PolicyError):
        parse_size(bad)


def test_format_size() -> None:
    assert format_size(512) == "512 B"
    assert format_size(8 * 2**20) == "8.0 MiB"
    assert format_size(3 * 2**30 // 2) == "1.5 GiB"


def test_run_policy_round_trips_through_the_job_row() -> None:
    policy = RunPolicy(max_attempts=5, verify=False, on_conflict="skip", memory_limit=2**30)
    stored = policy.to_dict()
    assert stored == {"max_attempts": 5, "verify": False, "on_conflict": "skip",
                      "memory_limit": 2**30}
    assert RunPolicy.from_dict(stored) == policy
    # A newer program may store keys this one does not know: ignored, not a crash.
    assert RunPolicy.from_dict({**stored, "from_the_future": 1}) == policy
    assert RunPolicy.from_dict(None) == RunPolicy()
