"""Watchfolder logic without a database: globs, readiness, the scan plan, paths, pinning."""

from __future__ import annotations

import os
import sys

import pytest

from ffdesk.core.roots import RootMap
from ffdesk.db.watch import KnownFile, Watchfolder
from ffdesk.engine.routing import Placement
from ffdesk.engine.watch import (
    Rules,
    WatchError,
    default_name,
    glob_match,
    is_ready,
    join_stored,
    new_watchfolder,
    plan_job,
    plan_scan,
    preset_of,
    rel_under,
    walk,
)
from ffdesk.ffmpeg.presets import load_presets, preset_from_table

K = {"stable_scans": 2, "min_age": 0.0, "requeue_changed": False}


def known(rel, size=100, mtime=5, stable=0, age=0.0, state="pending", qsize=None, qmtime=None):
    return KnownFile(rel, size, mtime, stable, age, state, qsize, qmtime)


# --------------------------------------------------------------------------- globs


@pytest.mark.parametrize(
    ("pattern", "rel", "expected"),
    [
        ("*.mov", "a.mov", True),
        ("*.mov", "sub/deep/a.MOV", True),  # a name pattern matches at any depth, any case
        ("*.mov", "a.mp4", False),
        ("cam*/*.mxf", "cam1/a.mxf", True),
        ("cam*/*.mxf", "other/cam1/a.mxf", False),  # a path pattern is anchored
        ("/cam1/*", "cam1/x/a.mxf", True),  # '*' crosses '/'
        ("**/*.mov", "a.mov", True),  # '**/' may match nothing
        ("**/*.mov", "x/y/a.mov", True),
        ("archive/", "archive/2020/a.mov", True),
        ("archive/", "archived/a.mov", False),
        ("sub\\*.mov", "sub/a.mov", True),  # typed on Windows
    ],
)
def test_glob_match(pattern, rel, expected):
    assert glob_match(pattern, rel) is expected


def test_rules_skip_hidden_temp_and_non_media():
    rules = Rules()
    assert rules.accepts("a.mov")
    assert rules.accepts("sub/a.mkv")
    assert not rules.accepts(".a.mov")  # hidden (our own temp outputs are hidden too)
    assert not rules.accepts(".sync/a.mov")  # in a hidden folder
    assert not rules.accepts("a.mov.part")
    assert not rules.accepts("a.mp4.crdownload")
    assert not rules.accepts("a.tmp")
    assert not rules.accepts("notes.txt")
    assert not rules.accepts(".clip.12-34.part.mp4")


def test_rules_include_exclude_recursive():
    rules = Rules(include=("*.mov", "cams/*"), exclude=("done", "*proxy*"))
    assert rules.accepts("a.mov")
    assert rules.accepts("cams/x/a.mxf")
    assert not rules.accepts("a.mp4")  # matches no include
    assert not rules.accepts("done/a.mov")  # excluded folder name
    assert not rules.accepts("x/done/a.mov")
    assert not rules.accepts("a_proxy.mov")
    assert not rules.enters("done") and not rules.enters("x/done")
    assert rules.enters("x") and not rules.enters(".git")
    flat = Rules(recursive=False)
    assert flat.accepts("a.mov") and not flat.accepts("sub/a.mov") and not flat.enters("sub")


# --------------------------------------------------------------------------- readiness


def test_is_ready_needs_scans_and_age():
    assert not is_ready(1, 100.0, stable_scans=2, min_age=0)
    assert is_ready(2, 0.0, stable_scans=2, min_age=0)
    assert not is_ready(5, 9.9, stable_scans=2, min_age=10)
    assert is_ready(2, 10.0, stable_scans=2, min_age=10)


