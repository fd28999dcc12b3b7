"""Presets: named ffmpeg argument templates loaded from TOML, rendered to argv lists."""

from __future__ import annotations

import os
import re
import string
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ffdesk.core.errors import FfdeskError
from ffdesk.core.policy import POLICY_KEYS, PolicyError, RunPolicy
from ffdesk.ffmpeg.resources import resource_path

PLACEHOLDERS = frozenset(
    {"input", "output", "stem", "ext", "name", "dir", "output_dir", "date", "time"}
)
# The output *name* is decided before any path exists, so only name-ish fields make sense.
OUTPUT_NAME_PLACEHOLDERS = frozenset({"stem", "ext", "name", "date", "time"})
STREAM_KINDS = frozenset({"video", "audio"})
# The runner owns these: -n would make FFmpeg >= 7 exit 0 without writing anything,
# -nostdin breaks the "q" graceful stop, and a second -progress steals the progress pipe.
FORBIDDEN_ARGS = frozenset({"-n", "-nostdin", "-progress"})
_KEYS = frozenset({"description", "args", "output", "needs"}) | POLICY_KEYS
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CODEC_OPT_RE = re.compile(r"^-(?:c|codec|vcodec|acodec|scodec)(?::\w+(?::\d+)?)?$")


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

    @property
    def encoders(self) -> tuple[str, ...]:
        """Encoders named by -c:v/-c:a/-vcodec/... ("copy" excluded), in order, no repeats."""
        found: list[str] = []
        for option, value in zip(self.args, self.args[1:], strict=False):
            if _CODEC_OPT_RE.match(option) and value != "copy" and value not in found:
                found.append(value)
        return tuple(found)

    def render(self, *, input: Path | str, output: Path) -> list[str]:
        """The argv after ``ffmpeg``: placeholders filled in, one element per argument.
        A URL ``input`` (a str such as ``http://...``) is passed to FFmpeg verbatim."""
        values = _values(input, output)
        return [_format(arg, values) for arg in self.args]

    def output_name(self, input: Path) -> str:
        """Output file name (no folder) for ``input``, e.g. ``clip-h264.mp4``."""
        return _format(self.output, _values(input, None))


class _Values(dict[str, str]):
    def __missing__(self, key: str) -> str:
        # Validated at load time; reaching this means a caller bypassed load_presets.
        raise PresetError(f"unknown placeholder {{{key}}}")


def _values(input_path: Path | str, output_path: Path | None) -> _Values:
    # Absolute paths: FFmpeg reads "a:b.mp4" as protocol "a" and "-x.mp4" as an option.
    src = Path(os.path.abspath(input_path))
    now = time.localtime()
    values = _Values(
        input=str(src),
        stem=src.stem,
        ext=src.suffix[1:],
        name=src.name,
        dir=str(src.parent),
        date=time.strftime("%Y-%m-%d", now),
        time=time.strftime("%H%M%S", now),
    )
    if isinstance(input_path, str) and _URL_RE.match(input_path):
        values["input"] = input_path  # Path() would fold "//" and make it relative
    if output_path is not None:
        dst = Path(os.path.abspath(output_path))
        values.update(output=str(dst), output_dir=str(dst.parent))
    return values


def _format(template: str, values: Mapping[str, str]) -> str:
    # format_map, not format(**values): values are never re-parsed, so a file called
    # "{stem}.mp4" or "100%.mov" stays literal.
    return template.format_map(values)


def _fields(template: str) -> list[str]:
    """Placeholder names in a template; raises ValueError on unbalanced braces."""
    names = []
    for _literal, field_name, spec, conversion in string.Formatter().parse(template):
        if field_name is None:
            continue
        if spec or conversion or not field_name.isidentifier():
            # "{input!r}", "{date:%Y}", "{input.stem}", "{0}": reject rather than guess.
            whole = field_name + (f"!{conversion}" if conversion else "")
            names.append(whole + (f":{spec}" if spec else ""))
        else:
            names.append(field_name)
    return names


def _check_template(where: str, template: str, allowed: frozenset[str]) -> list[str]:
    try:
        names = _fields(template)
    except ValueError as exc:
        raise PresetError(
            f"{where}: bad braces in {template!r} ({exc}); write {{{{ for {{"
        ) from exc
    for name in names:
        if name not in allowed:
            raise PresetError(f"{where}: unknown placeholder {{{name}}} in {template!r}")
    return names


def _build(name: str, table: object, source: str, builtin: bool) -> Preset:
    where = f"preset '{name}' in {source}"
    if not _NAME_RE.match(name):
        raise PresetError(f"{where}: name must be letters, digits, '.', '_' or '-'")
    if not isinstance(table, dict):
        raise PresetError(f"{where}: must be a table, e.g. [{name}]")
    unknown = set(table) - _KEYS
    if unknown:
        raise PresetError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
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
        for name_ in _check_template(where, arg, PLACEHOLDERS):
            if name_ in counts:
                # Inside a filter string a path would need FFmpeg escaping; whole arguments
                # need none.
                if arg != "{" + name_ + "}":
                    raise PresetError(f"{where}: {{{name_}}} must be a whole argument, not {arg!r}")
                counts[name_] += 1
    for name_, count in counts.items():
        if count != 1:
            raise PresetError(f"{where}: {{{name_}}} must appear exactly once in 'args' ({count})")
    _check_template(f"{where} 'output'", output, OUTPUT_NAME_PLACEHOLDERS)
    if "/" in output or "\\" in output:
        raise PresetError(f"{where}: 'output' must be a file name, without folders")
    try:
        policy = RunPolicy.from_table({k: v for k, v in table.items() if k in POLICY_KEYS}, where)
    except PolicyError as exc:
        raise PresetError(str(exc)) from None
    return Preset(
        name, description, tuple(args), output, tuple(dict.fromkeys(needs)), builtin, policy
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
    return {name: _build(name, table, str(path), builtin) for name, table in data.items()}


def builtin_presets_file() -> Path:
    return resource_path("presets", "builtin.toml")


def load_presets(extra_files: Iterable[Path] = ()) -> dict[str, Preset]:
    """Built-in presets plus those from ``extra_files``; names must be unique across all."""
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
    return presets


def get_preset(presets: Mapping[str, Preset], name: str) -> Preset:
    try:
        return presets[name]
    except KeyError:
        known = ", ".join(sorted(presets)) or "none"
        raise PresetError(f"unknown preset '{name}'; known: {known}") from None
