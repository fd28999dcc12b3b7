"""ffdesk: an FFmpeg cluster whose queue is one PostgreSQL database."""

__version__ = "0.1.0"
APP_NAME = "ffdesk"