def test_new_file_then_stable_then_queued():
    plan = plan_scan({"a.mov": (100, 5)}, {}, **K)
    assert [(w.rel, w.state, w.stable_count, w.reset) for w in plan.inserts] == [
        ("a.mov", "pending", 0, True)
    ]
    plan = plan_scan({"a.mov": (100, 5)}, {"a.mov": known("a.mov")}, **K)
    assert [(w.state, w.stable_count, w.queue) for w in plan.updates] == [("pending", 1, False)]
    plan = plan_scan({"a.mov": (100, 5)}, {"a.mov": known("a.mov", stable=1)}, **K)
    assert [(w.state, w.stable_count, w.queue) for w in plan.updates] == [("queued", 2, True)]
    assert [w.rel for w in plan.ready] == ["a.mov"]


def test_growing_file_is_never_ready():
    row = known("a.mov", size=100, stable=1)
    plan = plan_scan({"a.mov": (200, 6)}, {"a.mov": row}, **K)
    (write,) = plan.updates
    assert (write.state, write.stable_count, write.reset, write.queue) == (
        "pending",
        0,
        True,
        False,
    )


def test_min_age_waits_without_writing_every_scan():
    opts = K | {"min_age": 30.0}
    row = known("a.mov", stable=2, age=5.0)
    assert plan_scan({"a.mov": (100, 5)}, {"a.mov": row}, **opts).updates == []
    row = known("a.mov", stable=2, age=31.0)
    assert [w.queue for w in plan_scan({"a.mov": (100, 5)}, {"a.mov": row}, **opts).updates] == [
        True
    ]


def test_queued_file_unchanged_costs_nothing():
    row = known("a.mov", stable=2, state="queued", qsize=100, qmtime=5)
    plan = plan_scan({"a.mov": (100, 5)}, {"a.mov": row}, **K)
    assert (plan.inserts, plan.updates, plan.gone, plan.deletes) == ([], [], [], [])


def test_changed_after_queue_follows_requeue_changed():
    row = known("a.mov", stable=2, state="queued", qsize=100, qmtime=5)
    (write,) = plan_scan({"a.mov": (300, 9)}, {"a.mov": row}, **K).updates
    assert (write.state, write.queue, write.size) == ("queued", False, 300)  # noted, not queued
    (write,) = plan_scan(
        {"a.mov": (300, 9)}, {"a.mov": row}, **K | {"requeue_changed": True}
    ).updates
    assert (write.state, write.queue, write.stable_count) == ("pending", False, 0)
    # pending again, then stable: queued a second time
    row2 = known("a.mov", size=300, mtime=9, stable=1, qsize=100, qmtime=5)
    opts = K | {"requeue_changed": True}
    (write,) = plan_scan({"a.mov": (300, 9)}, {"a.mov": row2}, **opts).updates
    assert write.queue


def test_changed_back_to_the_queued_content_is_not_queued_again():
    row = known("a.mov", size=100, mtime=5, stable=1, qsize=100, qmtime=5)
    (write,) = plan_scan(
        {"a.mov": (100, 5)}, {"a.mov": row}, **K | {"requeue_changed": True}
    ).updates
    assert (write.state, write.queue) == ("queued", False)


def test_vanished_files():
    rows = {
        "new.mov": known("new.mov"),  # never queued: forgotten
        "done.mov": known("done.mov", state="queued", qsize=100, qmtime=5),  # remembered
        "old.mov": known("old.mov", state="gone", qsize=100, qmtime=5),  # stays gone
    }
    plan = plan_scan({}, rows, **K)
    assert plan.deletes == ["new.mov"]
    assert plan.gone == ["done.mov"]
    assert plan.updates == []


def test_unreadable_subfolder_changes_nothing_below_it():
    rows = {
        "cam/a.mov": known("cam/a.mov", state="queued", qsize=100, qmtime=5),
        "b.mov": known("b.mov", state="queued", qsize=100, qmtime=5),
    }
    plan = plan_scan({}, rows, **K, unreadable=["cam"])
    assert plan.gone == ["b.mov"]


