"""``ffdesk demo``: prove the whole chain on this machine in a few seconds.

Generates three short clips with FFmpeg's own test sources, queues them with the h264-mp4
preset, runs a node on this machine until the queue is empty and prints what happened.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ffdesk.core.config import Settings
from ffdesk.core.errors import FfdeskError
from ffdesk.core.places import Places
from ffdesk.db import jobs as jobs_sql
from ffdesk.db import migrate
from ffdesk.db.connect import connect_async, database
from ffdesk.engine.loop import run
from ffdesk.engine.node import Node
from ffdesk.engine.submit import SubmitRequest, plan_jobs, submitter
from ffdesk.ffmpeg.locate import child_env, find_ffmpeg, popen_flags
from ffdesk.ffmpeg.presets import get_preset, load_presets

CLIPS = (
    ("demo clip 1.mp4", "testsrc2=size=320x240:rate=25", 440),
    ("demo clip 2 'quoted' $x.mkv", "smptebars=size=320x240:rate=25", 550),
    ("démo clip 3 ünïcode.mov", "rgbtestsrc=size=320x240:rate=25", 660),
)


def make_clips(ffmpeg: Path, folder: Path, seconds: float = 3.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for name, video, tone in CLIPS:
        path = folder / name
        argv = [
            str(ffmpeg),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"{video}:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone}:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(path),
        ]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            check=False,
            **popen_flags(),
        )
        if proc.returncode != 0:
            raise FfdeskError(
                f"could not generate the demo clip {name}: {proc.stderr.strip().splitlines()[-1:]}"
            )
        made.append(path)
    return made


def run_demo(settings: Settings, places: Places, folder: Path) -> int:
    ffmpeg = find_ffmpeg(settings.ffmpeg)
    clips = make_clips(ffmpeg, folder / "input")
    print(f"generated {len(clips)} clips in {folder / 'input'}")
    preset = get_preset(load_presets(), "h264-mp4")
    planned = plan_jobs(SubmitRequest(preset=preset, paths=clips, output_dir=folder / "output"))

    with database(settings, places) as db:

        async def go() -> list:
            conn = await connect_async(db.url)
            try:
                await migrate.migrate(conn)
                ids = await jobs_sql.enqueue(conn, planned, submitted_by=submitter())
                print(f"queued jobs {', '.join(map(str, ids))}; encoding on this machine...")
                node = Node(settings, db.url, exit_when_idle=True)
                await node.run()
                return [await jobs_sql.get_job(conn, i) for i in ids]
            finally:
                await conn.close()

        finished = run(go())
    ok = True
    for job in finished:
        mark = "ok  " if job.state == "succeeded" else "FAIL"
        print(
            f"{mark} #{job.id} {Path(job.input).name} -> {job.output} "
            f"({job.state}{', ' + job.reason if job.reason else ''})"
        )
        ok = ok and job.state == "succeeded"
    return 0 if ok else 1
