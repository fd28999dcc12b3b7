"""The CLI as a person uses it: clear output, one-line errors, nothing queued on bad input."""

from __future__ import annotations

import json
import re

import pytest

from ffdesk import __version__
from tests.conftest import Cli, Clips, make_unwritable, query

pytestmark = pytest.mark.integration


def assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert err.count("\n") == 0, f"not one line: {err!r}"
    assert err.startswith("ffdesk") and "error" in err
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in err, err


def queued(cli: Cli) -> int:
    try:
        return query(cli.database, "SELECT count(*) FROM jobs")[0][0]
    except Exception:  # no schema yet: nothing was ever queued
        return 0


def test_version(cli: Cli):
    proc = cli.run("--version", with_db=False)
    assert proc.stdout.strip() == f"ffdesk {__version__}"


def test_presets_lists_the_catalogue(cli: Cli):
    text = cli.run("presets", with_db=False).stdout
    for name in ("h264-mp4", "hevc-mp4", "remux-mp4", "aac-extract", "proxy-720p", "h264-nvenc"):
        assert re.search(rf"^{name}\s+\S", text, re.M), name
    data = json.loads(cli.run("presets", "--json", with_db=False).stdout)
    nvenc = next(p for p in data if p["name"] == "h264-nvenc")
    assert "h264_nvenc" in nvenc["encoders"]


def test_submit_jobs_and_job_json(cli: Cli, clips: Clips, tmp_path):
    ids = cli.submit(
        clips.good,
        clips.folder / "with space.mp4",
        preset="remux-mp4",
        extra=("--priority", "5", "--output-dir", str(tmp_path / "o")),
    )
    assert len(ids) == 2 and ids[0] < ids[1]
    listed = json.loads(cli.run("jobs", "--json").stdout)
    assert [j["id"] for j in listed] == ids
    assert {j["state"] for j in listed} == {"queued"}
    assert {j["priority"] for j in listed} == {5}
    assert listed[1]["output"] == str(tmp_path / "o" / "with space-remux.mp4")
    table = cli.run("jobs").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "STATE", "PROGRESS"]
    assert len(table) == 3
    assert cli.run("jobs", "--state", "succeeded").stdout.strip() == "no jobs"
    detail = cli.run("job", str(ids[0])).stdout
    assert f"Job {ids[0]}: queued" in detail and str(clips.good) in detail


def test_submit_folder_expands_to_media_files(cli: Cli, clips: Clips, tmp_path):
    folder = tmp_path / "shoot"
    (folder / "day 2").mkdir(parents=True)
    (folder / "a.mp4").write_bytes(clips.good.read_bytes())
    (folder / "day 2" / "b.mkv").write_bytes(clips.good.read_bytes())
    (folder / "notes.txt").write_text("not media")
    (folder / ".hidden.mp4").write_bytes(b"x")
    (folder / "c.mp4.part").write_bytes(b"x")
    out = json.loads(cli.run("submit", "--preset", "h264-mp4", "--json", str(folder)).stdout)
    assert [o["input"] for o in out] == [str(folder / "a.mp4"), str(folder / "day 2" / "b.mkv")]
    assert out[1]["output"] == str(folder / "day 2" / "b-h264.mp4")


def test_cancel_and_retry_from_the_cli(cli: Cli, clips: Clips):
    (job_id,) = cli.submit(clips.good)
    assert cli.run("cancel", str(job_id)).stdout.strip() == f"{job_id}: canceled"
    again = cli.run("cancel", str(job_id), check=False)
    assert_one_line_error(again, f"job {job_id} is canceled")
    assert cli.run("retry", str(job_id)).stdout.strip() == f"{job_id}: queued again"
    assert query(cli.database, "SELECT state, attempt FROM jobs") == [("queued", 0)]
    kinds = [r[0] for r in query(cli.database, "SELECT kind FROM events ORDER BY id")]
    # One submit is one batch: canceling its only job finished the batch.
    assert kinds == ["submitted", "canceled", "batch-finished", "retried"]
    missing = cli.run("retry", "999999", check=False)
    assert_one_line_error(missing, "no job with id 999999")


# ------------------------------------------------------------------ bad input: one line each