@pytest.mark.parametrize(
    ("requeue", "listing", "state", "queue_later"),
    [
        (False, (100, 5), "queued", False),  # back unchanged
        (True, (100, 5), "queued", False),  # back unchanged, even with requeue_changed
        (False, (999, 7), "queued", False),  # new content, requeue off: noted only
        (True, (999, 7), "pending", True),  # new content, requeue on: queued once stable
    ],
)
def test_gone_and_back(requeue, listing, state, queue_later):
    row = known("a.mov", state="gone", qsize=100, qmtime=5)
    opts = K | {"requeue_changed": requeue}
    (write,) = plan_scan({"a.mov": listing}, {"a.mov": row}, **opts).updates
    assert (write.state, write.queue) == (state, False)
    if state == "pending":
        row = known("a.mov", size=listing[0], mtime=listing[1], stable=1, qsize=100, qmtime=5)
        (write,) = plan_scan({"a.mov": listing}, {"a.mov": row}, **opts).updates
        assert write.queue is queue_later


# --------------------------------------------------------------------------- paths


def test_join_and_rel_under_references_and_local_paths():
    assert join_stored("media:incoming", "sub/a.mov") == "media:incoming/sub/a.mov"
    assert join_stored("media:", "a.mov") == "media:a.mov"
    assert join_stored("/w/in", "sub/a.mov") == os.path.join("/w/in", "sub", "a.mov")
    assert rel_under("media:incoming", "media:incoming/sub/a.mp4") == "sub/a.mp4"
    assert rel_under("media:incoming", "media:incoming") == ""
    assert rel_under("media:incoming", "media:incoming2/a.mp4") is None
    assert rel_under("media:incoming", "other:incoming/a.mp4") is None
    assert rel_under("media:", "media:x/a.mp4") == "x/a.mp4"
    assert rel_under("/w/in", "/w/in/out/a.mp4") == "out/a.mp4"
    assert rel_under("/w/in", "/w/input/a.mp4") is None
    assert rel_under("/w/in", "media:in/a.mp4") is None


def test_default_name():
    assert default_name("media:shows/incoming") == "incoming"
    assert default_name("media:") == "media"
    assert default_name("/w/My Drop Box/") == "My-Drop-Box"


# --------------------------------------------------------------------------- add / jobs


@pytest.fixture(scope="module")
def preset():
    return load_presets()["h264-mp4"]


def test_add_under_a_root_is_not_pinned(tmp_path, preset):
    (tmp_path / "media" / "in").mkdir(parents=True)
    place = Placement(RootMap({"media": str(tmp_path / "media")}), node="n1")
    w = new_watchfolder(
        folder=str(tmp_path / "media" / "in"),
        preset=preset,
        placement=place,
        output=str(tmp_path / "media" / "out"),
    )
    assert (w.name, w.folder, w.root, w.output, w.pinned_node) == (
        "in",
        "media:in",
        "media",
        "media:out",
        None,
    )


def test_add_outside_roots_is_pinned(tmp_path, preset):
    (tmp_path / "media").mkdir()
    (tmp_path / "local").mkdir()
    place = Placement(RootMap({"media": str(tmp_path / "media")}), node="n1")
    w = new_watchfolder(folder=str(tmp_path / "local"), preset=preset, placement=place)
    assert (w.folder, w.root, w.pinned_node) == (str(tmp_path / "local"), None, "n1")
    # a root folder with a local output folder: pinned as well (only n1 can write there)
    w = new_watchfolder(
        folder=str(tmp_path / "media"),
        preset=preset,
        placement=place,
        output=str(tmp_path / "local"),
    )
    assert (w.folder, w.root, w.pinned_node) == ("media:", "media", "n1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folder": "/no/such/folder"}, "no such folder"),
        ({"name": "bad name"}, "watchfolder name"),
        ({"interval": 0.01}, "--interval"),
        ({"stable_scans": 0}, "--stable-scans"),
        ({"min_age": -1}, "--min-age"),
        ({"include": [" "]}, "empty"),
    ],
)
def test_add_refuses(tmp_path, preset, kwargs, message):
    args = {"folder": str(tmp_path), "preset": preset, "placement": Placement(node="n1")}
    with pytest.raises(WatchError, match=message):
        new_watchfolder(**(args | kwargs))


