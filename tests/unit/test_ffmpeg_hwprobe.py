"""ffdesk.ffmpeg.hwprobe against the real Debian ffmpeg 5.1 and the imageio-ffmpeg 9.0.2 build.

This host has no GPU: both builds list nvenc/qsv/vaapi (9.0.2 also amf/vulkan) and every one
of them must come out as *listed but not working*. Only ``test_mock_gpu_*`` uses a stand-in,
a fake ``ffmpeg`` shell script, because a working GPU encoder cannot exist here.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ffdesk.ffmpeg import hwprobe

DEBIAN_FFMPEG = Path("/usr/bin/ffmpeg")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
BUNDLED_FFMPEG = Path(imageio_ffmpeg.get_ffmpeg_exe())

HAS_GPU = bool(glob.glob("/dev/nvidia[0-9]*") or Path("/sys/module/nvidia").exists())
HAS_RENDER_NODE = bool(glob.glob("/dev/dri/renderD*"))

pytestmark = [
    pytest.mark.skipif(not DEBIAN_FFMPEG.exists(), reason="needs /usr/bin/ffmpeg"),
    pytest.mark.skipif(sys.platform == "win32", reason="real Linux binaries and a sh script"),
]

BINARIES = [
    pytest.param(DEBIAN_FFMPEG, id="debian-5.1"),
    pytest.param(BUNDLED_FFMPEG, id="imageio-9.0.2"),
]
no_gpu = pytest.mark.skipif(HAS_GPU, reason="asserts what a GPU-less host reports")


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every subprocess.run argv from now on (a spy: the real call still happens)."""
    calls: list[list[str]] = []
    real_run = subprocess.run

    def spy(argv, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append([str(a) for a in argv])
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    return calls


def _cache(cache_dir: Path) -> dict:
    return json.loads((cache_dir / hwprobe.CACHE_FILE).read_text())


def _write_cache(cache_dir: Path, data: dict) -> None:
    (cache_dir / hwprobe.CACHE_FILE).write_text(json.dumps(data))


# --- listing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ffmpeg", BINARIES)
def test_list_encoders_with_kinds(ffmpeg: Path) -> None:
    listed = hwprobe.list_encoders(ffmpeg)
    assert listed["h264_nvenc"].startswith("NVIDIA NVENC H.264")
    assert "libx264" in listed and "aac" in listed
    assert "=" not in listed  # the legend above " ------" is not an encoder
    info = hwprobe.read_encoders(ffmpeg)
    assert (info["h264_nvenc"].kind, info["aac"].kind, info["subrip"].kind) == ("V", "A", "S")
    assert info["dca"].experimental and not info["libx264"].experimental
    # 5.1 lists ~225 encoders, 9.0.2 ~235: a parser dropping lines would show here.
    assert len(listed) > 200


def test_parse_encoders_ignores_legend_and_noise() -> None:
    text = textwrap.dedent("""\
        Encoders:
         V..... = Video
         A..... = Audio
         ------
         V....D h264_nvenc           NVIDIA NVENC H.264 encoder (codec h264)
         A..X.D dca                  DCA (DTS Coherent Acoustics) (codec dts)
        some warning a library printed
         S..... srt                  SubRip subtitle (codec subrip)
        """)
    parsed = hwprobe.parse_encoders(text)
    assert list(parsed) == ["h264_nvenc", "dca", "srt"]
    assert parsed["dca"] == hwprobe.EncoderInfo(
        "dca", "A", "DCA (DTS Coherent Acoustics) (codec dts)", experimental=True
    )


# --- listed is not usable --------------------------------------------------------------------


@no_gpu
@pytest.mark.parametrize("ffmpeg", BINARIES)
def test_nvenc_listed_but_not_working(ffmpeg: Path, tmp_path: Path) -> None:
    report = hwprobe.probe_encoders(ffmpeg, cache_dir=tmp_path)
    assert "h264_nvenc" in hwprobe.list_encoders(ffmpeg)
    assert "h264_nvenc" not in report.working
    assert report.failed["h264_nvenc"] == "Cannot load libcuda.so.1"
    assert {"libx264", "aac"} <= set(report.working)
    assert list(report.working) == sorted(report.working)
    # No GPU here: every listed hardware encoder failed, each with a reason.
    assert report.hardware == ()
    listed_hw = {n for n in hwprobe.list_encoders(ffmpeg) if hwprobe.is_hardware(n)}
    assert set(report.failed) == listed_hw
    assert all(report.failed.values())


@no_gpu
@pytest.mark.parametrize("ffmpeg", BINARIES)
def test_test_encoder_reports_the_root_cause(ffmpeg: Path) -> None:
    check = hwprobe.test_encoder(ffmpeg, "h264_nvenc")
    assert not check.ok
    assert check.reason is not None
    assert any(word in check.reason.lower() for word in ("libcuda", "cuda", "nvenc", "device"))
    assert check.seconds < 5  # fails fast: no timeout was needed to get here


@pytest.mark.parametrize("ffmpeg", BINARIES)
def test_test_encoder_passes_a_real_encoder(ffmpeg: Path) -> None:
    """The pass path with a real binary: libx264 needs no device, so its test encode works."""
    check = hwprobe.test_encoder(ffmpeg, "libx264")
    assert check == hwprobe.EncoderCheck("libx264", True, None, check.seconds)


def test_test_argv_per_api(tmp_path: Path) -> None:
    ffmpeg = tmp_path / "ffmpeg"
    nvenc = hwprobe.test_argv(ffmpeg, "h264_nvenc")
    assert nvenc == [
        str(ffmpeg),
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=512x512:r=30:d=1",
        "-frames:v",
        "1",
        "-c:v",
        "h264_nvenc",
        "-f",
        "null",
        "-",
    ]
    qsv = hwprobe.test_argv(ffmpeg, "hevc_qsv")
    assert qsv[5:9] == ["-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"]
    assert qsv[qsv.index("-vf") + 1] == "format=nv12,hwupload=extra_hw_frames=64"
    vaapi = hwprobe.test_argv(ffmpeg, "h264_vaapi")
    assert vaapi[5] == "-vaapi_device" and vaapi[6].startswith("/dev/dri/renderD")
    assert vaapi[vaapi.index("-vf") + 1] == "format=nv12,hwupload"
    assert "-vf" not in hwprobe.test_argv(ffmpeg, "h264_amf")
    assert hwprobe.family_of("prores_ks_vulkan").name == "vulkan"  # type: ignore[union-attr]
    assert hwprobe.family_of("libx264") is None


@pytest.mark.skipif(HAS_RENDER_NODE, reason="asserts the skip taken without /dev/dri")
@pytest.mark.parametrize("encoder", ["h264_vaapi", "h264_qsv"])
def test_vaapi_and_qsv_skip_without_render_node(encoder: str, runs: list[list[str]]) -> None:
    check = hwprobe.test_encoder(DEBIAN_FFMPEG, encoder)
    assert not check.ok and check.reason is not None and "/dev/dri/renderD*" in check.reason
    assert runs == []  # decided without starting ffmpeg


@pytest.mark.parametrize("ffmpeg", BINARIES)
@pytest.mark.skipif(HAS_RENDER_NODE, reason="asserts the raw failure without /dev/dri")
def test_raw_vaapi_and_qsv_failures_are_fast(ffmpeg: Path) -> None:
    """Without the skip, the test encodes fail fast with the reference's messages anyway."""
    for encoder, expected in (
        ("h264_vaapi", "No VA display found for device"),
        ("h264_qsv", "Device creation failed"),
    ):
        started = time.monotonic()
        proc = subprocess.run(
            hwprobe.test_argv(ffmpeg, encoder),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
        )
        reason = hwprobe.failure_reason(proc.returncode, proc.stderr)
        assert proc.returncode != 0 and reason is not None and expected in reason
        assert time.monotonic() - started < 5


@no_gpu
def test_vulkan_on_a_cpu_device_does_not_count() -> None:
    """9.0.2 + Mesa lavapipe: prores_ks_vulkan really encodes, on the CPU. Not a GPU."""
    report = hwprobe.probe_encoders(BUNDLED_FFMPEG)
    vulkan = [n for n in hwprobe.list_encoders(BUNDLED_FFMPEG) if n.endswith("_vulkan")]
    assert vulkan and not set(vulkan) & set(report.working)
    if not glob.glob("/usr/share/vulkan/icd.d/lvp_icd*.json"):
        return  # no lavapipe: the encodes fail on their own
    assert "software (CPU)" in report.failed["prores_ks_vulkan"]
    # Why the precheck exists: the bare test encode passes on lavapipe.
    proc = subprocess.run(
        hwprobe.test_argv(BUNDLED_FFMPEG, "prores_ks_vulkan"),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert hwprobe.failure_reason(proc.returncode, proc.stderr) is None


def test_failure_reason_rules() -> None:
    # Success: rc 0 and nothing at -v error; libva's own info lines do not count.
    assert hwprobe.failure_reason(0, "") is None
    assert (
        hwprobe.failure_reason(
            0, "libva info: VA-API version 1.17.0\nlibva info: va_openDriver() returns 0\n"
        )
        is None
    )
    # rc 0 with error output is a failure (FileFlows' rule).
    assert (
        hwprobe.failure_reason(
            0,
            "[hevc_nvenc @ 0x55d0] OpenEncodeSessionEx failed: unsupported device (2): (no "
            "details)\n",
        )
        == "OpenEncodeSessionEx failed: unsupported device (2): (no details)"
    )
    # 9.0.2 wording: the root cause first, generic follow-ups skipped even if listed first.
    stderr = (
        "[vost#0:0/h264_amf @ 0x1] [enc:h264_amf @ 0x2] Error while opening encoder - maybe "
        "incorrect parameters such as bit_rate, rate, width or height.\n"
        "[AMF @ 0x7f] DLL libamfrt64.so.1 failed to open\n"
        "[vf#0:0 @ 0x3] Task finished with error code: -1313558101 (Unknown error occurred)\n"
    )
    assert hwprobe.failure_reason(171, stderr) == "DLL libamfrt64.so.1 failed to open"
    # Only generic lines: still say something; nothing at all: the exit code.
    assert hwprobe.failure_reason(1, "Conversion failed!\n") == "Conversion failed!"
    assert hwprobe.failure_reason(218, "") == "ffmpeg exited with code 218"
    assert hwprobe.failure_reason(-11, "") == "ffmpeg was killed by signal 11"


# --- timing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ffmpeg", BINARIES)
def test_probe_takes_seconds_at_most(ffmpeg: Path) -> None:
    hwprobe.probe_encoders(ffmpeg)  # warm identify() and the OS file cache
    started = time.monotonic()
    report = hwprobe.probe_encoders(ffmpeg, force=True)
    elapsed = time.monotonic() - started
    print(f"{ffmpeg.name}: {len(report.failed)} hw encoders probed in {elapsed:.2f} s")
    assert elapsed < 5


# --- cache -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ffmpeg", BINARIES)
def test_cache_is_reused(ffmpeg: Path, tmp_path: Path, runs: list[list[str]]) -> None:
    first = hwprobe.probe_encoders(ffmpeg, cache_dir=tmp_path)
    assert runs and _cache(tmp_path)["key"]["ffmpeg"] == first.key.ffmpeg
    runs.clear()
    started = time.monotonic()
    second = hwprobe.probe_encoders(ffmpeg, cache_dir=tmp_path)
    assert time.monotonic() - started < 0.5
    assert runs == []  # no ffmpeg at all: identify() is memoised, the report comes from disk
    assert second == first and second.probed_at == first.probed_at
    assert hwprobe.ProbeReport.from_dict(first.to_dict()) == first


def test_cache_invalidated_by_another_binary(tmp_path: Path, runs: list[list[str]]) -> None:
    debian = hwprobe.probe_encoders(DEBIAN_FFMPEG, cache_dir=tmp_path)
    runs.clear()
    bundled = hwprobe.probe_encoders(BUNDLED_FFMPEG, cache_dir=tmp_path)
    assert any(argv[0] == str(BUNDLED_FFMPEG) for argv in runs)
    assert bundled.key.ffmpeg != debian.key.ffmpeg and bundled.probed_at > debian.probed_at
    assert "av1_nvenc" in bundled.failed and "av1_nvenc" not in debian.failed
    assert _cache(tmp_path)["key"]["ffmpeg"] == bundled.key.ffmpeg


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_text("{not json"), id="not-json"),
        pytest.param(
            lambda path: path.write_text('{"format": 1, "working": "libx264"}'), id="wrong-shape"
        ),
        pytest.param(lambda path: path.write_bytes(b"\xff\xfe\x00garbage"), id="binary"),
        pytest.param(lambda path: path.write_text(""), id="empty"),
    ],
)
def test_corrupt_cache_is_reprobed(
    damage: Callable[[Path], object], tmp_path: Path, runs: list[list[str]]
) -> None:
    first = hwprobe.probe_encoders(DEBIAN_FFMPEG, cache_dir=tmp_path)
    damage(tmp_path / hwprobe.CACHE_FILE)
    runs.clear()
    again = hwprobe.probe_encoders(DEBIAN_FFMPEG, cache_dir=tmp_path)
    assert runs and again.probed_at > first.probed_at
    assert again.working == first.working and again.failed == first.failed
    assert hwprobe.load_report(tmp_path) == again  # rewritten, readable again


