"""FFmpeg layer: locate binaries, probe media, presets -> argv, run and supervise ffmpeg.

Modules (import them directly; this package imports nothing so that ``import ffdesk.ffmpeg``
stays cheap and never starts a process):

- ``locate``    find_ffmpeg, find_ffprobe, identify, child_env, popen_flags
- ``probe``     probe, ProbeResult, StreamInfo, ProbeError
- ``progress``  Progress, ProgressParser
- ``presets``   load_presets, get_preset, Preset, PresetError
- ``failure``   explain_failure, classify_failure
- ``runner``    build_argv, FfmpegProcess, RunResult, temp/commit/discard/sweep, verify_output
- ``resources`` resource_path

No Qt, no psycopg here: the engine and the CLI both use this layer.
"""