def _watchfolder(new, **changes) -> Watchfolder:
    fields = {
        k: getattr(new, k)
        for k in (
            "name",
            "folder",
            "root",
            "output",
            "preset",
            "preset_def",
            "max_attempts",
            "priority",
            "include_globs",
            "exclude_globs",
            "recursive",
            "interval_s",
            "stable_scans",
            "min_age_s",
            "requeue_changed",
            "pinned_node",
        )
    }
    return Watchfolder(**fields | {"enabled": True, "error": None} | changes)


def test_plan_job_references_and_pinning(tmp_path, preset):
    (tmp_path / "media" / "in").mkdir(parents=True)
    roots = RootMap({"media": str(tmp_path / "media")})
    place = Placement(roots, node="n1")
    new = new_watchfolder(folder="media:in", preset=preset, placement=place, output="media:out")
    w = _watchfolder(new)
    job = plan_job(w, preset_of(w), "sub/clip.mov", Placement(roots, node="n2"))
    assert (job.input, job.output) == ("media:in/sub/clip.mov", "media:out/clip-h264.mp4")
    assert (job.in_roots, job.out_roots, job.pinned_node) == (["media"], ["media"], None)
    assert job.meta["watchfolder"] == "in" and job.meta["file"] == "sub/clip.mov"
    # next to the input, and pinned when the folder is a local path
    local = _watchfolder(new, folder="/w/in", root=None, output=None, pinned_node="n1")
    job = plan_job(local, preset_of(local), "sub/clip.mov", Placement(node="n1"))
    assert job.output == os.path.join("/w/in", "sub", "clip-h264.mp4")
    assert job.pinned_node == "n1"


def test_plan_job_refuses_to_overwrite_its_input(tmp_path):
    remux = preset_from_table(
        "remux", {"args": ["-i", "{input}", "-c", "copy", "{output}"], "output": "{name}"}, "test"
    )
    new = new_watchfolder(folder=str(tmp_path), preset=remux, placement=Placement(node="n1"))
    w = _watchfolder(new)
    with pytest.raises(WatchError, match="overwrite its input"):
        plan_job(w, preset_of(w), "clip.mp4", Placement(node="n1"))


# --------------------------------------------------------------------------- walking


def test_walk(tmp_path):
    for rel in (
        "a.mov",
        "sub/b.mkv",
        "sub/.hidden.mov",
        "c.mov.part",
        "notes.txt",
        "out/x.mp4",
        ".git/d.mov",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * len(rel))
    listing = walk(str(tmp_path), Rules(), prune={"out"})
    assert sorted(listing.files) == ["a.mov", "sub/b.mkv"]
    assert listing.files["a.mov"][0] == len("a.mov")
    assert sorted(walk(str(tmp_path), Rules(recursive=False)).files) == ["a.mov"]
    with pytest.raises(OSError):
        walk(str(tmp_path / "missing"), Rules())


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes raw bytes")
def test_walk_skips_names_that_are_not_utf8(tmp_path):
    (tmp_path / "ok.mov").write_bytes(b"x")
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.mov"), "wb") as fh:
        fh.write(b"x")
    listing = walk(str(tmp_path), Rules())
    assert sorted(listing.files) == ["ok.mov"]
    assert listing.bad_names == ["bad\\udcff.mov"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_walk_reports_unreadable_subfolders(tmp_path):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "a.mov").write_bytes(b"x")
    (tmp_path / "locked").chmod(0)
    try:
        assert walk(str(tmp_path), Rules()).unreadable == ["locked"]
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_parse_seconds():
    from ffdesk.cli_watch import parse_seconds
    from ffdesk.core.errors import ConfigError

    assert parse_seconds("0.3", "--interval") == 0.3
    assert parse_seconds("2m", "--interval") == 120
    assert parse_seconds("500ms", "--interval") == 0.5
    with pytest.raises(ConfigError, match="--min-age"):
        parse_seconds("soon", "--min-age")
