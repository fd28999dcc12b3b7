"""Storage roots: one name for a share, each node's own path to it.

A cluster of Windows, macOS and Linux machines sees one NAS as ``\\\\nas\\media``, ``Z:\\``,
``/Volumes/media`` and ``/mnt/media``. Jobs therefore store their files as *references*,
``media:shows/ep 01.mkv`` (root name, a colon, the path below the root with ``/`` separators,
Unicode NFC), and every node turns a reference into its own local path with its own
:class:`RootMap`. A local path under no root stays as it is, and the job is pinned to the
node that submitted it.

Pure functions: the Windows flavour can be chosen explicitly, so it is tested everywhere.
"""

from __future__ import annotations

import ntpath
import posixpath
import re
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from ffdesk.core.errors import ConfigError

# At least two characters: "C:\\x" must never read as root "C". Lower case, so a name typed
# on any machine means the same root.
ROOT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{1,31}$")
_REF = re.compile(r"^(?P<root>[a-z0-9][a-z0-9_-]{1,31}):(?P<rel>(?!//).*)$")


def check_root_name(name: str) -> str:
    if not ROOT_NAME.match(name):
        raise ConfigError(
            f"root name '{name}' must be 2-32 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def is_ref(text: str) -> bool:
    """``media:shows/a.mkv`` yes; ``C:\\a.mkv``, ``/a.mkv``, ``http://x`` no."""
    return bool(_REF.match(text)) and "://" not in text


def parse_ref(text: str) -> tuple[str, str]:
    """(root, relative path with '/' separators); raises ValueError if not a reference."""
    found = _REF.match(text)
    if not found or "://" in text:
        raise ValueError(f"not a root reference: {text!r}")
    return found.group("root"), found.group("rel")


def make_ref(root: str, rel: str) -> str:
    return f"{root}:{rel}"


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class RootMap:
    """This node's local path for each root it has (``{"media": "/mnt/media"}``)."""

    paths: Mapping[str, str] = field(default_factory=dict)
    windows: bool = sys.platform == "win32"

    @property
    def _p(self):  # the path flavour of the node, not of the machine running the tests
        return ntpath if self.windows else posixpath

    def _key(self, path: str) -> str:
        """Comparison form: NFC (macOS hands out NFD names), and on Windows case- and
        separator-insensitive."""
        text = _nfc(path)
        if self.windows:
            text = ntpath.normcase(text)  # lower case, '/' -> '\\'
        return self._p.normpath(text)

    def to_ref(self, path: str) -> str | None:
        """The reference for a local absolute ``path`` under one of the roots (the longest
        matching root wins: ``/mnt/media/exports`` may be its own root), else None."""
        p = self._p
        key = self._key(path)
        best: tuple[int, str] | None = None
        for name, root_path in self.paths.items():
            root_key = self._key(root_path)
            prefix = root_key if root_key.endswith(p.sep) else root_key + p.sep
            if key != root_key and not key.startswith(prefix):
                continue
            if best is None or len(root_key) > best[0]:
                best = (len(root_key), name)
        if best is None:
            return None
        name = best[1]
        # The relative part from the caller's own spelling (case kept), normalised.
        normal = p.normpath(_nfc(path))
        root_norm = p.normpath(_nfc(self.paths[name]))
        separators = "/\\\\" if self.windows else "/"  # a set of characters, not a prefix
        rel = normal[len(root_norm) :].lstrip(separators)
        rel = rel.replace("\\", "/") if self.windows else rel
        return make_ref(name, rel)

    def to_local(self, ref: str) -> str | None:
        """This node's path for ``ref``; None when this node does not have that root.

        Raises ValueError for a reference that climbs out of its root (``media:../etc``).
        """
        root, rel = parse_ref(ref)
        base = self.paths.get(root)
        if base is None:
            return None
        parts = [part for part in rel.split("/") if part not in ("", ".")]
        if ".." in parts or (self.windows and any("\\" in part for part in parts)):
            raise ValueError(f"reference {ref!r} leaves its root")
        return self._p.join(base, *parts) if parts else base

    def resolve(self, text: str) -> str | None:
        """A job's input/output as stored (reference, local path or URL) as a local path or
        URL for this node; None when this node lacks the root."""
        return self.to_local(text) if is_ref(text) else text


def parse_root_mappings(value: object, origin: str) -> dict[str, str]:
    """Roots from settings: a TOML table ``{media = "/mnt/media"}``, or a string
    ``"media=/mnt/media;exports=Z:\\exports"`` (environment variable, flag)."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        items = []
        for chunk in value.split(";"):
            if not chunk.strip():
                continue
            name, sep, path = chunk.partition("=")
            if not sep:
                raise ConfigError(f"{origin}: root mapping {chunk!r} must look like NAME=PATH")
            items.append((name.strip(), path.strip()))
    else:
        raise ConfigError(f"{origin}: 'roots' must be a table of NAME = PATH")
    roots: dict[str, str] = {}
    for name, path in items:
        try:
            check_root_name(name)
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{origin}: root '{name}' needs a path")
        roots[name] = path
    return roots
