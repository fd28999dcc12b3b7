"""Turn an ffmpeg exit code plus stderr into a short human reason and a retry class.

Exit codes carry little: up to FFmpeg 6 nearly every failure is 1, from 7 on it is the
AVERROR's low byte, and 255 means both "got a signal" and EPERM. So stderr text decides and
the exit code is only a hint (reference/ffmpeg.md section 3).
"""

from __future__ import annotations

import re
import signal as _signal
import sys
from dataclasses import dataclass
from typing import Literal

FailureKind = Literal["canceled", "transient", "environment", "config", "input", "unknown"]
"""What to do about a failure: ``transient`` retry later; ``environment`` retry on another
node (this one lacks disk, GPU, codec, permission); ``config`` and ``input`` fail for good."""


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    reason: str
    # For "environment": does it say this node is unwell (disk, permissions, GPU) rather
    # than that this build lacks what one job asks for (an encoder, a filter)? Only the
    # former counts towards quarantining the node; the latter just sends the job elsewhere,
    # so one preset with a typo cannot quarantine a whole cluster.
    node_fault: bool = True


@dataclass(frozen=True)
class _Rule:
    pattern: str  # regex searched in each stderr line, first matching line wins
    template: str  # str.format with {message}, {encoder}, {path} and the pattern's groups
    kind: FailureKind
    unless: str | None = None  # skip lines also matching this (e.g. non-fatal decode errors)
    requires: str | None = None  # only when the whole stderr also matches this
    input_template: str | None = None  # used instead when the line is about an input file
    input_kind: FailureKind | None = None
    fill: str | None = None  # searched in the whole stderr for groups the line left empty
    node_fault: bool = True  # see Failure.node_fault


_HW = "encoder {encoder} cannot run on this node: {message}"