def test_missing_file(cli: Cli, tmp_path):
    proc = cli.run("submit", "--preset", "h264-mp4", str(tmp_path / "nope.mp4"), check=False)
    assert_one_line_error(proc, "no such file", "nope.mp4")
    assert queued(cli) == 0


def test_one_missing_file_queues_nothing(cli: Cli, clips: Clips, tmp_path):
    proc = cli.run(
        "submit", "--preset", "h264-mp4", str(clips.good), str(tmp_path / "x.mp4"), check=False
    )
    assert_one_line_error(proc, "no such file")
    assert queued(cli) == 0


def test_unknown_preset(cli: Cli, clips: Clips):
    proc = cli.run("submit", "--preset", "h265-turbo", str(clips.good), check=False)
    assert_one_line_error(proc, "unknown preset 'h265-turbo'", "h264-mp4")
    assert queued(cli) == 0


def test_output_folder_not_writable(cli: Cli, clips: Clips, tmp_path):
    locked = tmp_path / "locked"
    undo = make_unwritable(locked)
    try:
        proc = cli.run(
            "submit",
            "--preset",
            "h264-mp4",
            "--output-dir",
            str(locked / "sub"),
            str(clips.good),
            check=False,
        )
    finally:
        undo()
    assert_one_line_error(proc, "not writable", str(locked))
    assert queued(cli) == 0


def test_output_folder_is_a_file(cli: Cli, clips: Clips):
    proc = cli.run(
        "submit",
        "--preset",
        "h264-mp4",
        "--output-dir",
        str(clips.good),
        str(clips.good),
        check=False,
    )
    assert_one_line_error(proc, "is a file")


def test_output_would_overwrite_input(cli: Cli, clips: Clips, tmp_path):
    src = tmp_path / "movie.m4a"
    src.write_bytes(clips.audio_only.read_bytes())
    proc = cli.run("submit", "--preset", "aac-extract", str(src), check=False)
    assert_one_line_error(proc, "overwrite its input")


def test_unknown_command_and_bad_flag_are_one_line(cli: Cli):
    assert_one_line_error(cli.run("frobnicate", check=False, with_db=False), "invalid choice")
    assert_one_line_error(cli.run("jobs", "--state", "sleeping", check=False), "invalid choice")
    assert_one_line_error(cli.run("job", "abc", check=False), "invalid int value")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("postgresql://ffdesk:s3cr3t-pw@127.0.0.1:1/ffdesk", "Connection refused"),
        ("postgresql://ffdesk:s3cr3t-pw@no-such-host.invalid/ffdesk", "no-such-host.invalid"),
        ("not a url at all", "invalid database URL"),
    ],
)
def test_wrong_or_unreachable_database(cli: Cli, url: str, fragment: str):
    bad = Cli(cli.home, url)
    proc = bad.run("jobs", check=False, timeout=60)
    assert_one_line_error(proc, fragment)
    assert "s3cr3t-pw" not in proc.stderr + proc.stdout
    log = cli.home / "log" / "ffdesk.log"
    assert not log.exists() or "s3cr3t-pw" not in log.read_text()


def test_wrong_password_is_refused_without_echoing_it(cli: Cli, pg18):
    url = pg18.server.url(database="postgres")
    wrong = re.sub(r"ffdesk:[^@]*@", "ffdesk:wr0ng-pw@", url)
    proc = Cli(cli.home, wrong).run("jobs", check=False)
    assert_one_line_error(proc, "password authentication failed")
    assert "wr0ng-pw" not in proc.stderr


def test_bad_settings_file_and_env_are_one_line(cli: Cli):
    (cli.home / "config").mkdir(parents=True, exist_ok=True)
    (cli.home / "config" / "settings.toml").write_text("slots = 'many'\n")
    assert_one_line_error(cli.run("jobs", check=False), "'slots'")
    (cli.home / "config" / "settings.toml").write_text("slotz = 2\n")
    assert_one_line_error(cli.run("jobs", check=False), "unknown setting", "slotz")
    (cli.home / "config" / "settings.toml").write_text("[broken\n")
    assert_one_line_error(cli.run("jobs", check=False), "settings file")


def test_unknown_debug_area(cli: Cli):
    assert_one_line_error(cli.run("jobs", "--debug", "quantum", check=False), "quantum")
