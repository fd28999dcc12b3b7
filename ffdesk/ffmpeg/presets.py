"""Presets: named ffmpeg argument templates, rendered to argv lists.

Where presets come from: the built-in file (``resources/presets/builtin.toml``, read-only),
the database's preset library (``presets`` table, see ``ffdesk/db/presets_store.py``) and a
legacy user ``presets.toml`` file (read-only). Every source uses the same table format, and
every preset is validated by :func:`preset_from_table` when it is loaded. Saving a preset to
the database adds :func:`check_for_save`, which asks the FFmpeg in use whether it can write
the output's format.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import string
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ffdesk.core.errors import FfdeskError
from ffdesk.core.policy import POLICY_KEYS, PolicyError, RunPolicy
from ffdesk.core.roots import is_ref, parse_ref
from ffdesk.ffmpeg.ladder import LadderError, Rendition, parse_renditions, rendition_args
from ffdesk.ffmpeg.resources import resource_path

# Time parts: in 'args' they are the time the node starts FFmpeg, in 'output' the submit time.
TIME_PLACEHOLDERS = frozenset({"date", "time", "year", "month", "day", "hour", "minute"})
PLACEHOLDERS = frozenset(
    {"input", "output", "stem", "ext", "name", "dir", "output_dir", "rel_dir", "node"}
    | TIME_PLACEHOLDERS
)
# The output *name* is decided before any path exists, so only name-ish fields make sense
# (and "{rel_dir}/" as its very start: see REL_DIR_PREFIX).
OUTPUT_NAME_PLACEHOLDERS = frozenset({"stem", "ext", "name"}) | TIME_PLACEHOLDERS
# "{meta.KEY}": a value of the job's metadata (jobs.meta), known when a node runs the job.
META_PREFIX = "meta."
_META_FIELD_RE = re.compile(r"^meta\.([A-Za-z0-9_][A-Za-z0-9_-]*)$")
# The input's folder relative to its storage root, or else to the folder given to submit. A
# job records it in its metadata under this key (only when its preset's args use it).
REL_DIR_KEY = "rel_dir"
# An output template may start with "{rel_dir}/": with an output folder the outputs then
# mirror the inputs' folders below it; without one each output stays next to its input.
REL_DIR_PREFIX = "{rel_dir}/"
STREAM_KINDS = frozenset({"video", "audio"})
# The runner owns these: -n would make FFmpeg >= 7 exit 0 without writing anything,
# -nostdin breaks the "q" graceful stop, and a second -progress steals the progress pipe.
FORBIDDEN_ARGS = frozenset({"-n", "-nostdin", "-progress"})
# Refused when a preset is saved to the database (a preset file that has them still loads):
SAVE_FORBIDDEN_ARGS = {
    "-loglevel": "failure classes and output checks read FFmpeg's log at the level the "
    "runner sets",
    "-v": "failure classes and output checks read FFmpeg's log at the level the runner sets",
    "-stats_period": "the runner sets how often FFmpeg reports progress",
}
_KEYS = frozenset({"description", "args", "output", "needs"}) | POLICY_KEYS
_LADDER_KEYS = frozenset({"kind", "renditions", "segment_seconds"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAME_MAX = 64
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CODEC_OPT_RE = re.compile(r"^-(?:c|codec|vcodec|acodec|scodec)(?::\w+(?::\d+)?)?$")
_FORMATTER = string.Formatter()


class PresetError(FfdeskError):
    """A preset file or preset is invalid, or an unknown preset was asked for."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    args: tuple[str, ...]
    output: str
    needs: tuple[str, ...] = ()
    builtin: bool = False
    policy: RunPolicy = field(default_factory=RunPolicy)
    # "built-in", "database" or the preset file's path ("" when built by hand).
    source: str = field(default="", compare=False)
    # The policy keys as written in the table ("2G" stays "2G"), for export and display.
    policy_table: tuple[tuple[str, Any], ...] = field(default=(), compare=False, repr=False)
    # An ABR ladder (kind = "ladder"): one job per rendition plus a master playlist job;
    # ``args`` then holds the first rendition's arguments (for listing and validation).
    renditions: tuple[Rendition, ...] = ()
    segment_seconds: float = 4.0

    @property
    def is_ladder(self) -> bool:
        return bool(self.renditions)

    @property
    def encoders(self) -> tuple[str, ...]:
        """Encoders named by -c:v/-c:a/-vcodec/... ("copy" excluded), in order, no repeats."""
        found: list[str] = []
        for option, value in zip(self.args, self.args[1:], strict=False):
            if _CODEC_OPT_RE.match(option) and value != "copy" and value not in found:
                found.append(value)
        return tuple(found)

    @property
    def meta_keys(self) -> tuple[str, ...]:
        """Job metadata keys the args use as ``{meta.KEY}``, in order, no repeats."""
        keys: list[str] = []
        for arg in self.args:
            for name in _fields_or_empty(arg):
                found = _META_FIELD_RE.match(name)
                if found and found.group(1) not in keys:
                    keys.append(found.group(1))
        return tuple(keys)

    @property
    def uses_rel_dir(self) -> bool:
        """The args use ``{rel_dir}`` (then each job records it in its metadata)."""
        return any(REL_DIR_KEY in _fields_or_empty(arg) for arg in self.args)

    def render(
        self,
        *,
        input: Path | str,
        output: Path,
        node: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """The argv after ``ffmpeg``: placeholders filled in, one element per argument.

        A URL ``input`` (a str such as ``http://...``) is passed to FFmpeg verbatim. ``node``
        is the identifier of the node running the job (default: this host's name); ``meta``
        the job's metadata, for ``{meta.KEY}`` and ``{rel_dir}`` (default: none, so
        ``{rel_dir}`` is empty and any ``{meta.KEY}`` is an error).
        """
        values = _values(input, output, node=node, meta=meta)
        return [_format(arg, values) for arg in self.args]

    def output_name(self, input: Path, *, rel_dir: str = "") -> str:
        """Output file name for ``input``, e.g. ``clip-h264.mp4``. Only a template starting
        with ``{rel_dir}/`` gives folders: ``rel_dir`` (with ``/`` separators) in front of
        the name, or nothing when ``rel_dir`` is empty."""
        template, prefix = self.output, ""
        if template.startswith(REL_DIR_PREFIX):
            template = template[len(REL_DIR_PREFIX) :]
            parts = [p for p in rel_dir.replace("\\", "/").split("/") if p not in ("", ".")]
            if ".." in parts:
                raise PresetError(f"rel_dir {rel_dir!r} leaves its folder")
            prefix = "".join(f"{p}/" for p in parts)
        return prefix + _format(template, _values(input, None))

    def job_meta(
        self, *, rel_dir: str = "", meta: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The metadata a job of this preset carries: ``meta`` plus ``rel_dir`` when the args
        use ``{rel_dir}``. Raises PresetError when the args use a ``{meta.KEY}`` that
        ``meta`` lacks (at submit, not on a node minutes later)."""
        result = dict(meta or {})
        missing = [k for k in self.meta_keys if k not in result]
        if missing:
            raise PresetError(
                f"preset '{self.name}' uses {', '.join('{meta.' + k + '}' for k in missing)}, "
                "but these jobs have no such metadata"
            )
        if self.uses_rel_dir:
            result[REL_DIR_KEY] = rel_dir
        return result

    def to_table(self) -> dict[str, Any]:
        """The preset as a TOML table (the format of builtin.toml), ready to save or export."""
        table: dict[str, Any] = {"description": self.description, "args": list(self.args),
                                 "output": self.output, "needs": list(self.needs)}
        table.update(self.policy_table if self.policy_table else self.policy.to_dict())
        if self.renditions:
            table = {k: v for k, v in table.items() if k != "args"}
            table.update(kind="ladder", segment_seconds=self.segment_seconds,
                         renditions=[dict(r.__dict__) for r in self.renditions])
        return table


class _Values(dict[str, str]):
    meta: Mapping[str, Any] | None = None

    def __missing__(self, key: str) -> str:
        found = _META_FIELD_RE.match(key)
        if found:
            meta_key = found.group(1)
            if self.meta is not None and meta_key in self.meta:
                return _meta_text(self.meta[meta_key])
            known = ", ".join(sorted(self.meta or {})) or "none"
            raise PresetError(
                f"{{{key}}}: the job has no metadata '{meta_key}' (it has: {known})"
            )
        # Validated at load time; reaching this means a caller bypassed load_presets.
        raise PresetError(f"unknown placeholder {{{key}}}")


def _meta_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _values(
    input_path: Path | str,
    output_path: Path | None,
    *,
    node: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> _Values:
    # Absolute paths: FFmpeg reads "a:b.mp4" as protocol "a" and "-x.mp4" as an option.
    src = Path(os.path.abspath(input_path))
    now = time.localtime()
    rel_dir = (meta or {}).get(REL_DIR_KEY)
    values = _Values(
        input=str(src),
        stem=src.stem,
        ext=src.suffix[1:],
        name=src.name,
        dir=str(src.parent),
        rel_dir=rel_dir if isinstance(rel_dir, str) else "",
        node=node or socket.gethostname(),
        date=time.strftime("%Y-%m-%d", now),
        time=time.strftime("%H%M%S", now),
        year=time.strftime("%Y", now),
        month=time.strftime("%m", now),
        day=time.strftime("%d", now),
        hour=time.strftime("%H", now),
        minute=time.strftime("%M", now),
    )
    values.meta = meta
    if isinstance(input_path, str) and _URL_RE.match(input_path):
        values["input"] = input_path  # Path() would fold "//" and make it relative
    if output_path is not None:
        dst = Path(os.path.abspath(output_path))
        values.update(output=str(dst), output_dir=str(dst.parent))
    return values


def _format(template: str, values: Mapping[str, str]) -> str:
    # Field by field, never format(**values): values are never re-parsed, so a file called
    # "{stem}.mp4" or "100%.mov" stays literal, and "{meta.show-name}" is one key.
    parts: list[str] = []
    for literal, field_name, spec, conversion in _FORMATTER.parse(template):
        parts.append(literal)
        if field_name is not None:
            if spec or conversion:
                raise PresetError(f"unknown placeholder {{{field_name}}} in {template!r}")
            parts.append(values[field_name])
    return "".join(parts)


def _fields(template: str) -> list[str]:
    """Placeholder names in a template; raises ValueError on unbalanced braces."""
    names = []
    for _literal, field_name, spec, conversion in _FORMATTER.parse(template):
        if field_name is None:
            continue
        if spec or conversion or not (field_name.isidentifier()
                                      or _META_FIELD_RE.match(field_name)):
            # "{input!r}", "{date:%Y}", "{input.stem}", "{0}": reject rather than guess.
            whole = field_name + (f"!{conversion}" if conversion else "")
            names.append(whole + (f":{spec}" if spec else ""))
        else:
            names.append(field_name)
    return names


def _fields_or_empty(template: str) -> list[str]:
    try:
        return _fields(template)
    except ValueError:
        return []


def _check_template(
    where: str, template: str, allowed: frozenset[str], *, meta: bool = False
) -> list[str]:
    try:
        names = _fields(template)
    except ValueError as exc:
        raise PresetError(
            f"{where}: bad braces in {template!r} ({exc}); write {{{{ for {{"
        ) from exc
    for name in names:
        if name in allowed or (meta and _META_FIELD_RE.match(name)):
            continue
        if name.startswith(META_PREFIX) and not _META_FIELD_RE.match(name):
            raise PresetError(
                f"{where}: {{{name}}} in {template!r}: a metadata key is letters, digits, "
                "'_' or '-'"
            )
        raise PresetError(f"{where}: unknown placeholder {{{name}}} in {template!r}")
    return names


def _check_output(where: str, output: str) -> None:
    body = output[len(REL_DIR_PREFIX) :] if output.startswith(REL_DIR_PREFIX) else output
    names = _fields_or_empty(body)
    for name in names:
        if name == "node" or _META_FIELD_RE.match(name):
            raise PresetError(
                f"{where}: {{{name}}} is known only when a node runs the job, after the "
                "output is named; use it in 'args'"
            )
        if name == REL_DIR_KEY:
            raise PresetError(
                f"{where}: {{rel_dir}} may only start 'output', as in "
                f"\"{{rel_dir}}/{{stem}}.mp4\""
            )
    _check_template(f"{where} 'output'", body, OUTPUT_NAME_PLACEHOLDERS)
    if "/" in body or "\\" in body:
        raise PresetError(f"{where}: 'output' must be a file name, without folders")
    if body.strip() in (".", "..") or not body.strip():
        raise PresetError(f"{where}: 'output' must be a file name template")


def preset_from_table(
    name: str, table: object, source: str, *, builtin: bool = False, origin: str = ""
) -> Preset:
    """Validate one preset table (the builtin.toml format) and build the Preset.

    ``source`` names where it comes from in messages; ``origin`` is stored as
    ``Preset.source`` (default: ``source``)."""
    return _build(name, table, source, builtin, origin or source)


def _build(name: str, table: object, source: str, builtin: bool, origin: str = "") -> Preset:
    where = f"preset '{name}' in {source}"
    if not _NAME_RE.match(name) or len(name) > NAME_MAX:
        raise PresetError(
            f"{where}: name must be letters, digits, '.', '_' or '-' (at most {NAME_MAX})"
        )
    if not isinstance(table, dict):
        raise PresetError(f"{where}: must be a table, e.g. [{name}]")
    unknown = set(table) - _KEYS - _LADDER_KEYS
    if unknown:
        raise PresetError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    renditions: tuple[Rendition, ...] = ()
    segment_seconds = 4.0
    if "kind" in table or "renditions" in table:
        if table.get("kind") != "ladder":
            raise PresetError(f"{where}: 'kind' must be \"ladder\" (with 'renditions')")
        if "args" in table:
            raise PresetError(f"{where}: a ladder has 'renditions' instead of 'args'")
        segment_seconds = table.get("segment_seconds", 4.0)
        if not isinstance(segment_seconds, int | float) or not 1 <= segment_seconds <= 60:
            raise PresetError(f"{where}: 'segment_seconds' must be 1-60")
        try:
            renditions = parse_renditions(table.get("renditions"), where)
        except LadderError as exc:
            raise PresetError(str(exc)) from None
        table = {**table, "args": rendition_args(renditions[0], float(segment_seconds)),
                 "needs": table.get("needs", ["video"])}
    args = table.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise PresetError(f"{where}: 'args' must be a non-empty list of strings")
    output = table.get("output")
    if not isinstance(output, str) or not output.strip():
        raise PresetError(f"{where}: 'output' must be a file name template")
    description = table.get("description", "")
    needs = table.get("needs", [])
    if not isinstance(description, str):
        raise PresetError(f"{where}: 'description' must be a string")
    if not isinstance(needs, list) or not all(n in STREAM_KINDS for n in map(str, needs)):
        raise PresetError(f'{where}: \'needs\' must be a list of "video" and/or "audio"')

    counts = {"input": 0, "output": 0}
    for arg in args:
        if arg in FORBIDDEN_ARGS:
            raise PresetError(f"{where}: {arg} is not allowed (ffdesk's runner controls it)")
        for name_ in _check_template(where, arg, PLACEHOLDERS, meta=True):
            if name_ in counts:
                # Inside a filter string a path would need FFmpeg escaping; whole arguments
                # need none.
                if arg != "{" + name_ + "}":
                    raise PresetError(f"{where}: {{{name_}}} must be a whole argument, not {arg!r}")
                counts[name_] += 1
    for name_, count in counts.items():
        if count != 1:
            raise PresetError(f"{where}: {{{name_}}} must appear exactly once in 'args' ({count})")
    _check_output(where, output)
    policy_items = {k: v for k, v in table.items() if k in POLICY_KEYS}
    for key, value in policy_items.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise PresetError(f"{where}: '{key}' must be a finite number")
    try:
        policy = RunPolicy.from_table(policy_items, where)
    except PolicyError as exc:
        raise PresetError(str(exc)) from None
    return Preset(
        name, description, tuple(args), output, tuple(dict.fromkeys(needs)), builtin, policy,
        source=origin, policy_table=tuple(sorted(policy_items.items())),
        renditions=renditions, segment_seconds=float(segment_seconds),
    )


def load_preset_file(path: Path, *, builtin: bool = False) -> dict[str, Preset]:
    """Presets defined in one TOML file (one table per preset)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise PresetError(f"preset file not found: {path}") from None
    except OSError as exc:
        raise PresetError(f"cannot read preset file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"preset file {path} is not valid TOML: {exc}") from None
    origin = "built-in" if builtin else str(path)
    return {
        name: _build(name, table, str(path), builtin, origin) for name, table in data.items()
    }


def builtin_presets_file() -> Path:
    return resource_path("presets", "builtin.toml")


def load_presets(
    extra_files: Iterable[Path] = (),
    *,
    stored: Iterable[tuple[str, Mapping[str, Any]]] = (),
    problems: list[str] | None = None,
) -> dict[str, Preset]:
    """Built-in presets, those from ``extra_files`` (names must be unique across them), then
    the database's ``stored`` (name, table) pairs.

    A stored preset that is invalid here (saved by another ffdesk version) or whose name a
    built-in or file preset already has is left out, with one line in ``problems``: one bad
    row must not make every other preset unusable.
    """
    presets = load_preset_file(builtin_presets_file(), builtin=True)
    origin = dict.fromkeys(presets, "built-in")
    for path in extra_files:
        for name, preset in load_preset_file(Path(path)).items():
            if name in presets:
                raise PresetError(
                    f"preset '{name}' in {path} clashes with the {origin[name]} preset "
                    "of that name; rename it"
                )
            presets[name] = preset
            origin[name] = str(path)
    for name, table in stored:
        if name in presets:
            note = (f"database preset '{name}' is hidden by the {origin[name]} preset of that "
                    "name; copy it under another name and remove it")
        else:
            try:
                presets[name] = _build(name, dict(table), "the database", False, "database")
                origin[name] = "database"
                continue
            except PresetError as exc:
                note = f"{exc} (left out)"
        if problems is not None:
            problems.append(note)
    return presets


def get_preset(presets: Mapping[str, Preset], name: str) -> Preset:
    try:
        return presets[name]
    except KeyError:
        known = ", ".join(sorted(presets)) or "none"
        raise PresetError(f"unknown preset '{name}'; known: {known}") from None


def rel_dir_for(src: Path, folders: Iterable[Path], stored: str | None = None) -> str:
    """``{rel_dir}`` of an input: its folder below its storage root when ``stored`` (the
    path as the job stores it) is a root reference (``media:shows/s1/e1.mkv`` ->
    ``shows/s1``), else below the first of ``folders`` (the folders given to submit) that
    holds it; "" otherwise. Always with ``/`` separators."""
    if stored and is_ref(stored):
        parent = PurePosixPath(parse_ref(stored)[1]).parent.as_posix()
        return "" if parent == "." else parent.strip("/")
    src = Path(os.path.abspath(src))
    for folder in folders:
        base = Path(os.path.abspath(folder))
        if base in src.parents:  # a folder holding it (a file given itself is not)
            parent = src.parent.relative_to(base).as_posix()
            return "" if parent == "." else parent
    return ""


# --------------------------------------------------------------------------- saving: muxers

# Extension -> the muxer FFmpeg picks for it (what FFmpeg 5.1 and 9.0 answer). Used only when
# no FFmpeg is at hand; with one, FFmpeg itself is asked (its answer is the truth for that
# build: a minimal build may lack a muxer).
COMMON_MUXERS = {
    "mp4": "mp4", "m4v": "ipod", "m4a": "ipod", "mov": "mov", "mkv": "matroska",
    "mka": "matroska", "webm": "webm", "avi": "avi", "ts": "mpegts", "m2ts": "mpegts",
    "mts": "mpegts", "flv": "flv", "ogg": "ogg", "ogv": "ogv", "oga": "oga", "opus": "opus",
    "mp3": "mp3", "aac": "adts", "wav": "wav", "flac": "flac", "jpg": "image2",
    "jpeg": "image2", "png": "image2", "tif": "image2", "tiff": "image2", "bmp": "image2",
    "gif": "gif", "webp": "webp", "mxf": "mxf", "3gp": "3gp", "nut": "nut", "ac3": "ac3",
    "wmv": "asf", "wma": "asf", "asf": "asf", "mpg": "mpeg", "mpeg": "mpeg", "srt": "srt",
    "vtt": "webvtt", "ass": "ass", "y4m": "yuv4mpegpipe", "m3u8": "hls", "mpd": "dash",
}
_EXT_RE = re.compile(r"^[A-Za-z0-9_]{1,16}$")
_NO_FORMAT_RE = re.compile(r"suitable output format|choose an output format", re.IGNORECASE)
_OUT_MUXER_RE = re.compile(r"\[out#\d+/(\w+) @")  # FFmpeg >= 6.1 names the muxer it chose
_ffmpeg_answers: dict[tuple[str, int, int, str], str | None] = {}
_ffmpeg_lock = threading.Lock()


def _binary_key(ffmpeg: Path) -> tuple[str, int, int]:
    real = os.path.realpath(ffmpeg)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise PresetError(
            f"cannot check output formats: ffmpeg at {ffmpeg}: {exc.strerror}"
        ) from None
    return real, st.st_mtime_ns, st.st_size


def _ask_ffmpeg(ffmpeg: Path, args: list[str]) -> tuple[int, str]:
    from ffdesk.ffmpeg.locate import child_env, popen_flags

    # In an empty folder: nothing is written (FFmpeg fails before opening the output),
    # and if a build ever did write, nothing of the user's is in the way.
    with tempfile.TemporaryDirectory(prefix="ffdesk-muxer-") as cwd:
        try:
            proc = subprocess.run(
                [str(ffmpeg), "-hide_banner", "-nostdin", *args],
                cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=20,
                env=child_env(), check=False, **popen_flags(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PresetError(f"cannot check output formats: ffmpeg at {ffmpeg}: {exc}") from None
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


def _cached(ffmpeg: Path, question: str, ask) -> Any:
    key = (*_binary_key(ffmpeg), question)
    with _ffmpeg_lock:
        if key in _ffmpeg_answers:
            return _ffmpeg_answers[key]
    answer = ask()
    with _ffmpeg_lock:
        _ffmpeg_answers[key] = answer
    return answer


def muxer_for_extension(ext: str, ffmpeg: Path | None) -> str | None:
    """The muxer FFmpeg picks for an output named ``*.ext``; None when it has none.

    With ``ffmpeg``: FFmpeg is asked (one ~20 ms run with an output and no input: it picks
    the muxer from the name, then stops at "no stream"), the answer cached per binary. Without
    one: :data:`COMMON_MUXERS`; an extension not in it raises PresetError (cannot tell).
    """
    if ffmpeg is None:
        known = COMMON_MUXERS.get(ext.lower())
        if known is None:
            raise PresetError(
                f"cannot tell whether FFmpeg can write .{ext} files: no ffmpeg found here "
                "(install it or set the ffmpeg path)"
            )
        return known

    def ask() -> str | None:
        code, text = _ask_ffmpeg(ffmpeg, ["-loglevel", "error", f"ffdesk-probe.{ext}"])
        if _NO_FORMAT_RE.search(text):
            return None
        named = _OUT_MUXER_RE.search(text)
        if named:
            return named.group(1)
        if "does not contain any stream" in text:
            return COMMON_MUXERS.get(ext.lower(), "?")
        last = text.strip().splitlines()[-1] if text.strip() else f"exit code {code}"
        raise PresetError(f"cannot ask ffmpeg at {ffmpeg} about .{ext} files: {last}")

    return _cached(ffmpeg, f"ext:{ext.lower()}", ask)


def available_muxers(ffmpeg: Path) -> frozenset[str]:
    """Names of the muxers an FFmpeg build has (``ffmpeg -muxers``), cached per binary."""

    def ask() -> frozenset[str]:
        code, text = _ask_ffmpeg(ffmpeg, ["-muxers"])
        names: set[str] = set()
        listing = False
        for line in text.splitlines():
            if line.strip().startswith("--"):
                listing = True
                continue
            tokens = line.split(None, 2)
            if listing and len(tokens) >= 2 and "E" in tokens[0] and set(tokens[0]) <= set(
                "DEd."
            ):
                names.update(tokens[1].split(","))
        if not names:
            raise PresetError(f"cannot list the muxers of ffmpeg at {ffmpeg} (exit code {code})")
        return frozenset(names)

    return _cached(ffmpeg, "muxers", ask)


def output_extension(template: str) -> str | None:
    """The extension an output template always ends in ("" for none); None when it depends
    on the input (``{stem}.{ext}``, ``{name}``)."""
    body = template[len(REL_DIR_PREFIX) :] if template.startswith(REL_DIR_PREFIX) else template
    rendered, dynamic = [], False
    for literal, field_name, _spec, _conversion in _FORMATTER.parse(body):
        rendered.append(literal)
        if field_name is not None:
            rendered.append("\0")
            dynamic = dynamic or field_name in ("name", "ext")
    text = "".join(rendered)
    if "." not in text:
        return None if dynamic else ""
    ext = text.rsplit(".", 1)[1]
    return None if "\0" in ext else ext


def output_format_option(args: Iterable[str]) -> str | None:
    """The ``-f FORMAT`` given for the output (after the last input, before ``{output}``)."""
    args = list(args)
    if "{output}" not in args:
        return None
    end = args.index("{output}")
    start = max((i + 2 for i in range(end) if args[i] == "-i"), default=0)
    found = None
    for i in range(start, end - 1):
        if args[i] == "-f":
            found = args[i + 1]
    return found


def check_for_save(preset: Preset, ffmpeg: Path | None) -> None:
    """The checks a preset passes before it goes into the database, beyond those of
    :func:`preset_from_table`: no runner-owned option, and an output format ``ffmpeg``
    (the FFmpeg in use here; None: none found) can write."""
    where = f"preset '{preset.name}'"
    for arg in preset.args:
        if arg in SAVE_FORBIDDEN_ARGS:
            raise PresetError(f"{where}: {arg} is not allowed ({SAVE_FORBIDDEN_ARGS[arg]})")
    at = f" at {ffmpeg}" if ffmpeg else ""
    forced = output_format_option(preset.args)
    if forced is not None:
        if "{" in forced:
            return
        if ffmpeg is None:
            if forced not in COMMON_MUXERS.values():
                raise PresetError(
                    f"{where}: cannot tell whether FFmpeg has the '{forced}' muxer: no ffmpeg "
                    "found here (install it or set the ffmpeg path)"
                )
        elif forced not in available_muxers(ffmpeg):
            raise PresetError(f"{where}: FFmpeg{at} has no muxer '{forced}' (-f {forced})")
        return
    ext = output_extension(preset.output)
    if ext is None:
        return  # decided by each input's own extension
    if not ext:
        raise PresetError(
            f"{where}: 'output' {preset.output!r} has no extension, and FFmpeg picks the "
            "output format from it; add one such as .mkv, or give -f FORMAT before {output}"
        )
    if not _EXT_RE.match(ext):
        raise PresetError(f"{where}: '.{ext}' in 'output' is not a file extension")
    if muxer_for_extension(ext, ffmpeg) is None:
        raise PresetError(
            f"{where}: FFmpeg{at} has no muxer for .{ext} files; use another extension or "
            "give -f FORMAT before {output}"
        )


# --------------------------------------------------------------------------- TOML out

_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_string(text: str) -> str:
    # JSON string escapes are TOML basic-string escapes; DEL must be escaped in TOML too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # a ladder's renditions: inline tables
        items = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise PresetError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.match(key) else _toml_string(key)


def _toml_array(key: str, items: list[str], width: int = 96) -> str:
    """``key = ["a", "b", ...]`` wrapped at ``width``, continuation lines aligned."""
    indent = " " * (len(key) + 4)
    lines, line = [], f"{key} = ["
    for i, item in enumerate(items):
        piece = _toml_value(item) + ("," if i < len(items) - 1 else "]")
        if len(line) + len(piece) + 1 > width and not line.endswith("["):
            lines.append(line.rstrip())
            line = indent
        elif not line.endswith("[") and line != indent:
            line += " "
        line += piece
    if not items:
        line += "]"
    lines.append(line)
    return "\n".join(lines)


def dump_presets(
    tables: Mapping[str, Mapping[str, Any]], *, notes: Mapping[str, str] | None = None,
    header: str = "",
) -> str:
    """TOML text with one table per preset (the builtin.toml format); ``notes`` become a
    comment line above each table, ``header`` comment lines at the top."""
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, table in tables.items():
        if out:
            out.append("")
        if notes and notes.get(name):
            out.extend(f"# {line}".rstrip() for line in notes[name].splitlines())
        out.append(f"[{name if _BARE_KEY_RE.match(name) else _toml_string(name)}]")
        for key in ("description", "args", "output", "needs"):
            if key not in table or (key == "needs" and not table[key]):
                continue
            if key == "args":
                out.append(_toml_array("args", list(table["args"])))
            else:
                out.append(f"{key} = {_toml_value(table[key])}")
        for key in sorted(set(table) - {"description", "args", "output", "needs"}):
            value = table[key]
            if isinstance(value, list | tuple) and any(isinstance(v, dict) for v in value):
                # A ladder's renditions: one inline table per line keeps lines short.
                out.append(f"{key} = [")
                out.extend(f"    {_toml_value(v)}," for v in value)
                out.append("]")
            else:
                out.append(f"{key} = {_toml_value(value)}")
    return "\n".join(out) + "\n"
