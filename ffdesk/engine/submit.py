"""Turn files and folders into jobs: validate, name outputs, enqueue in one transaction."""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from ffdesk.core.errors import FfdeskError
from ffdesk.core.media import expand
from ffdesk.core.model import NewJob
from ffdesk.engine.routing import Placement, routing
from ffdesk.ffmpeg.ladder import MASTER_NAME, TASK_MASTER, rendition_args
from ffdesk.ffmpeg.presets import Preset, rel_dir_for


class SubmitError(FfdeskError):
    """Nothing was queued: the request itself is wrong."""


@dataclass(frozen=True)
class SubmitRequest:
    preset: Preset
    paths: list[Path]
    output_dir: Path | None = None
    priority: int = 0
    max_attempts: int | None = None  # None: the preset's, else 3
    urls: list[str] = field(default_factory=list)  # streamed inputs (http, rtmp, srt, ...)
    # Where the submitting machine's paths sit among the storage roots, and routing asks.
    placement: Placement = field(default_factory=Placement)
    tags: list[str] = field(default_factory=list)
    pin: str | None = None  # run only on this node
    ffmpeg_min: str | None = None
    ffmpeg_max: str | None = None


def submitter() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str) -> bool:
    """``http://...``, ``rtmp://...``: an input FFmpeg opens itself (no local file)."""
    return bool(URL.match(text))


def plan_jobs(request: SubmitRequest) -> list[NewJob]:
    """Validate everything before queuing anything: one bad path queues nothing."""
    if request.urls and request.output_dir is None:
        raise SubmitError("a URL input needs an output folder (--output-dir)")
    missing = [p for p in request.paths if not p.exists()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise SubmitError(f"no such file or folder: {shown}{more}")
    files = [p.absolute() for p in expand(request.paths)] if request.paths else []
    if not files and not request.urls:
        raise SubmitError("no media files found in the given folder(s)")
    if request.output_dir is not None:
        check_output_dir(request.output_dir)
    preset = request.preset
    max_attempts = request.max_attempts or preset.policy.max_attempts or 3
    policy = preset.policy.to_dict()
    jobs = []
    for url in request.urls:
        assert request.output_dir is not None
        name = PurePosixPath(unquote(urlsplit(url).path)).name or "stream"
        output = request.output_dir.absolute() / preset.output_name(Path(name))
        jobs.extend(_jobs_for(request, url, output, max_attempts, policy, "", len(jobs)))
    for src in files:
        if not src.is_file():
            raise SubmitError(f"not a regular file: {src}")
        out_dir = request.output_dir.absolute() if request.output_dir else src.parent
        # {rel_dir}: below its storage root, else below the submitted folder holding it.
        rel_dir = rel_dir_for(src, request.paths, request.placement.store(str(src)))
        output = out_dir / request.preset.output_name(
            src, rel_dir=rel_dir if request.output_dir else ""
        )
        if output == src:
            raise SubmitError(
                f"preset '{request.preset.name}' would overwrite its input {src}; "
                "choose an --output-dir"
            )
        jobs.extend(_jobs_for(request, str(src), output, max_attempts, policy, rel_dir, len(jobs)))
    outputs = [j.output for j in jobs]
    if len(set(outputs)) != len(outputs):
        dup = next(o for o in outputs if outputs.count(o) > 1)
        raise SubmitError(f"two inputs would write the same output {dup}")
    return jobs


def _jobs_for(
    request: SubmitRequest,
    source: str,
    output: Path,
    max_attempts: int,
    policy: dict,
    rel_dir: str,
    first_index: int,
) -> list[NewJob]:
    """One job, or for a ladder preset one job per rendition (``output`` is then a folder)
    plus the master playlist job that runs after all of them."""
    preset = request.preset
    if not preset.is_ladder:
        return [_new_job(request, source, output, max_attempts, policy, rel_dir)]
    jobs = []
    for rendition in preset.renditions:
        job = _new_job(request, source, output / f"{rendition.name}.m3u8", max_attempts,
                       policy, rel_dir)
        args = rendition_args(rendition, preset.segment_seconds)
        jobs.append(dataclasses.replace(
            job, preset_args=args, meta={**job.meta, "rendition": rendition.name}
        ))
    variants = [{"uri": f"{r.name}.m3u8", "bandwidth": r.bandwidth, "rendition": r.name}
                for r in preset.renditions]
    master = _new_job(request, source, output / MASTER_NAME, max_attempts, policy, rel_dir)
    jobs.append(dataclasses.replace(
        master,
        preset_args=[],
        requires=[],  # the node writes it itself: no encoder needed
        meta={"task": TASK_MASTER, "variants": variants},
        after=list(range(first_index, first_index + len(preset.renditions))),
    ))
    return jobs


def _new_job(
    request: SubmitRequest, source: str, output: Path, max_attempts: int, policy: dict,
    rel_dir: str = "",
) -> NewJob:
    stored_input = request.placement.store(source)
    stored_output = request.placement.store(str(output))
    return NewJob(
        input=stored_input,
        output=stored_output,
        preset=request.preset.name,
        preset_args=list(request.preset.args),
        needs=list(request.preset.needs),
        priority=request.priority,
        max_attempts=max_attempts,
        policy=policy,
        meta=request.preset.job_meta(rel_dir=rel_dir),
        **routing(
            request.preset,
            stored_input,
            stored_output,
            request.placement,
            tags=request.tags,
            pin=request.pin,
            ffmpeg_min=request.ffmpeg_min,
            ffmpeg_max=request.ffmpeg_max,
        ),
    )


def check_output_dir(folder: Path) -> None:
    """Refuse an output folder nobody can write to, before queuing (a real write test)."""
    if folder.exists() and not folder.is_dir():
        raise SubmitError(f"output folder is a file: {folder}")
    probe_dir = folder
    while not probe_dir.exists():  # it will be created: the first existing parent must be writable
        probe_dir = probe_dir.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".ffdesk-write-test-"):
            pass
    except OSError as exc:
        raise SubmitError(
            f"output folder is not writable: {folder} ({exc.strerror or exc})"
        ) from None
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise SubmitError(f"output folder is not writable: {folder}")