@pytest.mark.parametrize(
    ("edit", "kwargs"),
    [
        pytest.param(lambda d: d["key"].update(boot_id="another-boot"), {}, id="rebooted"),
        pytest.param(lambda d: d["key"].update(nvidia_driver="580.95.05"), {}, id="new-driver"),
        pytest.param(
            lambda d: d["key"].update(render_nodes=["/dev/dri/renderD129"]), {}, id="render-nodes"
        ),
        pytest.param(lambda d: d.update(probed_at=time.time() - 25 * 3600), {}, id="too-old"),
        pytest.param(lambda d: d.update(probed_at=time.time() + 3600), {}, id="future-stamp"),
        pytest.param(lambda d: None, {"max_age_hours": 0}, id="max-age-0"),
        pytest.param(lambda d: None, {"force": True}, id="force"),
    ],
)
def test_cache_reprobed_when_stale(
    edit: Callable[[dict], object], kwargs: dict, tmp_path: Path, runs: list[list[str]]
) -> None:
    hwprobe.probe_encoders(DEBIAN_FFMPEG, cache_dir=tmp_path)
    data = _cache(tmp_path)
    edit(data)
    _write_cache(tmp_path, data)
    runs.clear()
    again = hwprobe.probe_encoders(DEBIAN_FFMPEG, cache_dir=tmp_path, **kwargs)
    assert any("-encoders" in argv for argv in runs)
    assert again.key == hwprobe.current_key(hwprobe.identify(DEBIAN_FFMPEG))


