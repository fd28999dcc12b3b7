"""The preset library in the database, through the real ``ffdesk presets`` CLI: add, show,
edit (with the optimistic revision check), remove, copy, import / export round trip,
read-only built-ins, clash refusal, and ``submit --preset`` with a library preset."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

from tests.conftest import Cli, Clips, make_clip, query

COPY_MKV = """\
description = "Copy every stream into Matroska"
args = ["-i", "{input}", "-map", "0", "-c", "copy", "{output}"]
output = "{stem}-copy.mkv"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def fails(cli: Cli, *args: str) -> str:
    """Run a command that must fail; its one-line error."""
    proc = cli.run(*args, check=False)
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ffdesk: error: "), proc.stderr
    return lines[0]


def run_stdin(cli: Cli, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli.base(*args), input=text, capture_output=True, text=True, env=cli.env(), timeout=60
    )


def show(cli: Cli, name: str) -> dict:
    return json.loads(cli.run("presets", "show", name, "--json").stdout)


def test_add_show_edit_remove(cli: Cli, tmp_path: Path) -> None:
    out = cli.run("presets", "add", "copy-mkv", "--file", write(tmp_path, "a.toml", COPY_MKV))
    assert out.stdout.startswith("added preset 'copy-mkv' (revision ")
    listed = cli.run("presets").stdout
    assert "copy-mkv" in listed and "[database]" in listed
    data = show(cli, "copy-mkv")
    assert data["source"] == "database" and not data["builtin"]
    assert data["args"] == ["-i", "{input}", "-map", "0", "-c", "copy", "{output}"]
    assert data["output"] == "{stem}-copy.mkv" and "@" in data["created_by"]
    first = data["revision"]
    text = cli.run("presets", "show", "copy-mkv").stdout
    assert "source       database" in text and f"revision     {first}" in text
    entry = next(
        p for p in json.loads(cli.run("presets", "--json").stdout) if p["name"] == "copy-mkv"
    )
    assert entry["source"] == "database" and entry["revision"] == first

    # Edit: full replacement, from a bare table on stdin; the policy keys come along.
    edited = COPY_MKV.replace("copy.mkv", "remux.mkv") + 'on_conflict = "replace"\n'
    proc = run_stdin(cli, edited, "presets", "edit", "copy-mkv", "--file", "-")
    assert proc.returncode == 0, proc.stderr
    data = show(cli, "copy-mkv")
    assert data["output"] == "{stem}-remux.mkv" and data["on_conflict"] == "replace"
    assert data["revision"] > first

    # An export notes the revision; editing from it after someone else saved is refused.
    mine = tmp_path / "mine.toml"
    cli.run("presets", "export", "copy-mkv", "--to", str(mine))
    cli.run("presets", "edit", "copy-mkv", "--file", write(tmp_path, "b.toml", COPY_MKV))
    mine.write_text(mine.read_text().replace("Matroska", "MKV"))
    error = fails(cli, "presets", "edit", "copy-mkv", "--file", str(mine))
    assert "was changed meanwhile" in error and "--force" in error
    error = fails(cli, "presets", "edit", "copy-mkv", "--file", str(mine), "--if-revision", "1")
    assert "was changed meanwhile" in error
    cli.run("presets", "edit", "copy-mkv", "--file", str(mine), "--force")
    assert show(cli, "copy-mkv")["description"] == "Copy every stream into MKV"

    out = cli.run("presets", "remove", "copy-mkv").stdout
    assert "removed preset 'copy-mkv'" in out
    assert "unknown preset 'copy-mkv'" in fails(cli, "presets", "show", "copy-mkv")
    assert "no preset named 'copy-mkv'" in fails(cli, "presets", "remove", "copy-mkv")
    # The changes are in the audit log, with who made them.
    kinds = [
        r[0]
        for r in query(cli.database, "SELECT kind FROM events WHERE job_id IS NULL ORDER BY id")
    ]
    assert kinds == ["preset-saved"] * 4 + ["preset-removed"]


