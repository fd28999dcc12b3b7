"""Keep database passwords out of logs, the UI and exception messages."""

from __future__ import annotations

import re

# postgresql://user:secret@host/db  and  key=value conninfo strings (password=secret)
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<at>@)", re.I
)
_KV_PASSWORD = re.compile(
    r"(?P<head>(?<![?&])\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I
)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]+)", re.I)

MASK = "****"


def mask_url(text: str) -> str:
    """Replace every password in ``text`` (URLs, conninfo, query strings) with ``****``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK if m['pw'] else ''}{m['at']}", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)