def test_unwritable_cache_dir_still_probes(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    report = hwprobe.probe_encoders(DEBIAN_FFMPEG, cache_dir=blocker / "cache")
    assert "libx264" in report.working


@pytest.mark.parametrize("ffmpeg", BINARIES)
def test_mark_failed(ffmpeg: Path, tmp_path: Path, runs: list[list[str]]) -> None:
    assert hwprobe.mark_failed(tmp_path, "libx264", "x") is None  # nothing cached yet
    first = hwprobe.probe_encoders(ffmpeg, cache_dir=tmp_path)
    marked = hwprobe.mark_failed(tmp_path, "libx264", "x264 [error]: malloc of size 1 failed")
    assert marked is not None
    assert "libx264" not in marked.working and "libx264" in first.working
    assert marked.failed["libx264"] == "x264 [error]: malloc of size 1 failed"
    assert marked.probed_at == first.probed_at  # the periodic re-probe stays due as before
    runs.clear()
    cached = hwprobe.probe_encoders(ffmpeg, cache_dir=tmp_path)
    assert runs == [] and cached == marked
    # A forced probe finds it working again.
    assert "libx264" in hwprobe.probe_encoders(ffmpeg, cache_dir=tmp_path, force=True).working


def test_ffmpeg_layer_import_stays_light() -> None:
    code = "import json, sys\nimport ffdesk.ffmpeg.hwprobe\nprint(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
    )
    roots = {name.split(".")[0] for name in loaded}
    assert not roots & {
        "PySide6",
        "PyQt5",
        "PyQt6",
        "shiboken6",
        "qasync",
        "psycopg",
        "psycopg_pool",
        "imageio_ffmpeg",
    }


# --- MOCK: a working GPU encoder --------------------------------------------------------------
# No GPU exists on this host, so a passing hardware test encode cannot happen for real. This
# fake ffmpeg stands in for a GPU machine: it answers -version and -encoders like ffmpeg and
# "encodes" h264_nvenc successfully. Everything else in the probe (argv, parsing, retry,
# parallelism, cache) is the real code.

FAKE_FFMPEG = r"""#!/bin/sh
# FAKE ffmpeg (test mock): pretends to be a build on a machine with working GPU encoders.
here=$(dirname "$0")
case " $* " in
  *" -version "*)
    echo "ffmpeg version 99.0-fake-gpu Copyright (c) 2000-2026 the FFmpeg developers"
    echo "configuration: --enable-nvenc --enable-amf --enable-vaapi"
    exit 0 ;;
  *" -encoders "*)
    cat <<'EOF'
Encoders:
 V..... = Video
 A..... = Audio
 S..... = Subtitle
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D h264_nvenc           NVIDIA NVENC H.264 encoder (codec h264)
 V....D hevc_nvenc           NVIDIA NVENC hevc encoder (codec hevc)
 V....D h264_amf             AMD AMF H.264 Encoder (codec h264)
 V....D av1_amf              AMD AMF AV1 encoder (codec av1)
 V....D h264_vaapi           H.264/AVC (VAAPI) (codec h264)
 A....D aac                  AAC (Advanced Audio Coding)
EOF
    exit 0 ;;
esac
enc=""; prev=""
for arg in "$@"; do [ "$prev" = "-c:v" ] && enc=$arg; prev=$arg; done
echo "start $enc $(date +%s%N) $*" >> "$here/calls.log"
case "$enc" in
  h264_nvenc) sleep 0.3; status=0 ;;
  hevc_nvenc)
    # A GPU without an NVENC engine (H100): error text but, in this fake, exit 0.
    sleep 0.3
    printf '%s%s\n' "[hevc_nvenc @ 0x55d0] OpenEncodeSessionEx failed: " \
      "unsupported device (2): (no details)" >&2
    status=0 ;;
  h264_amf)
    # FileFlows#106: AMF fails the first time, then passes.
    if [ -e "$here/amf-tried" ]; then status=0; else
      : > "$here/amf-tried"
      printf '%s%s\n' "[h264_amf @ 0x1] Failed to create  hardware device context (AMF) : " \
        "Unknown error occurred" >&2
      status=1
    fi ;;
  av1_amf)
    echo "[AMF @ 0x7f] DLL libamfrt64.so.1 failed to open" >&2; status=171 ;;
  *) echo "Unknown encoder '$enc'" >&2; status=8 ;;
esac
echo "end $enc $(date +%s%N)" >> "$here/calls.log"
exit $status
"""