# Ordered by priority: how ffmpeg was stopped, then node problems (hardware, disk,
# permissions, network), then missing components, then bad input, then preset mistakes.
# Priority matters because a failing run often prints several matching lines (nvenc: "Cannot
# load libcuda.so.1" and then "Error while opening encoder"); the root cause must win.
RULES: tuple[_Rule, ...] = (
    _Rule(
        r"Received > 3 system signals",
        "ffmpeg was hard-stopped after repeated signals",
        "transient",
    ),
    _Rule(
        r"Exiting normally, received signal (?P<signum>\d+)",
        "ffmpeg was stopped by signal {signum}",
        "transient",
    ),
    _Rule(r"Cannot load lib(?:cuda|nvidia-encode)", _HW, "environment"),
    _Rule(
        r"Driver does not support the required nvenc API|minimum required Nvidia driver",
        _HW,
        "environment",
    ),
    # GeForce cards cap concurrent NVENC sessions; another node or a later retry may work.
    _Rule(
        r"OpenEncodeSessionEx failed: out of memory",
        "encoder {encoder} has no free GPU session: {message}",
        "transient",
    ),
    _Rule(r"OpenEncodeSessionEx failed|No (?:NVENC )?capable devices found", _HW, "environment"),
    _Rule(
        r"No VA display found|Failed to initialise VAAPI|Device creation failed"
        r"|Error (?:creating|initializing) an? (?:internal )?MFX session"
        r"|hardware device context \(AMF\)|DLL \S+ failed to open",
        _HW,
        "environment",
    ),
    _Rule(r"No space left on device", "disk full: No space left on device", "environment"),
    _Rule(r"Disk quota exceeded", "disk quota exceeded: Disk quota exceeded", "environment"),
    _Rule(
        r"Read-only file system", "output folder is read-only: Read-only file system", "environment"
    ),
    _Rule(
        r"Permission denied",
        "output folder is not writable: Permission denied",
        "environment",
        input_template="input file is not readable: Permission denied",
    ),
    _Rule(
        r"No such file or directory",
        "output folder does not exist: No such file or directory",
        "environment",
        input_template="input file not found: {path}",
        input_kind="input",
    ),
    _Rule(
        r"Cannot allocate memory|malloc of size \d+ failed|\bOut of memory",
        "out of memory: {message}",
        "transient",
    ),
    # HTTP 5xx: ffmpeg's error says only "Server returned 5XX Server Error reply"; the real
    # status is in the warning before it.
    _Rule(
        r"HTTP error (?P<status>5\d\d\b.*)",
        "network error: server replied {status}",
        "transient",
        requires=r"Server returned 5(?:\d\d|XX)",
    ),
    _Rule(
        r"(?P<error>Connection refused|Connection timed out|Connection reset by peer"
        r"|Network is unreachable|No route to host|Temporary failure in name resolution"
        r"|Server returned 5(?:\d\d|XX).*)",
        "network error: {error}",
        "transient",
    ),
    # A missing URL stays missing: retrying will not help (FFmpeg >= 7 exits 8 for it).
    _Rule(
        r"(?P<error>Server returned 404 Not Found)",
        "input not found on the server: {error}",
        "input",
    ),
    _Rule(r"Input/output error|Stale file handle", "I/O error: {message}", "transient"),
    _Rule(
        r"Unknown encoder '(?P<name>[^']*)'",
        "encoder {name} is not available in this ffmpeg build",
        "environment",
        node_fault=False,
    ),
    _Rule(
        r"Unknown decoder '(?P<name>[^']*)'",
        "decoder {name} is not available in this ffmpeg build",
        "environment",
        node_fault=False,
    ),
    _Rule(
        r"No such filter: '(?P<name>[^']*)'",
        "filter {name} is not available in this ffmpeg build",
        "environment",
        node_fault=False,
    ),
    _Rule(
        r"(?:Encoder|Decoder|Filter) not found",
        "this ffmpeg build lacks a component: {message}",
        "environment",
        node_fault=False,
    ),
    # Before the "low score" rule: a .mkv without a Matroska header (text, garbage, damaged
    # start) is also guessed from its extension, and this names the container that failed.
    _Rule(
        r"EBML header parsing failed",
        "input is not a valid Matroska file: EBML header parsing failed",
        "input",
    ),
    # Garbage (or an empty file) makes the demuxer guess from the extension ("low score"),
    # then fail. A real but cut-off mp4 is detected with full confidence and only lacks its
    # moov atom.
    _Rule(
        r"detected only with low score",
        "input is not a media file: Invalid data found when processing input",
        "input",
        requires=r"Invalid data found when processing input|moov atom not found",
    ),
    _Rule(r"moov atom not found", "input is truncated: moov atom not found", "input"),
    _Rule(
        r"Invalid data found when processing input",
        "input is not a media file: Invalid data found when processing input",
        "input",
        unless=r"[Dd]ecoding",
    ),
    _Rule(r"corrupt input packet", "input is corrupt: {message}", "input"),
    _Rule(
        r"Unrecognized option '(?P<name>[^']*)'",
        "unknown ffmpeg option -{name} (check the preset)",
        "config",
    ),
    _Rule(
        r"Error splitting the argument list|Option not found",
        "invalid ffmpeg arguments: {message}",
        "config",
    ),
    _Rule(
        r"Unable to (?:find a suitable|choose an) output format",
        "cannot tell the output format from the file name (use a known extension or -f)",
        "config",
    ),
    _Rule(
        r"Could not find tag for codec|not currently supported in container",
        "a stream's codec cannot be stored in this container: {message}",
        "config",
    ),
    _Rule(r"does not contain any stream", "output would contain no streams: {message}", "config"),
    # FFmpeg >= 7 prints "Stream map '' matches no streams." and names the map only in the
    # next line ("Failed to set value '0:s' for option 'map'").
    _Rule(
        r"Stream map '(?P<spec>[^']*)' matches no streams",
        "the stream selection matches nothing: no stream matches -map {spec}",
        "config",
        fill=r"Failed to set value '(?P<spec>[^']*)' for option 'map'",
    ),
    _Rule(r"matches no streams", "the stream selection matches nothing: {message}", "config"),
    _Rule(r"already exists\. Exiting", "output file already exists", "config"),
    _Rule(
        r"Error setting (?:option|preset)|invalid (?:preset|tune|profile)|out of range",
        "invalid encoder setting: {message}",
        "config",
    ),
    _Rule(
        r"Error while opening encoder|Could not open encoder",
        "encoder {encoder} could not be opened (bad settings or unsupported input)",
        "config",
    ),
)

# FFmpeg >= 7 exits with the AVERROR's low byte (reference/ffmpeg.md 3.2).
_RC_HINTS: dict[int, str] = {
    8: "something was not found (encoder, filter, option, decoder) or an HTTP error",
    69: "too many decoding errors",
    123: "hard exit after repeated signals",
    171: "unknown error",
    183: "invalid data",
    187: "exit or end of file",
    218: "function not implemented",
    228: "no space left on device",
    234: "invalid argument",
    243: "permission denied",
    244: "out of memory",
    251: "I/O error",
    254: "no such file or directory",
    255: "stopped by a signal, or operation not permitted",
}

_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)+")
_X26X = re.compile(r"^(x26[45]) \[\w+\]: ")
_LEVEL = re.compile(r"\[(panic|fatal|error|warning|info|verbose|debug|trace)\] ")
_ENCODER = re.compile(r"\[(?:enc:)?(\w+) @ ")
_MAPPED_ENCODER = re.compile(r"-> #\d+:\d+ \(\S+ \(\S+\) -> \S+ \((\w+)\)\)")
_INPUT_PATH = re.compile(r"Error opening input file (.+)\.$")
_NOISE = re.compile(r"^(?:Conversion failed!|frame=|size=|video:|\s*$)")
_ERRORISH = re.compile(r"error|fail|invalid|cannot|unable|not found|denied|no such", re.I)


