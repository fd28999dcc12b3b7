"""Node-local hooks: only what the node's own settings allow runs, from argv, audited."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli, Clips, job_states, query, wait_for

pytestmark = pytest.mark.integration

HOOK_SCRIPT = """
import json, os, sys
sidecar = json.load(open(sys.argv[-1], encoding="utf-8"))
out = os.path.join(os.environ["HOOK_OUT"], f"{sidecar['phase']}-{sidecar['id']}.json")
json.dump({"argv": sys.argv[1:-1], "sidecar": sidecar,
           "env_phase": os.environ["FFDESK_HOOK_PHASE"]}, open(out, "w"))
print(f"{sidecar['phase']} hook saw job {sidecar['id']}")
sys.exit(int(os.environ.get("HOOK_EXIT", "0")))
"""

PRESETS = """
[hooked]
description = "remux with hooks"
args = ["-i", "{input}", "-c", "copy", "{output}"]
output = "{stem}-hooked.mkv"
pre_hook = "record"
post_hook = "record"

[sneaky]
description = "names a hook no node allows"
args = ["-i", "{input}", "-c", "copy", "{output}"]
output = "{stem}-sneaky.mkv"
pre_hook = "rm-everything"
"""


def _setup(cli: Cli, tmp_path: Path) -> Path:
    config = cli.home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "presets.toml").write_text(PRESETS, encoding="utf-8")
    script = tmp_path / "hook script.py"
    script.write_text(HOOK_SCRIPT, encoding="utf-8")
    argv = json.dumps([sys.executable, str(script), "--from", "settings"])
    (config / "settings.toml").write_text(f"hooks = {{ record = {argv} }}\n", encoding="utf-8")
    out = tmp_path / "hook out"
    out.mkdir()
    return out


def test_allowlisted_hooks_run_around_the_job_and_land_in_the_audit_trail(
    cli: Cli, clips: Clips, nodes, tmp_path, monkeypatch
):
    hook_out = _setup(cli, tmp_path)
    monkeypatch.setenv("HOOK_OUT", str(hook_out))
    (job_id,) = cli.submit(clips.weird[1], preset="hooked",
                           extra=("--output-dir", str(tmp_path / "o")))
    env_cli = Cli(cli.home, cli.database)
    env_cli.env = lambda: {**Cli.env(cli), "HOOK_OUT": str(hook_out)}  # type: ignore[method-assign]
    nodes.append(env_cli.start_node("hooker", "--heartbeat", "0.5", slots=1))
    wait_for(lambda: job_states(cli.database) == {job_id: "succeeded"}, 30)
    wait_for(lambda: (hook_out / f"post-{job_id}.json").exists(), 10, message="post hook")
    pre = json.loads((hook_out / f"pre-{job_id}.json").read_text())
    post = json.loads((hook_out / f"post-{job_id}.json").read_text())
    assert pre["argv"] == ["--from", "settings"] and pre["env_phase"] == "pre"
    assert pre["sidecar"]["input_path"] == str(clips.weird[1])  # quotes in the name: no shell
    assert post["sidecar"]["written_path"].endswith("-hooked.mkv")
    (audit,) = query(cli.database, "SELECT hooks FROM attempts WHERE job_id = %s", [job_id])[0]
    assert [(h["phase"], h["name"], h["exit_code"]) for h in audit] == [
        ("pre", "record", 0), ("post", "record", 0)]
    assert audit[0]["output"].strip() == f"pre hook saw job {job_id}"
    kinds = [k for (k,) in query(cli.database, "SELECT kind FROM events WHERE job_id = %s "
                                               "ORDER BY id", [job_id])]
    assert kinds.count("hook") == 2


def test_a_hook_the_node_did_not_allow_is_refused_as_config(cli: Cli, clips: Clips, nodes,
                                                             tmp_path):
    _setup(cli, tmp_path)
    (job_id,) = cli.submit(clips.good, preset="sneaky", extra=("--output-dir", str(tmp_path / "o")))
    nodes.append(cli.start_node("careful", "--heartbeat", "0.5", slots=1))
    wait_for(lambda: job_states(cli.database) == {job_id: "failed"}, 30)
    kind, reason = query(cli.database, "SELECT failure_kind, reason FROM jobs")[0]
    assert kind == "config"
    assert reason == (
        "pre hook 'rm-everything' (named by preset 'sneaky') is not allowed on node careful: "
        "it is not listed under [hooks] in that node's settings"
    )
    assert query(cli.database, "SELECT argv FROM attempts") == [(None,)]  # FFmpeg never ran


def test_a_failing_pre_hook_fails_the_run_before_ffmpeg(cli: Cli, clips: Clips, nodes, tmp_path):
    hook_out = _setup(cli, tmp_path)
    (job_id,) = cli.submit(clips.good, preset="hooked",
                           extra=("--output-dir", str(tmp_path / "o"), "--max-attempts", "1"))
    env_cli = Cli(cli.home, cli.database)
    env_cli.env = lambda: {**Cli.env(cli), "HOOK_OUT": str(hook_out),  # type: ignore[method-assign]
                           "HOOK_EXIT": "3"}
    nodes.append(env_cli.start_node("failing", "--heartbeat", "0.5", slots=1))
    wait_for(lambda: job_states(cli.database) == {job_id: "dead"}, 30)
    kind, reason = query(cli.database, "SELECT failure_kind, reason FROM jobs")[0]
    assert kind == "environment"
    assert reason == f"pre hook 'record' exited with code 3: pre hook saw job {job_id}"
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []
