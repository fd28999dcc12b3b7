"""Where ffdesk keeps its files.

platformdirs decides every directory; ``FFDESK_HOME`` (or ``--home``) puts all of them under
one folder, for tests and portable installs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ffdesk import APP_NAME


@dataclass(frozen=True)
class Places:
    config_dir: Path
    data_dir: Path
    log_dir: Path
    cache_dir: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> Places:
        home = home or os.environ.get("FFDESK_HOME") or None
        if home:
            root = Path(home).expanduser().absolute()
            return cls(root / "config", root / "data", root / "log", root / "cache")
        return cls(
            platformdirs.user_config_path(APP_NAME, appauthor=False),
            platformdirs.user_data_path(APP_NAME, appauthor=False),
            platformdirs.user_log_path(APP_NAME, appauthor=False),
            platformdirs.user_cache_path(APP_NAME, appauthor=False),
        )

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.toml"

    @property
    def user_presets_file(self) -> Path:
        return self.config_dir / "presets.toml"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "ffdesk.log"

    @property
    def embedded_dir(self) -> Path:
        """Everything of the embedded PostgreSQL server (data, socket, users, password)."""
        return self.data_dir / "postgres"

    def ensure(self) -> None:
        for d in (self.config_dir, self.data_dir, self.log_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