def test_builtins_are_read_only_and_names_never_clash(cli: Cli, tmp_path: Path) -> None:
    good = write(tmp_path, "good.toml", COPY_MKV)
    for action in ("edit", "remove"):
        extra = ("--file", str(good)) if action == "edit" else ()
        error = fails(cli, "presets", action, "h264-mp4", *extra)
        assert "built-in preset: built-ins are read-only" in error
    assert "already a built-in preset" in fails(
        cli, "presets", "add", "h264-mp4", "--file", str(good)
    )
    # Built-ins can be copied, and the copy is editable.
    cli.run("presets", "copy", "h264-mp4", "my-h264")
    copied = show(cli, "my-h264")
    assert copied["source"] == "database"
    assert copied["args"] == show(cli, "h264-mp4")["args"]
    assert "already in the library" in fails(cli, "presets", "copy", "remux-mp4", "my-h264")
    assert "already in the library" in fails(cli, "presets", "add", "my-h264", "--file", str(good))
    assert "already a built-in" in fails(cli, "presets", "copy", "my-h264", "hevc-mp4")
    assert "unknown preset 'nope'" in fails(cli, "presets", "copy", "nope", "x")

    # Validation on save: one line each, nothing saved.
    for body, message in (
        (COPY_MKV.replace("-copy.mkv", ".foo"), "has no muxer for .foo files"),
        (COPY_MKV.replace("-copy.mkv", ""), "has no extension"),
        (COPY_MKV.replace('"{output}"', '"{bogus}", "{output}"'), "unknown placeholder"),
        (COPY_MKV.replace('"-map"', '"-loglevel", "quiet", "-map"'), "-loglevel is not allowed"),
        (COPY_MKV.replace("{stem}-copy", "out/{stem}"), "without folders"),
        (COPY_MKV.replace("{stem}-copy", "{node}"), "known only when a node runs the job"),
    ):
        error = fails(cli, "presets", "add", "bad", "--file", write(tmp_path, "bad.toml", body))
        assert message in error, error
    assert "unknown preset 'bad'" in fails(cli, "presets", "show", "bad")

    # The legacy user file: listed, read-only, and its names are taken too.
    user_file = cli.home / "config" / "presets.toml"
    user_file.parent.mkdir(parents=True, exist_ok=True)
    user_file.write_text("[old-copy]\n" + COPY_MKV, encoding="utf-8")
    listed = cli.run("presets").stdout
    assert "old-copy" in listed and "[user]" in listed, listed
    assert "does not change" in fails(cli, "presets", "remove", "old-copy")
    assert "already defined in" in fails(cli, "presets", "add", "old-copy", "--file", str(good))
    cli.run("presets", "copy", "old-copy", "new-copy")  # the way into the library