def clean_line(line: str) -> str:
    """Strip ``[ctx @ 0x..] [level]`` prefixes so only ffmpeg's own words remain."""
    text = _PREFIX.sub("", line.strip())
    return _X26X.sub(r"\1: ", text).strip()


def _is_input_side(lines: list[str], index: int) -> bool:
    line = lines[index]
    if "Error opening input" in line or "[in#" in line:
        return True
    if "Error opening output" in line or "[out#" in line:
        return False
    # FFmpeg <= 6 prints "PATH: reason" for both sides, but dumps "Input #N" for every input
    # it opened: an error before any dump is about an input, after it about the output.
    return not any(clean_line(prev).startswith("Input #") for prev in lines[:index])


def _encoder_name(line: str, stderr: str) -> str:
    names = _ENCODER.findall(line)
    if names:
        return names[-1]
    mapped = _MAPPED_ENCODER.search(stderr)
    return mapped.group(1) if mapped else "(unknown)"


def _input_path(lines: list[str], index: int) -> str:
    for line in lines[index:]:
        found = _INPUT_PATH.search(clean_line(line))
        if found:
            return found.group(1)
    message = clean_line(lines[index])
    head, sep, _ = message.rpartition(": ")
    return head if sep and "Error" not in head else message


def last_error_line(stderr: str) -> str:
    """The last stderr line that looks like an error, cleaned; '' when there is none."""
    lines = stderr.splitlines()
    has_levels = any(_LEVEL.search(line) for line in lines[:200])
    for line in reversed(lines):
        if has_levels:
            level = _LEVEL.search(line)
            if not level or level.group(1) not in ("panic", "fatal", "error"):
                continue
        text = clean_line(line)
        if _NOISE.match(text) or (not has_levels and not _ERRORISH.search(text)):
            continue
        return text[:300]
    return ""


def _match_rules(stderr: str) -> Failure | None:
    lines = stderr.splitlines()
    for rule in RULES:
        if rule.requires and not re.search(rule.requires, stderr):
            continue
        pattern = re.compile(rule.pattern)
        for index, line in enumerate(lines):
            found = pattern.search(line)
            if not found or (rule.unless and re.search(rule.unless, line)):
                continue
            template, kind = rule.template, rule.kind
            if rule.input_template and _is_input_side(lines, index):
                template, kind = rule.input_template, rule.input_kind or rule.kind
            fields = {
                "message": clean_line(line)[:300],
                "encoder": _encoder_name(line, stderr),
                "path": _input_path(lines, index) if "{path}" in template else "",
                **{k: v for k, v in found.groupdict().items() if v is not None},
            }
            filler = re.search(rule.fill, stderr) if rule.fill else None
            for key, value in filler.groupdict().items() if filler else ():
                if value and not fields.get(key):
                    fields[key] = value
            return Failure(kind, template.format(**fields), node_fault=rule.node_fault)
    return None


def classify_failure(exit_code: int | None, stderr: str, *, canceled: bool = False) -> Failure:
    """Reason and retry class for a finished ffmpeg run (see :func:`explain_failure`)."""
    if canceled:
        return Failure("canceled", "canceled")
    if exit_code is not None and sys.platform == "win32" and exit_code >= 2**31:
        exit_code -= 2**32  # FFmpeg >= 7 on Windows: a negative AVERROR read as unsigned
    elif exit_code is not None and exit_code < 0:
        # Killed by a signal ffdesk did not send: OOM killer, shutdown, a user's kill.
        try:
            name = f" ({_signal.Signals(-exit_code).name})"
        except ValueError:
            name = ""
        return Failure("transient", f"ffmpeg was killed by signal {-exit_code}{name}")
    matched = _match_rules(stderr)
    if matched is not None:
        return matched
    line = last_error_line(stderr)
    if exit_code is None:
        head = "ffmpeg did not report an exit code"
    else:
        head = f"ffmpeg exited with code {exit_code}"
        hint = _RC_HINTS.get(exit_code & 0xFF) if exit_code not in (0, 1) else None
        if hint:
            head += f" ({hint})"
    return Failure("unknown", f"{head}: {line}" if line else head)


def explain_failure(exit_code: int | None, stderr: str, *, canceled: bool = False) -> str:
    """Short human reason why ffmpeg failed: stderr text first, the exit code as a hint.

    Call it for any run that did not produce a verified output, including exit code 0:
    FFmpeg 5.1 exits 0 even when the disk filled up while writing the trailer.
    """
    return classify_failure(exit_code, stderr, canceled=canceled).reason
