"""Passwords never leave: URL, conninfo and query-string forms are all masked."""

from __future__ import annotations

import logging

import pytest

from ffdesk.core.logsetup import setup_logging
from ffdesk.core.secrets import mask_url


def test_mask_url_forms():
    assert mask_url("postgresql://ffdesk:s3cr3t@host:5432/db") == (
        "postgresql://ffdesk:****@host:5432/db"
    )
    assert mask_url("postgres://u:p%40ss@/db?host=/run") == "postgres://u:****@/db?host=/run"
    assert mask_url("host=x password=hunter2 user=u") == "host=x password=**** user=u"
    assert mask_url("host=x password='with space' user=u") == "host=x password=**** user=u"
    assert mask_url("postgresql://h/db?user=u&password=pw&sslmode=require") == (
        "postgresql://h/db?user=u&password=****&sslmode=require"
    )
    assert mask_url("postgresql://user@host/db") == "postgresql://user@host/db"
    assert (
        mask_url("see https://example.com/a:b for help") == "see https://example.com/a:b for help"
    )


@pytest.fixture
def restore_logging():
    """setup_logging rewires the global "ffdesk" logger: undo it so no handler outlives the
    captured stream it writes to."""
    yield
    for name in ("ffdesk", "psycopg"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True


def test_log_file_and_console_never_show_a_password(tmp_path, capsys, restore_logging):
    log_file = tmp_path / "ffdesk.log"
    setup_logging(log_file, "db", console=True)
    log = logging.getLogger("ffdesk.db")
    log.info("connecting to %s", "postgresql://ffdesk:topsecret@db/ffdesk")
    try:
        raise RuntimeError("failed for postgresql://ffdesk:topsecret@db/ffdesk")
    except RuntimeError:
        log.error("boom", exc_info=True)
    for handler in logging.getLogger("ffdesk").handlers:
        handler.flush()
    written = log_file.read_text()
    err = capsys.readouterr().err
    assert "topsecret" not in written and "topsecret" not in err
    assert "ffdesk:****@db" in written
    assert "Traceback" in written and "Traceback" not in err  # tracebacks: file only
