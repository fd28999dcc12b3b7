"""Which encoders this node can really use: list them, test-encode the hardware ones, cache.

``-encoders`` lists what a build was compiled with, not what the machine can run: on a host
without a GPU every nvenc/qsv/vaapi/amf encoder is listed and every one fails, and a GPU
without an NVENC engine lists ``h264_nvenc`` too (reference/ffmpeg.md section 4). So each
listed hardware encoder gets a one-frame test encode and counts only when that passes;
software encoders need no device and count when listed. Results are cached per build, GPU
driver, render nodes and boot, because a probe costs one process per hardware encoder.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from ffdesk.core.errors import FfmpegNotFound
from ffdesk.ffmpeg.failure import clean_line
from ffdesk.ffmpeg.locate import Identity, child_env, identify, popen_flags

log = logging.getLogger(__name__)

CACHE_FILE = "hwprobe.json"
_CACHE_FORMAT = 1
DEFAULT_TIMEOUT_S = 25.0  # hardware init can be slow on a cold driver; the reference says 20-30

NVIDIA_VERSION_FILE = Path("/sys/module/nvidia/version")
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
RENDER_NODE_GLOB = "/dev/dri/renderD*"

# Device nodes only mean something on Linux/BSD; QSV on Windows goes through D3D11 instead.
_HAS_DEV_NODES = sys.platform not in ("win32", "darwin", "cygwin")

# Hardware encoders reject tiny frames (AMF refuses 256x256 for AV1, Tdarr_Plugins#857).
_SOURCE = ("-f", "lavfi", "-i", "color=c=black:s=512x512:r=30:d=1")

Kind = Literal["V", "A", "S"]


# --- listing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    kind: Kind  # V video, A audio, S subtitle
    description: str
    experimental: bool  # needs -strict experimental to be used at all


# " V....D h264_nvenc           NVIDIA NVENC H.264 encoder (codec h264)". The five flag
# columns are matched loosely so a build adding a flag letter does not hide its encoders.
_ENCODER_LINE = re.compile(r"^ ([VAS])([A-Z.]{5}) +(\S+) +(.*)$")


def parse_encoders(text: str) -> dict[str, EncoderInfo]:
    """Parse ``ffmpeg -hide_banner -encoders`` output; only lines after `` ------`` count
    (the legend above it, `` V..... = Video``, would otherwise parse as an encoder "=")."""
    encoders: dict[str, EncoderInfo] = {}
    started = False
    for line in text.splitlines():
        if not started:
            started = line.strip() == "------"
            continue
        match = _ENCODER_LINE.match(line.rstrip())
        if match:
            kind, flags, name, description = match.groups()
            encoders[name] = EncoderInfo(
                name, cast(Kind, kind), description.strip(), experimental=flags[2] == "X"
            )
    return encoders


def read_encoders(ffmpeg: Path, timeout: float = 30.0) -> dict[str, EncoderInfo]:
    """Every encoder the build lists, with its media kind."""
    try:
        proc = subprocess.run(
            [str(ffmpeg), "-hide_banner", "-nostdin", "-encoders"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=child_env(),
            check=False,
            **popen_flags(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FfmpegNotFound(f"ffmpeg at {ffmpeg} does not run: {exc}") from exc
    encoders = parse_encoders(proc.stdout.decode("utf-8", errors="replace"))
    if proc.returncode != 0 or not encoders:
        raise FfmpegNotFound(f"{ffmpeg} did not list its encoders (exit {proc.returncode})")
    return encoders


def list_encoders(ffmpeg: Path) -> dict[str, str]:
    """Encoder name -> description, as ``ffmpeg -encoders`` lists them (kind: read_encoders)."""
    return {name: info.description for name, info in read_encoders(ffmpeg).items()}


# --- hardware families -----------------------------------------------------------------------


@dataclass(frozen=True)
class HardwareFamily:
    """One hardware API: how to recognise its encoders and how to test-encode with them."""

    name: str
    suffix: str  # encoder names end with it: h264_nvenc, prores_ks_vulkan
    before_input: tuple[str, ...] = ()  # "{render_node}" is replaced by the first render node
    video_filter: str | None = None
    device_glob: str | None = None  # on Linux/BSD, skip the test when nothing matches
    retry_after: float | None = None  # one retry after this many seconds


HARDWARE_FAMILIES: tuple[HardwareFamily, ...] = (
    HardwareFamily("nvenc", "_nvenc"),
    HardwareFamily(
        "qsv",
        "_qsv",
        before_input=("-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"),
        video_filter="format=nv12,hwupload=extra_hw_frames=64",
        device_glob=RENDER_NODE_GLOB,
    ),
    HardwareFamily(
        "vaapi",
        "_vaapi",
        before_input=("-vaapi_device", "{render_node}"),
        video_filter="format=nv12,hwupload",
        device_glob=RENDER_NODE_GLOB,
    ),
    HardwareFamily("videotoolbox", "_videotoolbox"),
    # AMF "reports false at first but then passes" (FileFlows#106), hence the retry.
    HardwareFamily("amf", "_amf", retry_after=2.0),
    # Unlike NVENC, Vulkan encoders take only Vulkan frames: fed plain yuv420p they fail with
    # "Impossible to convert between the formats" on any machine (measured, 9.0.2).
    HardwareFamily(
        "vulkan",
        "_vulkan",
        before_input=("-init_hw_device", "vulkan=hw", "-filter_hw_device", "hw"),
        video_filter="format=nv12,hwupload",
    ),
    # Rockchip boards (ffmpeg-rockchip fork, as Jellyfin ships it); not measured here.
    HardwareFamily("rkmpp", "_rkmpp"),
    HardwareFamily("v4l2m2m", "_v4l2m2m", device_glob="/dev/video*"),
)


def family_of(encoder: str) -> HardwareFamily | None:
    """The hardware API an encoder name belongs to, or None for a software encoder."""
    for family in HARDWARE_FAMILIES:
        if encoder.endswith(family.suffix):
            return family
    return None


def is_hardware(encoder: str) -> bool:
    return family_of(encoder) is not None


# Encoders presets are likely to use. Listed means usable: they need no device, and a shared
# build missing one of their libraries does not start at all.
SOFTWARE_ENCODERS: frozenset[str] = frozenset(
    {
        # video
        "libx264",
        "libx265",
        "libsvtav1",
        "libaom-av1",
        "librav1e",
        "libvvenc",
        "libvpx",
        "libvpx-vp9",
        "mpeg2video",
        "mpeg4",
        "libxvid",
        "prores_ks",
        "prores_aw",
        "dnxhd",
        "ffv1",
        "utvideo",
        "mjpeg",
        "png",
        "gif",
        "libwebp",
        # audio
        "aac",
        "libfdk_aac",
        "libopus",
        "libvorbis",
        "libmp3lame",
        "flac",
        "alac",
        "ac3",
        "eac3",
        "mp2",
        "pcm_s16le",
        "pcm_s24le",
        # subtitles
        "mov_text",
        "srt",
        "subrip",
        "ass",
        "ssa",
        "webvtt",
        "dvdsub",
    }
)


def render_nodes() -> tuple[str, ...]:
    return tuple(sorted(glob.glob(RENDER_NODE_GLOB)))


# --- one test encode -------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderCheck:
    name: str
    ok: bool
    reason: str | None  # why it is not usable; None when ok
    seconds: float


# libva prints its own "libva info: ..." lines whatever -v says, also on success (FileFlows
# whitelists "va_openDriver() returns 0"); they are not errors.
_IGNORED = re.compile(r"^libva info:")
# Follow-up lines every failing encoder prints; the root cause comes before them.
_GENERIC = re.compile(
    r"Error while opening encoder|Error initializing output stream|Could not open encoder"
    r"|Error sending frames to consumers|Task finished with error code"
    r"|Terminating thread with return code|Failed to set value|Error parsing global options"
    r"|Conversion failed!|Nothing was written into output file|Error while filtering"
    r"|Error marking filters as finished|can't configure encoder"
)
# A retry cannot help when the runtime is not installed at all or the test hung.
_NO_RETRY = re.compile(r"failed to open|Unknown encoder|did not finish")


def failure_reason(returncode: int, stderr: str) -> str | None:
    """None if a ``-v error`` test encode passed, else the first meaningful stderr line.

    Non-zero exit **or** any error output is a failure: some encoders print an error and
    still exit 0 (FileFlows treats it the same way).
    """
    lines = [clean_line(raw) for raw in stderr.splitlines() if not _IGNORED.match(raw)]
    lines = [line for line in lines if line]
    if returncode == 0 and not lines:
        return None
    for line in lines:
        if not _GENERIC.search(line):
            return line[:300]
    if lines:
        return lines[0][:300]
    if returncode < 0:
        return f"ffmpeg was killed by signal {-returncode}"
    return f"ffmpeg exited with code {returncode}"


def test_argv(ffmpeg: Path, encoder: str) -> list[str]:
    """argv of the one-frame test encode to the null muxer for a video encoder."""
    family = family_of(encoder)
    nodes = render_nodes()
    # Multi-GPU hosts: the first render node is what ffmpeg itself would default to.
    node = nodes[0] if nodes else "/dev/dri/renderD128"
    before = [a.replace("{render_node}", node) for a in family.before_input] if family else []
    argv = [str(ffmpeg), "-hide_banner", "-nostdin", "-v", "error", *before, *_SOURCE]
    if family and family.video_filter:
        argv += ["-vf", family.video_filter]
    return [*argv, "-frames:v", "1", "-c:v", encoder, "-f", "null", "-"]


def _run_once(argv: list[str], timeout: float) -> str | None:
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=child_env(),
            check=False,
            **popen_flags(),
        )
    except subprocess.TimeoutExpired:
        return f"test encode did not finish within {timeout:g} s"
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc.strerror or exc}"
    return failure_reason(proc.returncode, proc.stderr.decode("utf-8", errors="replace"))


_VULKAN_DEVICE = re.compile(
    r"Device \d+ selected: (?P<name>.+) \((?P<type>integrated|discrete|virtual|software"
    r"|unknown)\) \(0x[0-9a-fA-F]+\)"
)


def _vulkan_software_device(ffmpeg: Path, timeout: float) -> str | None:
    """Name of the Vulkan device ffmpeg picks if it is a CPU implementation, else None.

    Mesa's lavapipe (llvmpipe) is installed with mesa-vulkan-drivers on many GPU-less hosts,
    and prores_ks_vulkan really does encode on it (measured, 9.0.2): a "hardware" encoder
    running on the CPU, slower than prores_ks. The device type shows only at -v verbose.
    """
    argv = [
        str(ffmpeg),
        "-hide_banner",
        "-nostdin",
        "-v",
        "verbose",
        "-init_hw_device",
        "vulkan=hw",
        "-f",
        "lavfi",
        "-i",
        "nullsrc=s=256x256:d=0.04",
        "-frames:v",
        "1",
        "-f",
        "null",
        "-",
    ]
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=child_env(),
            check=False,
            **popen_flags(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None  # the per-encoder tests will say what is wrong
    match = _VULKAN_DEVICE.search(proc.stderr.decode("utf-8", errors="replace"))
    if match and match.group("type") == "software":
        return match.group("name")
    return None


def _precheck(ffmpeg: Path, family: HardwareFamily | None, timeout: float) -> str | None:
    """Reason to fail a whole family without test-encoding, or None to go on and test."""
    if family is None:
        return None
    if family.device_glob and _HAS_DEV_NODES and not glob.glob(family.device_glob):
        return f"no {family.device_glob} device on this host ({family.name} needs one)"
    if family.name == "vulkan":
        device = _vulkan_software_device(ffmpeg, timeout)
        if device:
            return f"the Vulkan device is {device}, a software (CPU) implementation, not a GPU"
    return None


def _test(ffmpeg: Path, encoder: str, timeout: float) -> EncoderCheck:
    start = time.monotonic()
    family = family_of(encoder)
    argv = test_argv(ffmpeg, encoder)
    reason = _run_once(argv, timeout)
    if reason and family and family.retry_after is not None and not _NO_RETRY.search(reason):
        log.debug("%s failed (%s); retrying once in %g s", encoder, reason, family.retry_after)
        time.sleep(family.retry_after)
        reason = _run_once(argv, timeout)
    return EncoderCheck(encoder, reason is None, reason, time.monotonic() - start)


def test_encoder(ffmpeg: Path, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> EncoderCheck:
    """Encode one 512x512 frame with video encoder ``name`` to the null muxer.

    VAAPI/QSV without a render node (and Vulkan on a CPU-only device) fail at once, without
    a process; AMF gets one retry after 2 s unless its runtime library is missing.
    """
    start = time.monotonic()
    skip = _precheck(ffmpeg, family_of(name), timeout)
    if skip is not None:
        return EncoderCheck(name, False, skip, time.monotonic() - start)
    return _test(ffmpeg, name, timeout)


# The name starts with "test_": keep pytest from collecting it where tests import it.
test_encoder.__test__ = False  # type: ignore[attr-defined]
test_argv.__test__ = False  # type: ignore[attr-defined]


# --- report and cache ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeKey:
    """What a probe result depends on; any change means probing again."""

    ffmpeg: str  # Identity.fingerprint: binary and its libraries
    nvidia_driver: str | None
    render_nodes: tuple[str, ...]
    boot_id: str | None  # a reboot may load another driver or lose a GPU

    def to_dict(self) -> dict[str, Any]:
        return {
            "ffmpeg": self.ffmpeg,
            "nvidia_driver": self.nvidia_driver,
            "render_nodes": list(self.render_nodes),
            "boot_id": self.boot_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeKey:
        nodes = data["render_nodes"]
        if not isinstance(data["ffmpeg"], str) or not isinstance(nodes, list):
            raise ValueError("malformed probe key")
        return cls(
            ffmpeg=data["ffmpeg"],
            nvidia_driver=_opt_str(data.get("nvidia_driver")),
            render_nodes=tuple(str(n) for n in nodes),
            boot_id=_opt_str(data.get("boot_id")),
        )


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def current_key(identity: Identity) -> ProbeKey:
    """The key for this host right now (Linux extras are None/empty elsewhere)."""
    return ProbeKey(
        ffmpeg=identity.fingerprint,
        nvidia_driver=_read_text(NVIDIA_VERSION_FILE),
        render_nodes=render_nodes(),
        boot_id=_read_text(BOOT_ID_FILE),
    )


@dataclass(frozen=True)
class ProbeReport:
    working: tuple[str, ...]  # sorted; software encoders of interest + passing hardware ones
    failed: dict[str, str]  # listed hardware encoder (or one marked down) -> reason
    key: ProbeKey
    probed_at: float  # time.time() of the probe itself; mark_failed keeps it
    seconds: float = 0.0  # how long the probe took
    ffmpeg: str = ""  # path probed, for humans reading the cache
    checks: tuple[EncoderCheck, ...] = field(default=(), compare=False)  # this run only

    @property
    def hardware(self) -> tuple[str, ...]:
        """Working hardware encoders only."""
        return tuple(name for name in self.working if is_hardware(name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _CACHE_FORMAT,
            "ffmpeg": self.ffmpeg,
            "key": self.key.to_dict(),
            "probed_at": self.probed_at,
            "seconds": self.seconds,
            "working": list(self.working),
            "failed": dict(sorted(self.failed.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeReport:
        """Raises ValueError/KeyError/TypeError on anything malformed."""
        if data.get("format") != _CACHE_FORMAT:
            raise ValueError(f"unknown hwprobe cache format {data.get('format')!r}")
        working, failed = data["working"], data["failed"]
        if not isinstance(working, list) or not all(isinstance(n, str) for n in working):
            raise ValueError("malformed 'working'")
        if not isinstance(failed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in failed.items()
        ):
            raise ValueError("malformed 'failed'")
        probed_at = data["probed_at"]
        if isinstance(probed_at, bool) or not isinstance(probed_at, int | float):
            raise ValueError("malformed 'probed_at'")
        return cls(
            working=tuple(sorted(working)),
            failed=dict(failed),
            key=ProbeKey.from_dict(data["key"]),
            probed_at=float(probed_at),
            seconds=float(data.get("seconds", 0.0)),
            ffmpeg=str(data.get("ffmpeg", "")),
        )


# Serialises load-modify-write of the cache within this process (probe vs mark_failed from
# job threads); the file itself is replaced atomically, so readers never see half of it.
_cache_lock = threading.Lock()


def load_report(cache_dir: Path) -> ProbeReport | None:
    """The cached report, or None when there is none or it is unreadable."""
    path = cache_dir / CACHE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ProbeReport.from_dict(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring unreadable encoder cache %s: %s", path, exc)
        return None


def save_report(cache_dir: Path, report: ProbeReport) -> None:
    """Write the cache atomically; a failure is logged, never raised (the cache is optional)."""
    path = cache_dir / CACHE_FILE
    tmp: str | None = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{CACHE_FILE}.", suffix=".tmp", dir=cache_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        log.warning("could not write encoder cache %s: %s", path, exc)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _fresh(report: ProbeReport, max_age_hours: float) -> bool:
    age = time.time() - report.probed_at
    # A negative age means the clock went back; the stamp proves nothing then.
    return 0 <= age < max_age_hours * 3600


def _probe(ffmpeg: Path, key: ProbeKey, parallel: int, timeout: float) -> ProbeReport:
    started = time.monotonic()
    probed_at = time.time()
    encoders = read_encoders(ffmpeg)
    hardware = sorted(n for n, info in encoders.items() if info.kind == "V" and is_hardware(n))
    skips: dict[str, str | None] = {}
    checks: list[EncoderCheck] = []
    to_test: list[str] = []
    for name in hardware:
        family = family_of(name)
        assert family is not None
        if family.name not in skips:
            skips[family.name] = _precheck(ffmpeg, family, timeout)
        reason = skips[family.name]
        if reason is not None:
            checks.append(EncoderCheck(name, False, reason, 0.0))
        else:
            to_test.append(name)
    # A few at a time: concurrent sessions on one GPU can fail (GeForce NVENC session cap)
    # and make a usable encoder look broken.
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="hwprobe") as pool:
        checks += pool.map(lambda name: _test(ffmpeg, name, timeout), to_test)
    working = {n for n in SOFTWARE_ENCODERS if n in encoders and not encoders[n].experimental}
    working |= {c.name for c in checks if c.ok}
    failed = {c.name: c.reason or "failed" for c in checks if not c.ok}
    report = ProbeReport(
        working=tuple(sorted(working)),
        failed=failed,
        key=key,
        probed_at=probed_at,
        seconds=time.monotonic() - started,
        ffmpeg=str(ffmpeg),
        checks=tuple(sorted(checks, key=lambda c: c.name)),
    )
    log.info(
        "probed %d hardware encoders of %s in %.2f s (%d tested); working: %s",
        len(hardware),
        ffmpeg,
        report.seconds,
        len(to_test),
        ", ".join(report.hardware) or "none",
    )
    return report


def probe_encoders(
    ffmpeg: Path,
    *,
    identity: Identity | None = None,
    cache_dir: Path | None = None,
    max_age_hours: float = 24.0,
    parallel: int = 2,
    timeout: float = DEFAULT_TIMEOUT_S,
    force: bool = False,
) -> ProbeReport:
    """Usable encoders of ``ffmpeg`` on this host, from ``cache_dir`` when still valid.

    The cache is valid while its key (ffmpeg fingerprint, NVIDIA driver version, render
    nodes, boot id) matches and it is younger than ``max_age_hours``; ``force`` re-probes.
    """
    key = current_key(identity or identify(ffmpeg))
    if cache_dir is not None and not force:
        with _cache_lock:
            cached = load_report(cache_dir)
        if cached is not None and cached.key == key and _fresh(cached, max_age_hours):
            return cached
    report = _probe(ffmpeg, key, parallel, timeout)
    if cache_dir is not None:
        with _cache_lock:
            save_report(cache_dir, report)
    return report


def mark_failed(cache_dir: Path, encoder: str, reason: str) -> ProbeReport | None:
    """Take ``encoder`` out of the cached ``working`` set at once (a job just failed on it
    with a hardware/environment pattern). It comes back only when the next probe, due at
    the usual age or key change, finds it working again. None when there is no cache."""
    with _cache_lock:
        report = load_report(cache_dir)
        if report is None:
            return None
        updated = replace(
            report,
            working=tuple(n for n in report.working if n != encoder),
            failed={**report.failed, encoder: reason},
        )
        save_report(cache_dir, updated)
    log.info("marked encoder %s down: %s", encoder, reason)
    return updated