def test_import_export_round_trip_all_or_nothing(cli: Cli, tmp_path: Path) -> None:
    library = write(
        tmp_path,
        "library.toml",
        f"""
[copy-mkv]
{COPY_MKV}
["web.small"]
description = "Small H.264 for the web: \\"quoted\\", ünïcødé, back\\\\slash"
args = ["-ss", "2", "-i", "{{input}}", "-vf", "scale=-2:'min(360,ih)'",
        "-metadata", "comment=from {{rel_dir}} on {{node}} ({{meta.show-name}})",
        "-c:v", "libx264", "-c:a", "aac", "{{output}}"]
output = "{{rel_dir}}/{{stem}}-{{year}}{{month}}{{day}}.mp4"
needs = ["video", "audio"]
max_attempts = 5
memory_limit = "1.5G"
stall_timeout = 30
verify = false
""",
    )
    out = cli.run("presets", "import", str(library)).stdout
    assert out.strip() == "imported 2 preset(s): copy-mkv, web.small"
    before = {n: show(cli, n) for n in ("copy-mkv", "web.small")}
    assert before["web.small"]["memory_limit"] == "1.5G"  # stored as written

    exported = tmp_path / "exported.toml"
    cli.run("presets", "export", "--to", str(exported))
    assert set(tomllib.loads(exported.read_text())) == {"copy-mkv", "web.small"}

    def body(text: str) -> list[str]:
        return [line for line in text.splitlines() if "exported" not in line]

    assert body(cli.run("presets", "export").stdout) == body(exported.read_text())
    # Importing again clashes (all or nothing), --replace replaces.
    assert "already in the library" in fails(cli, "presets", "import", str(exported))
    cli.run("presets", "import", str(exported), "--replace")
    for name in before:
        cli.run("presets", "remove", name)
    cli.run("presets", "import", str(exported))
    for name, old in before.items():
        new = show(cli, name)
        for key in ("revision", "created_at", "updated_at"):
            old.pop(key), new.pop(key)
        assert new == old

    # One bad table in a file: nothing of it is imported.
    mixed = write(
        tmp_path,
        "mixed.toml",
        f"[fine]\n{COPY_MKV}\n[broken]\n{COPY_MKV.replace('{output}', 'x.mkv')}",
    )
    error = fails(cli, "presets", "import", str(mixed))
    assert error.startswith("ffdesk: error: nothing imported: preset 'broken'")
    clash = write(tmp_path, "clash.toml", f"[fine]\n{COPY_MKV}\n[h264-mp4]\n{COPY_MKV}")
    assert "nothing imported: h264-mp4 already exists" in fails(
        cli, "presets", "import", str(clash)
    )
    assert "unknown preset 'fine'" in fails(cli, "presets", "show", "fine")
    assert "not valid TOML" in fails(
        cli, "presets", "import", str(write(tmp_path, "x.toml", "[a\n"))
    )
    assert "without a name" in fails(
        cli, "presets", "import", str(write(tmp_path, "y.toml", COPY_MKV))
    )


def test_submit_queues_a_library_preset(cli: Cli, clips: Clips, tmp_path: Path) -> None:
    mirror = COPY_MKV.replace('"{output}"', '"-metadata", "comment={rel_dir}", "{output}"')
    mirror = mirror.replace("{stem}-copy.mkv", "{rel_dir}/{stem}.mkv")
    cli.run("presets", "add", "mirror", "--file", write(tmp_path, "m.toml", mirror))
    folder = tmp_path / "shoot"
    make_clip(folder / "day 1" / "a.mp4", seconds=0.2, audio=False)
    make_clip(folder / "b.mp4", seconds=0.2, audio=False)
    out_dir = tmp_path / "out"
    ids = cli.submit(folder, clips.good, preset="mirror", extra=("--output-dir", str(out_dir)))
    rows = query(cli.database, "SELECT id, preset, preset_args, output, meta FROM jobs ORDER BY id")
    assert [r[0] for r in rows] == ids
    args = show(cli, "mirror")["args"]
    assert {(r[1], json.dumps(r[2])) for r in rows} == {("mirror", json.dumps(args))}
    assert sorted((r[3], r[4]["rel_dir"]) for r in rows) == [
        (str(out_dir / "b.mkv"), ""),
        (str(out_dir / "day 1" / "a.mkv"), "day 1"),  # the folder mirrored below --output-dir
        (str(out_dir / "good.mkv"), ""),  # a file given itself
    ]
    # A preset needing job metadata that a plain submit does not give is refused at submit.
    meta = COPY_MKV.replace('"{output}"', '"-metadata", "title={meta.title}", "{output}"')
    cli.run("presets", "add", "titled", "--file", write(tmp_path, "t.toml", meta))
    error = fails(cli, "submit", "--preset", "titled", str(clips.good))
    assert "uses {meta.title}, but these jobs have no such metadata" in error
    assert "unknown preset 'nope'" in fails(cli, "submit", "--preset", "nope", str(clips.good))