@pytest.fixture
def fake_gpu_ffmpeg(tmp_path: Path) -> Path:
    """MOCK (no GPU here): a fake ffmpeg whose h264_nvenc test encode succeeds."""
    folder = tmp_path / "fake-bin"
    folder.mkdir()
    fake = folder / "ffmpeg"
    fake.write_text(FAKE_FFMPEG)
    fake.chmod(0o755)
    return fake


def _fake_calls(fake: Path) -> list[list[str]]:
    log = fake.parent / "calls.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def test_mock_gpu_passing_test_encode_is_counted(fake_gpu_ffmpeg: Path, tmp_path: Path) -> None:
    report = hwprobe.probe_encoders(fake_gpu_ffmpeg, cache_dir=tmp_path / "cache", parallel=2)
    assert report.hardware == ("h264_amf", "h264_nvenc")
    assert {"libx264", "aac", "h264_nvenc"} <= set(report.working)
    # Error output fails the test even with exit status 0.
    assert report.failed["hevc_nvenc"] == (
        "OpenEncodeSessionEx failed: unsupported device (2): (no details)"
    )
    assert report.failed["av1_amf"] == "DLL libamfrt64.so.1 failed to open"

    calls = _fake_calls(fake_gpu_ffmpeg)
    starts = [c for c in calls if c[0] == "start"]
    tested = [c[1] for c in starts]
    # AMF: retried once after 2 s when the runtime is there, not when its library is missing.
    assert tested.count("h264_amf") == 2 and tested.count("av1_amf") == 1
    amf = next(c for c in report.checks if c.name == "h264_amf")
    assert amf.ok and amf.seconds >= 2
    if not HAS_RENDER_NODE:
        assert "h264_vaapi" not in tested  # skipped without a process
        assert "/dev/dri/renderD*" in report.failed["h264_vaapi"]
    # The reference's NVENC test encode, after -hide_banner -nostdin -v error.
    nvenc = next(c for c in starts if c[1] == "h264_nvenc")[3:]
    assert nvenc == hwprobe.test_argv(fake_gpu_ffmpeg, "h264_nvenc")[1:]

    # Never more than `parallel` test encodes at once.
    events = sorted((int(c[2]), 1 if c[0] == "start" else -1) for c in calls)
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2


def test_mock_gpu_mark_failed_takes_it_down(fake_gpu_ffmpeg: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert "h264_nvenc" in hwprobe.probe_encoders(fake_gpu_ffmpeg, cache_dir=cache).working
    # A job then fails with a hardware pattern (GPU lost after a driver update, say).
    hwprobe.mark_failed(cache, "h264_nvenc", "Cannot load libcuda.so.1")
    log = fake_gpu_ffmpeg.parent / "calls.log"
    before = log.read_text()
    report = hwprobe.probe_encoders(fake_gpu_ffmpeg, cache_dir=cache)
    assert log.read_text() == before  # from the cache, no test encode
    assert "h264_nvenc" not in report.working and report.hardware == ("h264_amf",)
    assert report.failed["h264_nvenc"] == "Cannot load libcuda.so.1"
