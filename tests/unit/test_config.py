"""Settings precedence: flag > FFDESK_* environment > settings file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from ffdesk.core.config import default_slots, load_settings
from ffdesk.core.errors import ConfigError
from ffdesk.core.places import Places


def places(tmp_path: Path) -> Places:
    p = Places.resolve(tmp_path)
    p.ensure()
    return p


def test_home_puts_every_place_under_one_folder(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("FFDESK_HOME", raising=False)
    p = Places.resolve(tmp_path / "portable")
    for d in (p.config_dir, p.data_dir, p.log_dir, p.cache_dir):
        assert d.is_relative_to(tmp_path / "portable")
    monkeypatch.setenv("FFDESK_HOME", str(tmp_path / "from-env"))
    assert Places.resolve().data_dir == tmp_path / "from-env" / "data"
    monkeypatch.delenv("FFDESK_HOME")
    assert "ffdesk" in str(Places.resolve().config_dir)  # platformdirs default


def test_precedence_flag_env_file_default(tmp_path: Path):
    p = places(tmp_path)
    assert load_settings(p, {}, {}).slots == default_slots()
    p.settings_file.write_text('slots = 3\nidentifier = "from-file"\nheartbeat = 2.5\n')
    s = load_settings(p, {}, {})
    assert (s.slots, s.identifier, s.heartbeat) == (3, "from-file", 2.5)
    s = load_settings(p, {}, {"FFDESK_SLOTS": "5", "FFDESK_IDENTIFIER": "from-env"})
    assert (s.slots, s.identifier, s.heartbeat) == (5, "from-env", 2.5)
    s = load_settings(p, {"slots": 7, "identifier": None}, {"FFDESK_SLOTS": "5"})
    assert (s.slots, s.identifier) == (7, "from-file")  # None flags do not override


def test_database_url_from_env(tmp_path: Path):
    url = "postgresql://u:p@db.example/ffdesk"
    assert load_settings(places(tmp_path), {}, {"FFDESK_DATABASE": url}).database == url


def test_booleans_and_lease(tmp_path: Path):
    s = load_settings(places(tmp_path), {}, {"FFDESK_LISTEN": "off", "FFDESK_HEARTBEAT": "2"})
    assert s.listen is False
    assert s.lease_seconds == 6.0  # three beats by default


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"FFDESK_SLOTS": "0"}, "at least 1"),
        ({"FFDESK_SLOTS": "two"}, "FFDESK_SLOTS"),
        ({"FFDESK_HEARTBEAT": "-1"}, "greater than 0"),
        ({"FFDESK_LISTEN": "maybe"}, "FFDESK_LISTEN"),
    ],
)
def test_bad_values_name_their_origin(tmp_path: Path, env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(places(tmp_path), {}, env)


def test_bad_settings_file(tmp_path: Path):
    p = places(tmp_path)
    p.settings_file.write_text("slots = [")
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(p, {}, {})


def test_failure_handling_settings(tmp_path: Path):
    p = places(tmp_path)
    s = load_settings(p, {}, {})
    assert (s.retry_base, s.quarantine_after, s.stall_timeout, s.memory_limit_bytes) == (
        10.0, 3, 120.0, None,
    )
    p.settings_file.write_text('memory_limit = "2G"\nfull_hash = true\n')
    s = load_settings(p, {"stall_timeout": 30.0}, {"FFDESK_RETRY_BASE": "0.5"})
    assert (s.memory_limit_bytes, s.full_hash, s.stall_timeout, s.retry_base) == (
        2 * 2**30, True, 30.0, 0.5,
    )


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"FFDESK_MEMORY_LIMIT": "lots"}, "'memory_limit' must be a size such as 512M or 2G"),
        ({"FFDESK_QUARANTINE_AFTER": "0"}, "'quarantine_after' must be at least 1"),
        ({"FFDESK_STALL_TIMEOUT": "0"}, "'stall_timeout' must be greater than 0"),
    ],
)
def test_bad_failure_settings_are_refused(tmp_path: Path, env, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings(places(tmp_path), {}, env)
    assert fragment in str(info.value) and "FFDESK_" in str(info.value)
